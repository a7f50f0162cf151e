//! `webhook-notifier`: POSTs each alert event as JSON to a URL, signed with HMAC-SHA256 when the
//! operator grants a key, with any custom headers.
//!
//! Configuration: `config.url` (required), `config.headers` (a JSON object of extra headers),
//! `config.signature_header` (default `X-Larder-Signature`); secret `hmac_key` (optional). The
//! signature is `sha256=<hex of HMAC-SHA256(key, body)>`; receivers recompute it over the raw
//! body. `X-Larder-Event-Id` carries the event's id for de-duplication.

use hmac::{Hmac, Mac};
use notifier_kit::{Error, Event, Guest, PluginInfo, host};
use sha2::Sha256;

struct Webhook;

/// `sha256=<hex>` of the body under `key`.
fn signature(key: &[u8], body: &[u8]) -> Result<String, Error> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .map_err(|e| Error::Invalid(format!("secret `hmac_key` is unusable: {e}")))?;
    mac.update(body);
    Ok(format!(
        "sha256={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

impl Guest for Webhook {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "webhook-notifier".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: vec!["http".into(), "hmac-sha256".into()],
        }
    }

    fn notify(event: Event) -> Result<(), Error> {
        let url = notifier_kit::required_config("url")?;
        let body = notifier_kit::event_json(&event).to_string().into_bytes();
        let mut headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("x-larder-event-id".to_string(), event.id.clone()),
        ];
        if let Some(key) = host::secret("hmac_key") {
            let name = host::config("signature_header")
                .unwrap_or_else(|| "X-Larder-Signature".to_string());
            headers.push((name, signature(key.as_bytes(), &body)?));
        }
        headers.extend(notifier_kit::configured_headers()?);
        notifier_kit::post(&url, headers, &body)
    }
}

notifier_kit::export!(Webhook);
