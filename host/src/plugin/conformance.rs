//! `backup-cli plugin test FILE`: the conformance suite of the world a plugin implements, the
//! kit third-party authors run before they ship. Each check goes through the same host code a
//! backup, an alert or a validation uses (the sandbox, the answer checks, the error kinds), so a
//! plugin that passes behaves as the host expects.
//!
//! - storage-target: objects written, read, overwritten, listed page by page and deleted under a
//!   prefix of their own, in a scratch folder the suite grants (when the plugin uses files);
//! - notifier: a test event and its resolve delivered, to a loopback HTTP receiver the suite
//!   starts when the plugin speaks HTTP and no destination was given;
//! - validator: a sample table streamed through `begin-table`, `rows` and `end-table`.

use super::inspect::{self, NOTIFIER_EXPORT, STORAGE_EXPORT, VALIDATOR_EXPORT};
use super::notifier::{AlertState, Detail, Event, PluginNotifier, Severity};
use super::policy::{DirGrant, Grants};
use super::target::PluginTarget;
use super::validator::{FAILED_RULE, PluginValidator, TableInfo};
use super::{Runtime, entry};
use crate::error::{Error, Result};
use crate::repository::manifest::Finding;
use crate::targets::{Target, TargetError};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the scratch folder appears inside a storage plugin that uses files.
pub const SCRATCH_GUEST: &str = "/scratch";
/// The sample table a validator is given.
pub const SAMPLE_TABLE: &str = "public.larder_plugin_test";
/// Rows in the sample table, and what the "previous backup" of it held.
pub const SAMPLE_ROWS: u64 = 100;
pub const SAMPLE_PREVIOUS_ROWS: u64 = 110;
/// Objects the listing check writes: more than one page of S3's 1,000 keys.
const LIST_OBJECTS: usize = 1100;
/// The large object's size: bigger than any chunk a backup writes.
const LARGE_OBJECT: usize = 16 << 20;
/// The path of the loopback receiver's URL.
const RECEIVER_PATH: &str = "/larder-plugin-test";

/// What the suite is to run against: the file and what its entry would grant.
pub struct Request {
    pub path: PathBuf,
    /// What `host.config` returns.
    pub config: BTreeMap<String, String>,
    /// name → `env:VAR` or `file:/path`.
    pub secrets: BTreeMap<String, String>,
    pub allow_hosts: Vec<String>,
    pub allow_tcp: Vec<String>,
    pub timeout: Option<Duration>,
}

/// The suite's verdict.
#[derive(Debug, Serialize)]
pub struct Conformance {
    pub path: String,
    pub sha256: String,
    /// `larder:plugin/storage-target`, `…/notifier` or `…/validator`.
    pub world: String,
    /// Name and version from `describe` (empty when `describe` failed).
    pub plugin: String,
    pub version: String,
    /// What the suite set up for the plugin (scratch folder, loopback receiver).
    pub setup: Vec<String>,
    pub checks: Vec<Check>,
}

/// One check: its name, whether it passed, and what was seen.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub passed: bool,
    pub detail: String,
}

impl Conformance {
    /// The names of the checks that failed.
    pub fn failed(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.check)
            .collect()
    }

    /// The failure to exit with, if any check failed.
    pub fn failure(&self) -> Option<Error> {
        let failed = self.failed();
        let first = self.checks.iter().find(|c| !c.passed)?;
        Some(Error::PluginTestFailed(format!(
            "plugin {} failed {} of {} conformance check(s): {}; first: {}: {}",
            self.path,
            failed.len(),
            self.checks.len(),
            failed.join(", "),
            first.check,
            first.detail
        )))
    }

    fn record(&mut self, check: &'static str, outcome: std::result::Result<String, String>) {
        let (passed, detail) = match outcome {
            Ok(detail) => (true, detail),
            Err(detail) => (false, detail),
        };
        self.checks.push(Check {
            check,
            passed,
            detail,
        });
    }
}

type Outcome = std::result::Result<String, String>;

/// The settings given on the command line, as `host.config` returns them: a JSON object, a
/// TOML document (`url = "…"`) or a TOML inline table (`{ url = "…" }`); strings as they are,
/// anything else as JSON text (as `[[validators]] config` does).
pub fn parse_settings(text: &str) -> Result<BTreeMap<String, String>> {
    let table: toml::Table = if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
        let serde_json::Value::Object(map) = json else {
            return Err(Error::Config(format!(
                "--plugin-config {text:?} is JSON but not an object; give {{\"key\": \"value\", …}}"
            )));
        };
        map.into_iter()
            .map(|(key, value)| {
                let value = match value {
                    serde_json::Value::String(s) => toml::Value::String(s),
                    other => toml::Value::String(other.to_string()),
                };
                (key, value)
            })
            .collect()
    } else {
        let document = if text.trim_start().starts_with('{') {
            format!("settings = {text}")
        } else {
            text.to_string()
        };
        let mut parsed: toml::Table = toml::from_str(&document).map_err(|e| {
            Error::Config(format!(
                "--plugin-config is neither a JSON object nor TOML: {e}"
            ))
        })?;
        match parsed.remove("settings") {
            Some(toml::Value::Table(inline)) if document != text => inline,
            Some(other) => {
                parsed.insert("settings".into(), other);
                parsed
            }
            None => parsed,
        }
    };
    Ok(table
        .iter()
        .map(|(key, value)| (key.clone(), crate::config::setting_text(value)))
        .collect())
}

/// `NAME=env:VAR` or `NAME=file:/path` from the command line.
pub fn parse_secret(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((name, reference)) if !name.is_empty() => {
            Ok((name.to_string(), reference.to_string()))
        }
        _ => Err(Error::Config(format!(
            "--secret {text:?}: give NAME=env:VARIABLE or NAME=file:/path"
        ))),
    }
}

/// Runs the suite of the plugin's world.
pub async fn run(runtime: &Runtime, request: &Request) -> Result<Conformance> {
    let inspection = inspect::inspect(runtime, &request.path)?;
    let exports = |prefix: &str| inspection.exports.iter().any(|e| e.starts_with(prefix));
    let imports = |prefix: &str| inspection.imports.iter().any(|i| i.starts_with(prefix));
    let Some(world) = inspection.world.clone() else {
        return Err(Error::Plugin(format!(
            "{} implements none of the contract's worlds (storage-target, notifier, validator): it exports {}",
            request.path.display(),
            inspection.exports.join(", ")
        )));
    };
    let loaded = runtime.load(&request.path, None)?;
    let mut report = Conformance {
        path: request.path.display().to_string(),
        sha256: loaded.sha256.clone(),
        world,
        plugin: String::new(),
        version: String::new(),
        setup: Vec::new(),
        checks: Vec::new(),
    };
    let owner = format!("plugin {}", request.path.display());
    let base = entry::plugin_grants(
        &owner,
        &entry::GrantEntry {
            config: &request.config,
            secrets: &request.secrets,
            allow_hosts: &request.allow_hosts,
            allow_private: false,
            memory: None,
            timeout: request.timeout,
        },
    )?;
    let base = Grants {
        allow_tcp: request.allow_tcp.clone(),
        ..base
    };
    if exports(STORAGE_EXPORT) {
        storage(
            runtime,
            &loaded,
            base,
            imports("wasi:filesystem/"),
            &mut report,
        )
        .await?;
    } else if exports(NOTIFIER_EXPORT) {
        let http = imports("wasi:http/outgoing-handler");
        notifier(runtime, &loaded, base, http, request, &mut report).await?;
    } else if exports(VALIDATOR_EXPORT) {
        validator(runtime, &loaded, base, &mut report).await;
    }
    Ok(report)
}

/// `describe`'s answer must name the plugin and its version.
fn described(report: &mut Conformance, info: &super::bindings::larder::plugin::types::PluginInfo) {
    report.plugin = info.name.clone();
    report.version = info.version.clone();
    let outcome = if info.name.trim().is_empty() || info.version.trim().is_empty() {
        Err(format!(
            "describe answered name {:?}, version {:?}: both must be set (plugin list and the manifest show them)",
            info.name, info.version
        ))
    } else {
        Ok(format!(
            "{} {} (capabilities: {})",
            info.name,
            info.version,
            if info.capabilities.is_empty() {
                "none".to_string()
            } else {
                info.capabilities.join(", ")
            }
        ))
    };
    report.record("describe", outcome);
}

// ---------------------------------------------------------------------------------------------
// storage-target

async fn storage(
    runtime: &Runtime,
    loaded: &super::Loaded,
    base: Grants,
    uses_files: bool,
    report: &mut Conformance,
) -> Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("larder-plugin-test-")
        .tempdir()
        .map_err(Error::io("creating the scratch folder for plugin test"))?;
    let mut grants = Grants {
        instances: 4,
        ..base
    };
    if uses_files {
        grants.dirs.push(DirGrant {
            host: scratch.path().to_path_buf(),
            guest: SCRATCH_GUEST.to_string(),
            writable: true,
        });
        if !grants.config.contains_key("dir") {
            grants
                .config
                .insert("dir".to_string(), SCRATCH_GUEST.to_string());
            report.setup.push(format!(
                "config dir = \"{SCRATCH_GUEST}\" (set --plugin-config dir to use another guest path)"
            ));
        }
        report.setup.push(format!(
            "a scratch folder {} granted read-write as {SCRATCH_GUEST}, removed afterwards",
            scratch.path().display()
        ));
    }
    let target = match PluginTarget::new(runtime, "plugin-test", loaded, grants).await {
        Ok(target) => target,
        Err(e) => {
            report.record("describe", Err(e.to_string()));
            return Ok(());
        }
    };
    described(report, target.info());
    let prefix = format!("larder-plugin-test-{:08x}/", fastrand::u32(..));
    report.setup.push(format!("every object under {prefix}"));
    let t = &target;
    let p = prefix.as_str();
    report.record("put-get", put_get(t, p).await);
    report.record("stat", stat(t, p).await);
    report.record("overwrite", overwrite(t, p).await);
    report.record("empty-object", empty_object(t, p).await);
    report.record("large-object", large_object(t, p).await);
    report.record("missing-object", missing_object(t, p).await);
    report.record("list-pages", list_pages(t, p).await);
    report.record("list-prefix", list_prefix(t, p).await);
    report.record("delete", delete(t, p).await);
    report.record(
        "flush",
        target.flush().await.map(|()| "ok".into()).map_err(said),
    );
    report.record("cleanup", cleanup(t, p).await);
    Ok(())
}

fn said(e: TargetError) -> String {
    e.to_string()
}

/// Bytes every value of which appears: 0..=255 over and over.
fn pattern(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

async fn read_back(t: &PluginTarget, key: &str, want: &[u8]) -> std::result::Result<(), String> {
    let got = t.get(key).await.map_err(said)?;
    if got.as_ref() != want {
        return Err(format!(
            "get {key} returned {} bytes that differ from the {} bytes put",
            got.len(),
            want.len()
        ));
    }
    Ok(())
}

async fn put_get(t: &PluginTarget, p: &str) -> Outcome {
    let key = format!("{p}put-get/object.bin");
    let data = pattern(4096);
    t.put(&key, data.clone()).await.map_err(said)?;
    read_back(t, &key, &data).await?;
    Ok("4096 bytes (every byte value) read back identical".into())
}

async fn stat(t: &PluginTarget, p: &str) -> Outcome {
    let key = format!("{p}stat/object.bin");
    t.put(&key, pattern(1234)).await.map_err(said)?;
    match t.stat(&key).await.map_err(said)? {
        Some(1234) => Ok("the size of a stored object: 1234".into()),
        other => Err(format!(
            "stat {key} answered {other:?} for an object of 1234 bytes"
        )),
    }
}

async fn overwrite(t: &PluginTarget, p: &str) -> Outcome {
    let key = format!("{p}overwrite/object.bin");
    t.put(&key, Bytes::from(vec![1u8; 3000]))
        .await
        .map_err(said)?;
    let second = Bytes::from(vec![2u8; 1000]);
    t.put(&key, second.clone()).await.map_err(said)?;
    read_back(t, &key, &second).await?;
    match t.stat(&key).await.map_err(said)? {
        Some(1000) => Ok("a second put replaces the object (3000 → 1000 bytes)".into()),
        other => Err(format!(
            "after overwriting with 1000 bytes, stat answered {other:?}"
        )),
    }
}

async fn empty_object(t: &PluginTarget, p: &str) -> Outcome {
    let key = format!("{p}empty/object.bin");
    t.put(&key, Bytes::new()).await.map_err(said)?;
    read_back(t, &key, &[]).await?;
    match t.stat(&key).await.map_err(said)? {
        Some(0) => Ok("0 bytes stored, read and stat'ed".into()),
        other => Err(format!("stat of an empty object answered {other:?}")),
    }
}

async fn large_object(t: &PluginTarget, p: &str) -> Outcome {
    let key = format!("{p}large/object.bin");
    let mut rng = fastrand::Rng::with_seed(16);
    let data = Bytes::from((0..LARGE_OBJECT).map(|_| rng.u8(..)).collect::<Vec<u8>>());
    t.put(&key, data.clone()).await.map_err(said)?;
    read_back(t, &key, &data).await?;
    match t.stat(&key).await.map_err(said)? {
        Some(n) if n == LARGE_OBJECT as u64 => {
            Ok(format!("{} MiB read back identical", LARGE_OBJECT >> 20))
        }
        other => Err(format!(
            "stat of a {LARGE_OBJECT}-byte object answered {other:?}"
        )),
    }
}

async fn missing_object(t: &PluginTarget, p: &str) -> Outcome {
    let key = format!("{p}missing/never-written.bin");
    match t.get(&key).await {
        Err(TargetError::NotFound { .. }) => {}
        Ok(body) => {
            return Err(format!(
                "get of an object never written returned {} bytes",
                body.len()
            ));
        }
        Err(e) => {
            return Err(format!(
                "get of an object never written must fail with the error `not-found` (the host then reads another target's copy), not: {e}"
            ));
        }
    }
    match t.stat(&key).await.map_err(said)? {
        None => {}
        Some(n) => {
            return Err(format!(
                "stat of an object never written answered {n} bytes instead of none"
            ));
        }
    }
    t.delete(&key).await.map_err(|e| {
        format!("delete of an object that does not exist must succeed (deletes are repeated after a crash): {e}")
    })?;
    Ok("get: not-found, stat: none, delete: ok".into())
}

async fn list_pages(t: &PluginTarget, p: &str) -> Outcome {
    let under = format!("{p}list/");
    let keys: Vec<String> = (0..LIST_OBJECTS)
        .map(|i| format!("{under}k-{i:05}.bin"))
        .collect();
    // Neighbours that share the text of the prefix but are not under it.
    for outside in [format!("{p}list-sibling.bin"), format!("{p}listx/k.bin")] {
        t.put(&outside, pattern(3)).await.map_err(said)?;
    }
    let puts = futures_util::stream::iter(
        keys.iter()
            .enumerate()
            .map(|(i, key)| async move { t.put(key, pattern(1 + i % 7)).await }),
    )
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await;
    puts.into_iter()
        .collect::<std::result::Result<Vec<()>, _>>()
        .map_err(said)?;
    let (objects, pages) = t.list_pages(&under).await.map_err(said)?;
    let mut seen = BTreeMap::new();
    for object in &objects {
        if seen.insert(object.key.clone(), object.size).is_some() {
            return Err(format!(
                "list returned {} twice (over {pages} page(s))",
                object.key
            ));
        }
    }
    for (i, key) in keys.iter().enumerate() {
        match seen.remove(key) {
            Some(size) if size == (1 + i % 7) as u64 => {}
            Some(size) => {
                return Err(format!(
                    "list gave {key} a size of {size}, it holds {} bytes",
                    1 + i % 7
                ));
            }
            None => {
                return Err(format!(
                    "list of {under} over {pages} page(s) left out {key} ({} of {LIST_OBJECTS} keys returned)",
                    objects.len()
                ));
            }
        }
    }
    if let Some(extra) = seen.keys().next() {
        return Err(format!("list of {under} returned {extra}, never written"));
    }
    Ok(format!(
        "{LIST_OBJECTS} keys, each once with its size, in {pages} page(s)"
    ))
}

async fn list_prefix(t: &PluginTarget, p: &str) -> Outcome {
    // A prefix that ends inside a key segment, as S3 allows: k-00100 … k-00109.
    let prefix = format!("{p}list/k-0010");
    let objects = t.list(&prefix).await.map_err(said)?;
    let mut keys: Vec<String> = objects.into_iter().map(|o| o.key).collect();
    keys.sort();
    let want: Vec<String> = (100..110)
        .map(|i| format!("{p}list/k-{i:05}.bin"))
        .collect();
    if keys != want {
        return Err(format!(
            "list of the prefix {prefix} returned {} key(s) ({}), expected the 10 keys k-00100.bin … k-00109.bin",
            keys.len(),
            keys.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let sibling = t.list(&format!("{p}list-")).await.map_err(said)?;
    if sibling.len() != 1 {
        return Err(format!(
            "list of {p}list- returned {} key(s), expected only list-sibling.bin",
            sibling.len()
        ));
    }
    Ok("a prefix ending inside a name gives exactly the keys it starts".into())
}

async fn delete(t: &PluginTarget, p: &str) -> Outcome {
    let key = format!("{p}delete/object.bin");
    t.put(&key, pattern(10)).await.map_err(said)?;
    t.delete(&key).await.map_err(said)?;
    if let Some(n) = t.stat(&key).await.map_err(said)? {
        return Err(format!("after delete, stat still answered {n} bytes"));
    }
    match t.get(&key).await {
        Err(TargetError::NotFound { .. }) => {}
        Ok(_) => return Err("after delete, get still returned the object".into()),
        Err(e) => {
            return Err(format!(
                "after delete, get must fail with `not-found`, not: {e}"
            ));
        }
    }
    if !t
        .list(&format!("{p}delete/"))
        .await
        .map_err(said)?
        .is_empty()
    {
        return Err("after delete, list still returned the object".into());
    }
    Ok("gone from stat, get (not-found) and list".into())
}

async fn cleanup(t: &PluginTarget, p: &str) -> Outcome {
    let objects = t.list(p).await.map_err(said)?;
    let count = objects.len();
    let deletes = futures_util::stream::iter(
        objects
            .iter()
            .map(|object| async move { t.delete(&object.key).await }),
    )
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await;
    deletes
        .into_iter()
        .collect::<std::result::Result<Vec<()>, _>>()
        .map_err(said)?;
    t.flush().await.map_err(said)?;
    let left = t.list(p).await.map_err(said)?;
    if !left.is_empty() {
        return Err(format!(
            "{} object(s) still listed under {p} after deleting all {count}",
            left.len()
        ));
    }
    Ok(format!("{count} objects deleted, nothing left under {p}"))
}

// ---------------------------------------------------------------------------------------------
// notifier

async fn notifier(
    runtime: &Runtime,
    loaded: &super::Loaded,
    base: Grants,
    http: bool,
    request: &Request,
    report: &mut Conformance,
) -> Result<()> {
    let mut grants = base;
    // A plugin that speaks HTTP and was given no destination talks to our own receiver.
    let receiver = if http && !request.config.contains_key("url") && request.allow_hosts.is_empty()
    {
        let receiver = Receiver::start()?;
        grants
            .config
            .insert("url".to_string(), receiver.url(RECEIVER_PATH));
        grants
            .allow_hosts
            .push(format!("127.0.0.1:{}", receiver.port));
        report.setup.push(format!(
            "a loopback HTTP receiver at {} (config url, allow_hosts = [\"127.0.0.1:{}\"])",
            receiver.url(RECEIVER_PATH),
            receiver.port
        ));
        Some(receiver)
    } else {
        report.setup.push(
            "the destination given (--plugin-config, --allow-host): one test event is sent there"
                .to_string(),
        );
        None
    };
    let notifier = match PluginNotifier::new(runtime, "plugin-test", loaded, grants).await {
        Ok(notifier) => notifier,
        Err(e) => {
            report.record("describe", Err(e.to_string()));
            return Ok(());
        }
    };
    described(report, notifier.info());
    let now = chrono::Utc::now();
    let stamp =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let id = format!("plugin-test.{}", now.timestamp());
    let mut event = Event {
        id: id.clone(),
        alert: "Test Notification".into(),
        state: AlertState::Test,
        severity: Severity::Info,
        level: 1,
        database: "plugin_test".into(),
        target: Some("plugin-test".into()),
        backup_id: Some("20261202-000000-abcd".into()),
        message: "A test event from `backup-cli plugin test`: this channel works.".into(),
        action: "Nothing to do.".into(),
        fired_at: stamp(now),
        sent_at: stamp(now),
        resolved_at: None,
        details: vec![Detail {
            name: "check".into(),
            value: "plugin test".into(),
        }],
    };
    let delivered = notifier.notify(&event).await;
    report.record(
        "test-event",
        delivered
            .as_ref()
            .map(|()| "notify answered ok".to_string())
            .map_err(|f| f.reason.clone()),
    );
    // Without a delivery the checks that follow have nothing to look at.
    let (Some(receiver), Ok(())) = (receiver, delivered) else {
        return Ok(());
    };
    let got = receiver.take();
    report.record("received", received_once(&got));
    report.record(
        "event-id",
        match got.first() {
            Some(r) if r.mentions(&id) => Ok(format!(
                "the request carries the event id {id} (receivers de-duplicate on it)"
            )),
            Some(_) => Err(format!(
                "the request nowhere carries the event id {id}: receivers need it to de-duplicate reminders and escalations, and a resolve must name what it resolves"
            )),
            None => Err("nothing was received".into()),
        },
    );
    event.state = AlertState::Resolved;
    event.resolved_at = Some(stamp(chrono::Utc::now()));
    let resolved = notifier.notify(&event).await;
    let got = receiver.take();
    report.record(
        "resolved-event",
        match resolved {
            Ok(()) => received_once(&got).map(|_| "the resolve was delivered".to_string()),
            Err(f) => Err(f.reason),
        },
    );
    receiver.answer(503);
    let refused = notifier.notify(&event).await;
    report.record(
        "unavailable-on-503",
        match refused {
            Err(f) if f.retry => Ok("a receiver answering 503 gives `unavailable`: the host retries, then keeps the event".into()),
            Err(f) => Err(format!(
                "a receiver answering 503 must give the error `unavailable` (the host retries it and keeps the event for the next run); the plugin said: {}",
                f.reason
            )),
            Ok(()) => Err("a receiver answering 503 was reported delivered: the alert would be lost".into()),
        },
    );
    Ok(())
}

/// After `notify` answered ok: exactly one request reached the receiver.
fn received_once(got: &[Received]) -> Outcome {
    match got {
        [one] => Ok(format!(
            "{} {}, {} bytes{}",
            one.method,
            one.path,
            one.body.len(),
            one.header("content-type")
                .map(|c| format!(", content-type {c}"))
                .unwrap_or_default()
        )),
        [] => Err("notify answered ok, but the receiver got no request".into()),
        many => Err(format!(
            "the receiver got {} requests for one event (one delivery per call; the host does the retrying)",
            many.len()
        )),
    }
}

/// One request as the loopback receiver got it.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn mentions(&self, text: &str) -> bool {
        self.headers.iter().any(|(_, v)| v.contains(text))
            || String::from_utf8_lossy(&self.body).contains(text)
    }
}

/// A small HTTP/1.1 server on loopback recording what it is sent; stopped on drop.
struct Receiver {
    port: u16,
    got: Arc<std::sync::Mutex<Vec<Received>>>,
    status: Arc<std::sync::atomic::AtomicU16>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    fn start() -> Result<Receiver> {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(Error::io("starting the loopback HTTP receiver"))?;
        let port = listener
            .local_addr()
            .map_err(Error::io("starting the loopback HTTP receiver"))?
            .port();
        let receiver = Receiver {
            port,
            got: Arc::default(),
            status: Arc::new(200.into()),
            stop: Arc::default(),
        };
        let (got, status, stop) = (
            receiver.got.clone(),
            receiver.status.clone(),
            receiver.stop.clone(),
        );
        std::thread::Builder::new()
            .name("plugin-test-receiver".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => serve(stream, status.load(Ordering::SeqCst), &got),
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
            .map_err(Error::io("starting the loopback HTTP receiver"))?;
        Ok(receiver)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn answer(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    /// The requests received since the last call.
    fn take(&self) -> Vec<Received> {
        self.got
            .lock()
            .map(|mut got| std::mem::take(&mut *got))
            .unwrap_or_default()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Reads one request (a body of `content-length` bytes or chunked, up to 1 MiB), records it in
/// `got` and answers `status` with an empty body (recorded first: the plugin's call returns as
/// soon as it has the answer).
fn serve(stream: std::net::TcpStream, status: u16, got: &std::sync::Mutex<Vec<Received>>) {
    let Some((request, mut stream)) = read_request(stream) else {
        return;
    };
    if let Ok(mut got) = got.lock() {
        got.push(request);
    }
    use std::io::Write;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        if status < 300 { "OK" } else { "Unavailable" }
    );
}

fn read_request(stream: std::net::TcpStream) -> Option<(Received, std::net::TcpStream)> {
    use std::io::{BufRead, BufReader, Read};
    stream.set_nonblocking(false).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        if headers.len() > 200 {
            return None;
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    const MAX_BODY: usize = 1 << 20;
    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            if body.len() + size > MAX_BODY {
                return None;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        let length: usize = find("content-length")?.parse().ok()?;
        if length > MAX_BODY {
            return None;
        }
        body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
    }
    Some((
        Received {
            method,
            path,
            headers,
            body,
        },
        stream,
    ))
}

// ---------------------------------------------------------------------------------------------
// validator

/// The sample table's columns.
fn sample_columns() -> Vec<(String, String)> {
    [
        ("id", "integer"),
        ("email", "text"),
        ("note", "text"),
        ("amount", "numeric(10,2)"),
        ("created_at", "timestamp with time zone"),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), t.to_string()))
    .collect()
}

/// The sample table's rows in COPY text: `email` NULL in row 50 and not an address in row 77,
/// `note` NULL in every tenth row and holding escapes (tab, newline, backslash) and non-ASCII
/// text in the others, `id` unique.
pub fn sample_rows() -> Vec<String> {
    (1..=SAMPLE_ROWS)
        .map(|i| {
            let email = match i {
                50 => "\\N".to_string(),
                77 => "not-an-address".to_string(),
                _ => format!("user{i}@example.com"),
            };
            let note = if i % 10 == 0 {
                "\\N".to_string()
            } else {
                format!("line one\\nline two\\tcafé ☕ \\\\ {i}")
            };
            format!(
                "{i}\t{email}\t{note}\t{}.{:02}\t2026-12-01 10:{:02}:00+00\n",
                i * 3,
                i % 100,
                i % 60
            )
        })
        .collect()
}

async fn validator(
    runtime: &Runtime,
    loaded: &super::Loaded,
    base: Grants,
    report: &mut Conformance,
) {
    // One instance, so the second table runs on the instance that checked the first.
    let grants = Grants {
        instances: 1,
        ..base
    };
    let validator = match PluginValidator::new(runtime, "plugin-test", loaded, grants).await {
        Ok(validator) => Arc::new(validator),
        Err(e) => {
            report.record("describe", Err(e.to_string()));
            return;
        }
    };
    described(report, validator.info());
    let table = TableInfo {
        name: SAMPLE_TABLE.to_string(),
        columns: sample_columns(),
        previous: Some((
            "20261201-000000-abcd".to_string(),
            chrono::Utc::now() - chrono::Duration::days(1),
            SAMPLE_PREVIOUS_ROWS,
            12_345,
        )),
    };
    let (steps, first) = check_table(&validator, &table).await;
    for (check, outcome) in steps {
        report.record(check, outcome);
    }
    let Some(first) = first else { return };
    report.record("findings", well_formed(&first));
    // The host reuses instances from table to table: what one table left must not show.
    let key = |f: &Finding| {
        (
            f.rule.clone(),
            f.column.clone(),
            f.severity,
            f.message.clone(),
            f.count,
        )
    };
    let (steps, again) = check_table(&validator, &table).await;
    report.record(
        "repeatable",
        match again {
            Some(again) if again.iter().map(key).eq(first.iter().map(key)) => Ok(format!(
                "the same table again on the same instance: the same {} finding(s)",
                first.len()
            )),
            Some(again) => Err(format!(
                "the same table checked again on the same instance gave {} finding(s) instead of {}: keep per-table state only and reset it in begin-table",
                again.len(),
                first.len()
            )),
            None => Err(steps
                .into_iter()
                .find_map(|(check, outcome)| {
                    outcome
                        .err()
                        .map(|why| format!("the second time, {check} failed: {why}"))
                })
                .unwrap_or_default()),
        },
    );
}

/// Streams the sample table through the validator: the outcome of `begin-table`, `rows` and
/// `end-table`, and the findings unless a call failed.
async fn check_table(
    validator: &Arc<PluginValidator>,
    table: &TableInfo,
) -> (Vec<(&'static str, Outcome)>, Option<Vec<Finding>>) {
    let mut steps = Vec::new();
    let mut session = validator.begin(table).await;
    if let Some(why) = session.failure() {
        steps.push(("begin-table", Err(why.to_string())));
        return (steps, None);
    }
    let wants = session.wants_rows();
    steps.push((
        "begin-table",
        Ok(format!(
            "{SAMPLE_TABLE} ({} columns, previous backup {SAMPLE_PREVIOUS_ROWS} rows): {}",
            table.columns.len(),
            if wants {
                "asks for its rows"
            } else {
                "does not ask for its rows"
            }
        )),
    ));
    if wants {
        let rows = sample_rows();
        let mut batches = 0;
        for part in rows.chunks(40) {
            session.rows(Bytes::from(part.concat())).await;
            batches += 1;
            if let Some(why) = session.failure() {
                steps.push(("rows", Err(why.to_string())));
                return (steps, None);
            }
        }
        steps.push((
            "rows",
            Ok(format!("{SAMPLE_ROWS} rows in {batches} batches accepted")),
        ));
    }
    let findings = session.finish(SAMPLE_ROWS).await;
    if let Some(failed) = findings.iter().find(|f| f.rule == FAILED_RULE) {
        steps.push(("end-table", Err(failed.message.clone())));
        return (steps, None);
    }
    steps.push(("end-table", Ok(format!("{} finding(s)", findings.len()))));
    (steps, Some(findings))
}

/// Findings the operator can read: a rule, a message, a column of the table, nothing cut.
fn well_formed(findings: &[Finding]) -> Outcome {
    for f in findings {
        let which = format!("finding {:?}", f.rule);
        if f.rule.trim().is_empty() {
            return Err(format!("a finding has no rule (message {:?})", f.message));
        }
        if f.rule.len() >= super::policy::MAX_NAME {
            return Err(format!(
                "{which}: the rule name was cut at {} bytes",
                super::policy::MAX_NAME
            ));
        }
        if f.message.trim().is_empty() {
            return Err(format!(
                "{which} has no message: say what was found and how many"
            ));
        }
        if f.message.len() > super::policy::MAX_TEXT {
            return Err(format!(
                "{which}: the message was cut at {} bytes (findings are stored in the manifest)",
                super::policy::MAX_TEXT
            ));
        }
        if let Some(column) = &f.column
            && column.trim().is_empty()
        {
            return Err(format!(
                "{which} names an empty column: give none for a table-wide finding"
            ));
        }
    }
    Ok(if findings.is_empty() {
        "no findings (give --plugin-config rules about public.larder_plugin_test to see some)"
            .to_string()
    } else {
        findings
            .iter()
            .map(|f| {
                format!(
                    "{} {}{}: {}",
                    f.severity,
                    f.rule,
                    f.column
                        .as_deref()
                        .map(|c| format!(" on {c}"))
                        .unwrap_or_default(),
                    f.message
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_as_json_toml_or_an_inline_table() {
        let want: BTreeMap<String, String> = [
            ("url".to_string(), "http://h/x".to_string()),
            ("rules".to_string(), r#"[{"min_rows":1}]"#.to_string()),
        ]
        .into();
        assert_eq!(
            parse_settings(r#"{"url": "http://h/x", "rules": [{"min_rows": 1}]}"#).unwrap(),
            want
        );
        assert_eq!(
            parse_settings("url = \"http://h/x\"\nrules = [ { min_rows = 1 } ]").unwrap(),
            want
        );
        assert_eq!(
            parse_settings("{ url = \"http://h/x\", rules = [ { min_rows = 1 } ] }").unwrap(),
            want
        );
        // A setting that happens to be called `settings` is kept.
        assert_eq!(
            parse_settings("settings = \"s\"").unwrap(),
            [("settings".to_string(), "s".to_string())].into()
        );
        assert_eq!(parse_settings("not = [valid").unwrap_err().kind(), "config");
        assert_eq!(parse_settings("[1, 2]").unwrap_err().kind(), "config");
    }

    #[test]
    fn secrets_are_name_equals_reference() {
        assert_eq!(
            parse_secret("routing_key=env:PD").unwrap(),
            ("routing_key".to_string(), "env:PD".to_string())
        );
        assert!(parse_secret("routing_key").is_err());
        assert!(parse_secret("=env:PD").is_err());
    }

    #[test]
    fn the_sample_table_has_its_documented_oddities() {
        let rows = sample_rows();
        assert_eq!(rows.len() as u64, SAMPLE_ROWS);
        assert!(
            rows.iter()
                .all(|r| r.ends_with('\n') && r.matches('\t').count() == 4)
        );
        assert!(rows[49].starts_with("50\t\\N\t"));
        assert!(rows[76].starts_with("77\tnot-an-address\t"));
        assert!(rows[9].contains("\t\\N\t"));
    }
}
