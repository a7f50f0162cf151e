//! A validation rule set served by a WebAssembly plugin (world `validator`).
//!
//! Each table gets one instance from a small pool for its whole check (`begin-table`, `rows`…,
//! `end-table`), under the same sandbox as storage plugins: memory cap, epoch deadline plus a
//! host-side timeout per call, no network, files or sockets unless the entry grants them. A
//! validator that traps, hangs or refuses never fails the backup: the table gets a finding of
//! severity `error` saying so (a backup nobody could vouch for is suspect) and the instance is
//! thrown away.

use super::bindings::larder::plugin::types::{Error as PluginError, PluginInfo, Severity};
use super::bindings::validator::exports::larder::plugin::validation::{
    Column, Finding as PluginFinding, PreviousTable, Table,
};
use super::bindings::validator::{Validator, ValidatorPre};
use super::guest_bytes::GuestBytes;
use super::policy::{self, Grants};
use super::state::PluginState;
use super::{Loaded, Runtime};
use crate::error::{Error, Result};
use crate::repository::manifest::{self, Finding, ValidatorRun};
use std::sync::{Arc, Mutex};
use wasmtime::Store;

/// The rule of the finding a table gets when its validator could not check it.
pub const FAILED_RULE: &str = "validator-failed";

/// Most findings one `end-table` may return; more is an invalid answer.
pub const MAX_FINDINGS: usize = 1000;

struct Instance {
    store: Store<PluginState>,
    bindings: Validator,
}

/// One configured validator (`[[validators]]`), ready to check tables.
pub struct PluginValidator {
    name: String,
    plugin: Arc<str>,
    /// The file, for `plugin list` and the manifest.
    file: super::PluginFile,
    pre: ValidatorPre<PluginState>,
    grants: Arc<Grants>,
    info: PluginInfo,
    idle: Mutex<Vec<Instance>>,
}

impl std::fmt::Debug for PluginValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginValidator")
            .field("name", &self.name)
            .field("plugin", &self.plugin)
            .field("grants", &self.grants)
            .finish()
    }
}

/// A table as a validator is told about it.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// `schema.name`.
    pub name: String,
    /// (name, type) in row order.
    pub columns: Vec<(String, String)>,
    /// (backup id, taken at, rows, logical bytes) of the previous full backup's copy.
    pub previous: Option<(String, chrono::DateTime<chrono::Utc>, u64, u64)>,
}

impl PluginValidator {
    /// Instantiates the plugin once, to check it links as a validator and to call `describe`.
    pub async fn new(
        runtime: &Runtime,
        name: &str,
        loaded: &Loaded,
        grants: Grants,
    ) -> Result<PluginValidator> {
        let plugin = super::sandbox::label(name, loaded);
        let pre = runtime.prepare(
            loaded,
            &plugin,
            "a validator plugin (larder:plugin/validation@1.x)",
            ValidatorPre::new,
        )?;
        let mut validator = PluginValidator {
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
            idle: Mutex::new(Vec::new()),
        };
        let mut instance = validator.instantiate().await?;
        let info = validator
            .call(&mut instance, "describe", |i| {
                Box::pin(async move {
                    i.bindings
                        .larder_plugin_validation()
                        .call_describe(&mut i.store)
                        .await
                        .map(Ok)
                })
            })
            .await?;
        validator.info = super::sandbox::checked_info(&validator.plugin, info)?;
        validator.put_back(instance);
        Ok(validator)
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

    /// The validator as `plugin list` shows it.
    pub fn summary(&self) -> super::PluginSummary {
        super::PluginSummary::new(
            &self.name,
            &self.file,
            "larder:plugin/validator@1.1.0",
            &self.info,
            &self.grants,
        )
    }

    /// An empty record of this validator's verdict, for the manifest.
    pub fn run(&self) -> ValidatorRun {
        ValidatorRun {
            name: self.name.clone(),
            plugin: self.info.name.clone(),
            version: self.info.version.clone(),
            sha256: self.file.sha256.clone(),
            findings: Vec::new(),
        }
    }

    async fn instantiate(&self) -> Result<Instance> {
        let mut store = super::sandbox::new_store(self.pre.engine(), &self.plugin, &self.grants)?;
        let bindings = self.pre.instantiate_async(&mut store).await.map_err(|e| {
            super::sandbox::trap_error(&self.plugin, &self.grants, "instantiate", e)
        })?;
        Ok(Instance { store, bindings })
    }

    /// Pools an instance for the next table, unless its memory grew past
    /// [`policy::POOLED_MEMORY`]: wasm memory never shrinks, so an instance that checked a big
    /// table (a `unique` set of millions of values) would keep that memory resident for as long
    /// as the backup runs; a fresh instance costs a millisecond.
    fn put_back(&self, instance: Instance) {
        if instance.store.data().limits.memory_bytes > policy::POOLED_MEMORY {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.grants.instances.max(1)
        {
            idle.push(instance);
        }
    }

    /// Runs one call under the deadline; an instance that trapped or overran is consumed.
    async fn call<T, F>(&self, instance: &mut Instance, call: &str, f: F) -> Result<T>
    where
        F: for<'a> FnOnce(
            &'a mut Instance,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<
                        Output = wasmtime::Result<std::result::Result<T, PluginError>>,
                    > + Send
                    + 'a,
            >,
        >,
    {
        instance
            .store
            .set_epoch_deadline(self.grants.deadline_ticks());
        let grace = policy::EPOCH_TICK * 4;
        let outcome = tokio::time::timeout(self.grants.call_timeout + grace, f(instance)).await;
        let result = match &outcome {
            Ok(Ok(Ok(_))) => super::calls::Result::Ok,
            Ok(Ok(Err(_))) => super::calls::Result::Error,
            Ok(Err(_)) => super::calls::Result::Trap,
            Err(_) => super::calls::Result::Timeout,
        };
        super::calls::record(&self.plugin, call, result);
        match outcome {
            Ok(Ok(Ok(answer))) => Ok(answer),
            Ok(Ok(Err(refused))) => Err(Error::Plugin(format!(
                "plugin {} refused `{call}`: {}",
                self.plugin,
                describe_error(refused)
            ))),
            Ok(Err(trap)) => Err(super::sandbox::trap_error(
                &self.plugin,
                &self.grants,
                call,
                trap,
            )),
            Err(_) => Err(super::sandbox::deadline_error(
                &self.plugin,
                &self.grants,
                call,
            )),
        }
    }

    /// Starts checking one table. Never fails: a validator that cannot start is a finding.
    pub async fn begin(self: &Arc<Self>, table: &TableInfo) -> TableSession {
        let mut session = TableSession {
            validator: self.clone(),
            table: table.name.clone(),
            instance: None,
            wants_rows: false,
            findings: Vec::new(),
            failure: None,
        };
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut instance = match pooled {
            Some(instance) => instance,
            None => match self.instantiate().await {
                Ok(instance) => instance,
                Err(e) => {
                    session.failed(e);
                    return session;
                }
            },
        };
        let wit_table = Table {
            name: table.name.clone(),
            columns: table
                .columns
                .iter()
                .map(|(name, type_name)| Column {
                    name: name.clone(),
                    type_name: type_name.clone(),
                })
                .collect(),
            previous: table
                .previous
                .as_ref()
                .map(|(id, at, rows, bytes)| PreviousTable {
                    backup_id: id.clone(),
                    taken_at: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    rows: *rows,
                    logical_bytes: *bytes,
                }),
        };
        let begun = self
            .call(&mut instance, "begin-table", move |i| {
                Box::pin(async move {
                    i.bindings
                        .larder_plugin_validation()
                        .call_begin_table(&mut i.store, &wit_table)
                        .await
                })
            })
            .await;
        match begun {
            Ok(wants_rows) => {
                session.wants_rows = wants_rows;
                session.instance = Some(instance);
            }
            Err(e) => session.failed(e),
        }
        session
    }
}

fn describe_error(e: PluginError) -> String {
    let (kind, text) = match e {
        PluginError::NotFound => ("not-found", String::new()),
        PluginError::Denied(m) => ("denied", m),
        PluginError::Unavailable(m) => ("unavailable", m),
        PluginError::Invalid(m) => ("invalid", m),
        PluginError::Other(m) => ("error", m),
    };
    format!("({kind}) {}", policy::bounded_text(text))
}

/// One table's check by one validator, from `begin-table` to `end-table`.
pub struct TableSession {
    validator: Arc<PluginValidator>,
    table: String,
    /// `None` once the validator failed on this table.
    instance: Option<Instance>,
    wants_rows: bool,
    findings: Vec<Finding>,
    /// Why the validator failed on this table, once it did.
    failure: Option<String>,
}

impl TableSession {
    /// Whether the validator asked for the table's rows (and is still working).
    pub fn wants_rows(&self) -> bool {
        self.wants_rows && self.instance.is_some()
    }

    /// Why the validator could not check this table, once it failed.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// The validator could not check this table: that is a finding of severity `error`.
    fn failed(&mut self, e: Error) {
        tracing::warn!(
            "validator '{}' could not check table {}: {e}",
            self.validator.name,
            self.table
        );
        self.instance = None;
        self.failure = Some(e.to_string());
        self.findings.push(Finding {
            rule: FAILED_RULE.into(),
            table: self.table.clone(),
            column: None,
            severity: manifest::Severity::Error,
            message: format!(
                "{e}; the table's rows were not checked, so the backup is suspect until a `backup validate` passes"
            ),
            count: 0,
        });
    }

    /// Hands the validator a batch of whole COPY text lines.
    pub async fn rows(&mut self, batch: bytes::Bytes) {
        if !self.wants_rows() {
            return;
        }
        let Some(mut instance) = self.instance.take() else {
            return;
        };
        let validator = self.validator.clone();
        let sent = validator
            .call(&mut instance, "rows", |i| {
                Box::pin(async move {
                    // The batch goes into the guest with one copy (see `guest_bytes`).
                    let rows = i
                        .bindings
                        .larder_plugin_validation()
                        .func_rows()
                        .func()
                        .typed::<(GuestBytes<'_>,), (std::result::Result<(), PluginError>,)>(
                            &i.store,
                        )?;
                    let (answer,) = rows.call_async(&mut i.store, (GuestBytes(&batch),)).await?;
                    Ok(answer)
                })
            })
            .await;
        match sent {
            Ok(()) => self.instance = Some(instance),
            Err(e) => self.failed(e),
        }
    }

    /// Ends the table (`rows` is the backup's row count) and returns the findings.
    pub async fn finish(mut self, rows: u64) -> Vec<Finding> {
        let Some(mut instance) = self.instance.take() else {
            return self.findings;
        };
        let validator = self.validator.clone();
        let ended = validator
            .call(&mut instance, "end-table", move |i| {
                Box::pin(async move {
                    i.bindings
                        .larder_plugin_validation()
                        .call_end_table(&mut i.store, rows)
                        .await
                })
            })
            .await;
        match ended.and_then(|found| self.checked(found)) {
            Ok(found) => {
                self.findings.extend(found);
                validator.put_back(instance);
            }
            Err(e) => self.failed(e),
        }
        self.findings
    }

    /// The plugin's findings within bounds, about this table.
    fn checked(&self, found: Vec<PluginFinding>) -> Result<Vec<Finding>> {
        let plugin = &self.validator.plugin;
        if found.len() > MAX_FINDINGS {
            return Err(Error::Plugin(format!(
                "plugin {plugin} returned an invalid answer to `end-table`: {} findings, more than {MAX_FINDINGS}",
                found.len()
            )));
        }
        Ok(found
            .into_iter()
            .map(|f| Finding {
                rule: cut(f.rule, policy::MAX_NAME),
                // Whatever the plugin says, a finding is about the table it was given.
                table: self.table.clone(),
                column: f.column.map(|c| cut(c, policy::MAX_NAME)),
                severity: match f.severity {
                    Severity::Info => manifest::Severity::Info,
                    Severity::Warning => manifest::Severity::Warning,
                    Severity::Error => manifest::Severity::Error,
                    Severity::Critical => manifest::Severity::Critical,
                },
                message: policy::bounded_text(f.message),
                count: f.count,
            })
            .collect())
    }
}

/// `text` cut to `max` bytes at a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut at = max;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
    text
}

/// Opens every `[[validators]]` entry (none configured: none opened, no engine started).
pub async fn open_configured(loaded: &crate::config::Loaded) -> Result<Vec<Arc<PluginValidator>>> {
    let entries = &loaded.config.validators;
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let runtime = Runtime::new(loaded.plugin_cache_dir())?;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for entry in entries {
        let owner = format!("validator '{}'", entry.name);
        if !seen.insert(entry.name.as_str()) {
            return Err(Error::Config(format!(
                "two validators are named '{}'",
                entry.name
            )));
        }
        let (_, plugin) = super::entry::load_pinned(
            &runtime,
            loaded,
            &owner,
            &entry.path,
            entry.sha256.as_deref(),
        )?;
        let settings = entry.settings();
        let base = super::entry::plugin_grants(
            &owner,
            &super::entry::GrantEntry {
                config: &settings,
                secrets: &entry.secrets,
                allow_hosts: &entry.allow_hosts,
                allow_private: entry.allow_private,
                memory: entry.memory.as_deref(),
                timeout: entry.timeout,
            },
        )?;
        let grants = Grants {
            dirs: entry
                .dirs
                .iter()
                .map(|d| policy::DirGrant {
                    host: loaded.config_relative(&d.host),
                    guest: d.guest.clone(),
                    writable: d.mode == crate::config::DirMode::ReadWrite,
                })
                .collect(),
            instances: entry.instances.unwrap_or(policy::DEFAULT_INSTANCES).max(1),
            ..base
        };
        let mut validator = PluginValidator::new(&runtime, &entry.name, &plugin, grants).await?;
        validator.file.pinned = entry.sha256.is_some();
        out.push(Arc::new(validator));
    }
    Ok(out)
}
