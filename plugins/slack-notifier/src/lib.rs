//! `slack-notifier`: posts each alert to a Slack incoming webhook as a message with blocks (the
//! alert and its state, database, target, backup, what happened and the runbook's action).
//!
//! Configuration: `config.url` (the incoming-webhook URL, required; or secret `webhook_url`,
//! which wins, since the URL itself is a credential).

use notifier_kit::{AlertState, Error, Event, Guest, PluginInfo, host};
use serde_json::json;

struct Slack;

fn icon(state: AlertState) -> &'static str {
    match state {
        AlertState::Firing => ":rotating_light:",
        AlertState::Escalated => ":sos:",
        AlertState::Resolved => ":white_check_mark:",
        AlertState::Test => ":test_tube:",
    }
}

/// The Slack message: a header, the facts as fields, the message and the action.
fn message(event: &Event) -> serde_json::Value {
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let fields = [
        ("Alert", event.alert.clone()),
        ("Database", event.database.clone()),
        ("Target", or_none(&event.target)),
        ("Backup", or_none(&event.backup_id)),
        (
            "State",
            format!(
                "{} (level {})",
                notifier_kit::state_word(event.state),
                event.level
            ),
        ),
        (
            "Severity",
            notifier_kit::severity_word(event.severity).into(),
        ),
    ]
    .map(|(name, value)| json!({"type": "mrkdwn", "text": format!("*{name}*\n{value}")}));
    let summary = format!("{} {}", icon(event.state), notifier_kit::summary(event));
    json!({
        "text": summary,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": summary}},
            {"type": "section", "fields": fields},
            {"type": "section", "text": {"type": "mrkdwn", "text": event.message}},
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("*Action:* {}", event.action)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": format!("fired {} · event {}", event.fired_at, event.id)}]},
        ],
    })
}

impl Guest for Slack {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "slack-notifier".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: vec!["http".into()],
        }
    }

    fn notify(event: Event) -> Result<(), Error> {
        let url = match host::secret("webhook_url") {
            Some(url) => url,
            None => notifier_kit::required_config("url")?,
        };
        let body = message(&event).to_string().into_bytes();
        let headers = vec![("content-type".to_string(), "application/json".to_string())];
        notifier_kit::post(&url, headers, &body)
    }
}

notifier_kit::export!(Slack);
