//! The channels alerts leave through: `[[notifiers]]` plugins and `[monitor] alert_command`
//! (the event as JSON on its standard input), and which channels serve each escalation level.
//! A delivery is retried with backoff while the channel says "unavailable", within
//! `[alerts] retry_for`; whatever still fails is the caller's to dead-letter.

use super::lifecycle::{Event, EventState, Severity};
use crate::config::{ALERT_COMMAND_CHANNEL, Loaded};
use crate::error::Result;
use crate::plugin::notifier::{self as plugin, NotifyFailure, PluginNotifier};
use crate::plugin::policy;
use std::time::{Duration, Instant};

pub enum Channel {
    Plugin(Box<PluginNotifier>),
    Command(String),
}

impl Channel {
    pub fn name(&self) -> &str {
        match self {
            Channel::Plugin(p) => p.name(),
            Channel::Command(_) => ALERT_COMMAND_CHANNEL,
        }
    }

    async fn send_once(&self, event: &Event) -> std::result::Result<(), NotifyFailure> {
        match self {
            Channel::Plugin(p) => p.notify(&contract_event(event)).await,
            Channel::Command(command) => run_command(command, event).await,
        }
    }

    /// Delivers `event`, retrying "unavailable" with backoff (0.25 s doubling up to 5 s) until
    /// `retry_for` has passed. Returns the attempts made and the last failure.
    pub async fn send(&self, event: &Event, retry_for: Duration) -> (u32, Option<String>) {
        let started = Instant::now();
        let mut pause = Duration::from_millis(250);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.send_once(event).await {
                Ok(()) => return (attempts, None),
                Err(failure) => {
                    let left = retry_for.saturating_sub(started.elapsed());
                    if !failure.retry || left.is_zero() {
                        return (attempts, Some(failure.reason));
                    }
                    tracing::info!(
                        "channel {} could not take {} ({}); retrying in {}ms",
                        self.name(),
                        event.alert,
                        failure.reason,
                        pause.min(left).as_millis()
                    );
                    tokio::time::sleep(pause.min(left)).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// The configured channels and, per level (index 0 = level 1), the channels serving it.
pub struct Channels {
    pub all: Vec<Channel>,
    pub levels: Vec<Vec<usize>>,
}

impl Channels {
    /// Channels of the given levels, each once.
    pub fn for_levels(&self, levels: &[u32]) -> Vec<&Channel> {
        let mut picked: Vec<usize> = Vec::new();
        for level in levels {
            let index = (*level as usize).saturating_sub(1);
            for c in self.levels.get(index).into_iter().flatten() {
                if !picked.contains(c) {
                    picked.push(*c);
                }
            }
        }
        picked.into_iter().map(|i| &self.all[i]).collect()
    }

    pub fn named(&self, name: &str) -> Option<&Channel> {
        self.all.iter().find(|c| c.name() == name)
    }
}

/// Opens every `[[notifiers]]` plugin and the alert command, and maps `[alerts] levels` to them.
pub async fn open(loaded: &Loaded) -> Result<Channels> {
    let config = &loaded.config;
    let mut all: Vec<Channel> = plugin::open_configured(loaded)
        .await?
        .into_iter()
        .map(|p| Channel::Plugin(Box::new(p)))
        .collect();
    if let Some(command) = &config.monitor.alert_command {
        all.push(Channel::Command(command.clone()));
    }
    // Names were checked against the channels when the configuration loaded.
    let levels = if config.alerts.levels.is_empty() {
        vec![(0..all.len()).collect()]
    } else {
        config
            .alerts
            .levels
            .iter()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|name| all.iter().position(|c| c.name() == name))
                    .collect()
            })
            .collect()
    };
    Ok(Channels { all, levels })
}

/// The engine's event in the contract's words.
fn contract_event(event: &Event) -> plugin::Event {
    plugin::Event {
        id: event.id.clone(),
        alert: event.alert.clone(),
        state: match event.state {
            EventState::Firing => plugin::AlertState::Firing,
            EventState::Escalated => plugin::AlertState::Escalated,
            EventState::Resolved => plugin::AlertState::Resolved,
            EventState::Test => plugin::AlertState::Test,
        },
        severity: match event.severity {
            Severity::Info => plugin::Severity::Info,
            Severity::Warning => plugin::Severity::Warning,
            Severity::Error => plugin::Severity::Error,
            Severity::Critical => plugin::Severity::Critical,
        },
        level: event.level,
        database: event.database.clone(),
        target: event.target.clone(),
        backup_id: event.backup_id.clone(),
        message: event.message.clone(),
        action: event.action.clone(),
        fired_at: event.fired_at.to_rfc3339(),
        sent_at: event.sent_at.to_rfc3339(),
        resolved_at: event.resolved_at.map(|t| t.to_rfc3339()),
        details: event
            .details
            .iter()
            .map(|(name, value)| plugin::Detail {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
    }
}

/// The alert command gets the event as one JSON line on stdin (`alert`, `check`, `detail`,
/// `action`, `host` and `at` as before, plus the event's fields) and `$LARDER_ALERT`.
async fn run_command(command: &str, event: &Event) -> std::result::Result<(), NotifyFailure> {
    use tokio::io::AsyncWriteExt;
    let failed = |reason: String| NotifyFailure {
        retry: true,
        reason,
    };
    let mut body = serde_json::to_value(event).unwrap_or_default();
    if let Some(map) = body.as_object_mut() {
        map.insert("detail".into(), event.message.clone().into());
        map.insert("at".into(), event.sent_at.to_rfc3339().into());
        if let Some(host) = event.details.get("host") {
            map.insert("host".into(), host.clone().into());
        }
    }
    let run = async {
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", command])
            .stdin(std::process::Stdio::piped())
            .env("LARDER_ALERT", &event.alert)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failed(format!("starting the alert command `{command}`: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(format!("{body}\n").as_bytes())
                .await
                .map_err(|e| failed(format!("writing the alert to `{command}`: {e}")))?;
        }
        let status = child
            .wait()
            .await
            .map_err(|e| failed(format!("waiting for `{command}`: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(failed(format!(
                "the alert command `{command}` failed ({status})"
            )))
        }
    };
    tokio::time::timeout(policy::DEFAULT_CALL_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| {
            Err(NotifyFailure {
                retry: false,
                reason: format!(
                    "the alert command `{command}` did not finish within {}s",
                    policy::DEFAULT_CALL_TIMEOUT.as_secs()
                ),
            })
        })
}
