//! `pagerduty-notifier`: PagerDuty Events API v2. Firing, escalated and test events trigger an
//! incident, resolved events resolve it; the `dedup_key` is the event's id, so reminders and
//! escalations update one incident and the resolve closes it.
//!
//! Configuration: secret `routing_key` (the integration key, required), `config.url` (default
//! `https://events.pagerduty.com/v2/enqueue`), `config.source` (default: the database).

use notifier_kit::{AlertState, Error, Event, Guest, PluginInfo, Severity, host};
use serde_json::json;

const EVENTS_API: &str = "https://events.pagerduty.com/v2/enqueue";

struct PagerDuty;

/// PagerDuty's severities are critical, error, warning and info.
fn severity(severity: Severity) -> &'static str {
    notifier_kit::severity_word(severity)
}

fn body(event: &Event, routing_key: &str) -> serde_json::Value {
    let action = match event.state {
        AlertState::Resolved => "resolve",
        AlertState::Firing | AlertState::Escalated | AlertState::Test => "trigger",
    };
    let mut details = notifier_kit::event_json(event);
    if let Some(map) = details.as_object_mut() {
        map.remove("details");
        for d in &event.details {
            map.insert(d.name.clone(), serde_json::Value::String(d.value.clone()));
        }
    }
    json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": event.id,
        "payload": {
            "summary": format!("{}: {}", notifier_kit::summary(event), event.message.lines().next().unwrap_or_default()),
            "source": host::config("source").unwrap_or_else(|| event.database.clone()),
            "severity": severity(event.severity),
            "timestamp": event.fired_at,
            "component": event.target.clone().unwrap_or_else(|| "database".into()),
            "group": "larder",
            "class": event.alert,
            "custom_details": details,
        },
    })
}

impl Guest for PagerDuty {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "pagerduty-notifier".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: vec!["http".into(), "events-api-v2".into()],
        }
    }

    fn notify(event: Event) -> Result<(), Error> {
        let key = host::secret("routing_key")
            .ok_or_else(|| Error::Invalid("secret `routing_key` is required".into()))?;
        let url = host::config("url").unwrap_or_else(|| EVENTS_API.to_string());
        let body = body(&event, &key).to_string().into_bytes();
        let headers = vec![("content-type".to_string(), "application/json".to_string())];
        notifier_kit::post(&url, headers, &body)
    }
}

notifier_kit::export!(PagerDuty);
