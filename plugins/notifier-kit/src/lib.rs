//! Larder notifier plugins (guest side): the `notifier` world's bindings generated once
//! (`pub_export_macro`), the event in words and as JSON, and a JSON POST whose failures map onto
//! the contract's error kinds (a receiver that is down or answers 5xx/429 is `unavailable`).
//!
//! A notifier crate implements [`Guest`] and calls `notifier_kit::export!(MyNotifier);`.

pub use exports::larder::plugin::notification::{AlertState, Event, Guest};
pub use larder::plugin::host::{self, Level};
pub use larder::plugin::types::{Detail, Error, PluginInfo, Severity};

wit_bindgen::generate!({
    path: "../../wit/v1.1",
    world: "larder:plugin/notifier@1.1.0",
    pub_export_macro: true,
    default_bindings_module: "notifier_kit",
});

/// The state as the JSON payloads spell it.
pub fn state_word(state: AlertState) -> &'static str {
    match state {
        AlertState::Firing => "firing",
        AlertState::Escalated => "escalated",
        AlertState::Resolved => "resolved",
        AlertState::Test => "test",
    }
}

pub fn severity_word(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Error => "error",
        Severity::Critical => "critical",
    }
}

/// A one-line summary: `[FIRING] Backup Failure on kitchen_pantry (level 1)`.
pub fn summary(event: &Event) -> String {
    format!(
        "[{}] {} on {} (level {})",
        state_word(event.state).to_ascii_uppercase(),
        event.alert,
        event.database,
        event.level
    )
}

/// The whole event as a JSON object (the webhook body; other notifiers put it in their details).
pub fn event_json(event: &Event) -> serde_json::Value {
    let details: serde_json::Map<String, serde_json::Value> = event
        .details
        .iter()
        .map(|d| (d.name.clone(), serde_json::Value::String(d.value.clone())))
        .collect();
    serde_json::json!({
        "id": event.id,
        "alert": event.alert,
        "state": state_word(event.state),
        "severity": severity_word(event.severity),
        "level": event.level,
        "database": event.database,
        "target": event.target,
        "backup_id": event.backup_id,
        "message": event.message,
        "action": event.action,
        "fired_at": event.fired_at,
        "sent_at": event.sent_at,
        "resolved_at": event.resolved_at,
        "details": details,
    })
}

/// A required `config` value, or `invalid` naming it.
pub fn required_config(key: &str) -> Result<String, Error> {
    host::config(key)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| Error::Invalid(format!("config value `{key}` is required")))
}

/// POSTs `body` to `url` with `headers`; the receiver's status maps onto the error kinds:
/// 2xx is delivered, 408/429/5xx `unavailable` (retried), 401/403 `denied`, other 4xx `invalid`.
pub fn post(url: &str, headers: Vec<(String, String)>, body: &[u8]) -> Result<(), Error> {
    let (endpoint, path) = http_send::Endpoint::parse_url(url).map_err(contract_error)?;
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path.to_string(), query.to_string()),
        None => (path, String::new()),
    };
    let response =
        http_send::send(&endpoint, "POST", &path, &query, headers, body).map_err(contract_error)?;
    let said = || {
        let text = String::from_utf8_lossy(&response.body);
        let text: String = text.chars().take(300).collect();
        format!("POST {path}: HTTP {} {}", response.status, text.trim())
    };
    match response.status {
        200..=299 => Ok(()),
        401 | 403 => Err(Error::Denied(said())),
        408 | 429 | 500..=599 => Err(Error::Unavailable(said())),
        _ => Err(Error::Invalid(said())),
    }
}

/// An HTTP exchange's failure in this world's error type (the kinds are the same).
fn contract_error(e: http_send::Error) -> Error {
    match e {
        http_send::Error::Denied(m) => Error::Denied(m),
        http_send::Error::Unavailable(m) => Error::Unavailable(m),
        http_send::Error::Invalid(m) => Error::Invalid(m),
        http_send::Error::Other(m) => Error::Other(m),
    }
}

/// Custom headers from the `headers` config value: a JSON object of names to values.
pub fn configured_headers() -> Result<Vec<(String, String)>, Error> {
    let Some(text) = host::config("headers") else {
        return Ok(Vec::new());
    };
    let parsed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| {
            Error::Invalid(format!(
                "config value `headers` must be a JSON object of header names to values: {e}"
            ))
        })?;
    parsed
        .into_iter()
        .map(|(name, value)| match value {
            serde_json::Value::String(v) => Ok((name, v)),
            other => Err(Error::Invalid(format!(
                "config value `headers`: the value of {name} must be a string, not {other}"
            ))),
        })
        .collect()
}
