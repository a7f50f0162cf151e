//! A notification channel served by a WebAssembly plugin (world `notifier`).
//!
//! Every delivery gets a fresh instance (alerts are rare; a plugin that trapped or hung cannot
//! spoil the next one) under the same sandbox as storage plugins. A failure says whether it is
//! worth retrying: only the plugin's own `unavailable` is; a trap, a missed deadline or a refusal
//! is not, and the alert room keeps such events in its dead-letter list instead.

use super::bindings::larder::plugin::types::Error as PluginError;
pub use super::bindings::larder::plugin::types::{Detail, PluginInfo, Severity};
use super::bindings::notifier::NotifierPre;
pub use super::bindings::notifier::exports::larder::plugin::notification::{AlertState, Event};
use super::policy::{self, Grants};
use super::state::PluginState;
use super::{Loaded, Runtime, sandbox};
use crate::error::Result;
use std::sync::Arc;

pub struct PluginNotifier {
    name: String,
    plugin: Arc<str>,
    /// The file, for `plugin list`.
    file: super::PluginFile,
    pre: NotifierPre<PluginState>,
    grants: Arc<Grants>,
    info: PluginInfo,
}

/// Why a delivery failed, and whether trying again soon may help.
#[derive(Debug, Clone)]
pub struct NotifyFailure {
    pub retry: bool,
    pub reason: String,
}

impl PluginNotifier {
    /// Instantiates the plugin once, to check it links as a notifier and to call `describe`.
    pub async fn new(
        runtime: &Runtime,
        name: &str,
        loaded: &Loaded,
        grants: Grants,
    ) -> Result<PluginNotifier> {
        let plugin = sandbox::label(name, loaded);
        let pre = runtime.prepare(
            loaded,
            &plugin,
            "a notifier plugin (larder:plugin/notification@1.x)",
            NotifierPre::new,
        )?;
        let mut notifier = PluginNotifier {
            name: name.to_string(),
            plugin,
            file: loaded.file(false),
            pre,
            grants: Arc::new(grants),
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                capabilities: Vec::new(),
            },
        };
        let info = notifier
            .call("describe", |bindings, store| {
                Box::pin(async move {
                    bindings
                        .larder_plugin_notification()
                        .call_describe(store)
                        .await
                })
            })
            .await?;
        notifier.info = sandbox::checked_info(&notifier.plugin, info)?;
        Ok(notifier)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    /// The notifier as `plugin list` shows it.
    pub fn summary(&self) -> super::PluginSummary {
        super::PluginSummary::new(
            &self.name,
            &self.file,
            "larder:plugin/notifier@1.1.0",
            &self.info,
            &self.grants,
        )
    }

    /// Delivers one event.
    pub async fn notify(&self, event: &Event) -> std::result::Result<(), NotifyFailure> {
        let event = event.clone();
        let answer = self
            .call("notify", move |bindings, store| {
                Box::pin(async move {
                    bindings
                        .larder_plugin_notification()
                        .call_notify(store, &event)
                        .await
                })
            })
            .await
            .map_err(|e| NotifyFailure {
                retry: false,
                reason: e.to_string(),
            })?;
        answer.map_err(|e| {
            let said = |kind: &str, m: String| {
                format!(
                    "plugin {} refused `notify` ({kind}): {}",
                    self.plugin,
                    policy::bounded_text(m)
                )
            };
            match e {
                PluginError::Unavailable(m) => NotifyFailure {
                    retry: true,
                    reason: said("unavailable", m),
                },
                PluginError::NotFound => NotifyFailure {
                    retry: false,
                    reason: said("not-found", "the receiver does not exist".into()),
                },
                PluginError::Denied(m) => NotifyFailure {
                    retry: false,
                    reason: said("denied", m),
                },
                PluginError::Invalid(m) => NotifyFailure {
                    retry: false,
                    reason: said("invalid", m),
                },
                PluginError::Other(m) => NotifyFailure {
                    retry: false,
                    reason: said("error", m),
                },
            }
        })
    }

    /// One call on a fresh instance, under the epoch deadline and a host-side timeout (which
    /// also stops a guest blocked in a host call, such as a connection that never answers).
    async fn call<T, F>(&self, call: &str, f: F) -> Result<T>
    where
        F: for<'a> FnOnce(
            &'a super::bindings::notifier::Notifier,
            &'a mut wasmtime::Store<PluginState>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = wasmtime::Result<T>> + Send + 'a>,
        >,
    {
        let work = async {
            let mut store = sandbox::new_store(self.pre.engine(), &self.plugin, &self.grants)?;
            let bindings =
                self.pre.instantiate_async(&mut store).await.map_err(|e| {
                    sandbox::trap_error(&self.plugin, &self.grants, "instantiate", e)
                })?;
            f(&bindings, &mut store)
                .await
                .map_err(|e| sandbox::trap_error(&self.plugin, &self.grants, call, e))
        };
        let grace = policy::EPOCH_TICK * 4;
        let outcome = tokio::time::timeout(self.grants.call_timeout + grace, work).await;
        super::calls::record(
            &self.plugin,
            call,
            match &outcome {
                Ok(Ok(_)) => super::calls::Result::Ok,
                Ok(Err(_)) => super::calls::Result::Trap,
                Err(_) => super::calls::Result::Timeout,
            },
        );
        outcome.unwrap_or_else(|_| Err(sandbox::deadline_error(&self.plugin, &self.grants, call)))
    }
}

/// Every `[[notifiers]]` entry loaded (pins checked) and instantiated once, in order.
pub async fn open_configured(loaded: &crate::config::Loaded) -> Result<Vec<PluginNotifier>> {
    let entries = &loaded.config.notifiers;
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let runtime = Runtime::new(loaded.plugin_cache_dir())?;
    let mut out = Vec::new();
    for entry in entries {
        let owner = format!("notifier '{}'", entry.name);
        let (_, plugin) = super::entry::load_pinned(
            &runtime,
            loaded,
            &owner,
            &entry.path,
            entry.sha256.as_deref(),
        )?;
        let grants = Grants {
            allow_tcp: entry.allow_tcp.clone(),
            ..super::entry::plugin_grants(
                &owner,
                &super::entry::GrantEntry {
                    config: &entry.config,
                    secrets: &entry.secrets,
                    allow_hosts: &entry.allow_hosts,
                    allow_private: entry.allow_private,
                    memory: entry.memory.as_deref(),
                    timeout: entry.timeout,
                },
            )?
        };
        let mut notifier = PluginNotifier::new(&runtime, &entry.name, &plugin, grants).await?;
        notifier.file.pinned = entry.sha256.is_some();
        out.push(notifier);
    }
    Ok(out)
}
