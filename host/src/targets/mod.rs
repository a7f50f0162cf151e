//! Storage targets: where repository objects live.
//!
//! The engine and the repository see one small abstraction, [`Target`]: whole-object put, get,
//! stat, list and delete. Objects are bounded in size (chunks of a few MiB, JSON manifests), so
//! they move as whole buffers. Built-in: [`fs::FsTarget`], the local filesystem confined with
//! cap-std. Object stores and WebAssembly plugins implement the same trait.
//!
//! Copies that cannot be deleted: [`append_only::AppendOnly`] wraps a target configured with
//! `append_only = true` so this host never deletes or overwrites backup data there, and the
//! S3 target can write with S3 Object Lock ([`Target::retention`] tells until when an object
//! is locked).

use std::sync::atomic::{AtomicUsize, Ordering};

pub mod append_only;
pub mod configured;
pub mod fs;
pub mod object_lock;
pub mod retry;
pub mod s3;

use crate::error::Error;
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

/// Storage work of this process started and not yet finished: a blocking filesystem call, or
/// a stream's chunking thread. A future dropped while it waits (a stopped backup's worker)
/// leaves that work running to its end, so a chunk can still land after the caller gave up.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Counts one piece of such work while it lives (it moves into the blocking closure).
pub(crate) struct InFlight;

impl InFlight {
    pub(crate) fn start() -> InFlight {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits, at most `limit`, until no storage work of this process is running: the clean-up
/// after a stopped backup calls it so that a chunk whose write was under way is on disk (and
/// collected) rather than renamed into place after the collection listed the chunks.
pub async fn settle(limit: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while IN_FLIGHT.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Why a target operation failed. `NotFound` is "the object is missing"; `Failed` is "the
/// target itself is in trouble"; `NoSpace` lets callers speak the runbook's words.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TargetError {
    #[error("object not found on target '{target}'")]
    NotFound { target: String },
    #[error("no space left on target '{target}': {reason}")]
    NoSpace { target: String, reason: String },
    /// The target is down or overloaded for now: worth retrying.
    #[error("target '{target}' is unavailable: {reason}")]
    Unavailable { target: String, reason: String },
    #[error("target '{target}' failed: {reason}")]
    Failed { target: String, reason: String },
    /// The target keeps this object whatever we ask: an `append_only` target, or an object
    /// under S3 Object Lock. Nothing was changed.
    #[error("target '{target}' refused: {reason}")]
    Protected { target: String, reason: String },
}

impl TargetError {
    /// This failure on `object`, in the runbook's vocabulary (`Backup file not found`,
    /// `Insufficient disk space`); `detail` says what we were doing.
    pub fn at(self, object: &str, detail: impl Into<String>) -> Error {
        let detail = detail.into();
        match self {
            TargetError::NotFound { target } => Error::ObjectNotFound {
                object: object.to_string(),
                detail: format!("{detail}, target {target}"),
            },
            TargetError::NoSpace { target, reason } => Error::InsufficientSpace(format!(
                "target '{target}' ran out of space writing {object}: {reason}; free space or add storage, then retry"
            )),
            TargetError::Protected { target, reason } => Error::Refused(format!(
                "target '{target}' keeps {object}: {reason} ({detail}); nothing was changed there"
            )),
            TargetError::Failed { target, reason }
            | TargetError::Unavailable { target, reason } => Error::Storage {
                target,
                object: object.to_string(),
                reason: format!("{reason} ({detail})"),
            },
        }
    }
}

/// Whether `key` is a repository object key: `/`-separated segments of `[A-Za-z0-9._-]`, none
/// of them `.` or `..`. Every target checks keys against this, so no key can name a path or
/// object outside the repository.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

/// Refuses, on target `target`, a key that breaks the rules of [`is_valid_key`].
pub fn check_key(target: &str, key: &str) -> Result<(), TargetError> {
    if is_valid_key(key) {
        Ok(())
    } else {
        Err(invalid_key(target, key))
    }
}

/// Like [`check_key`] for a `list` prefix: a key followed by `/`, or empty for everything.
pub fn check_prefix(target: &str, prefix: &str) -> Result<(), TargetError> {
    match prefix.strip_suffix('/') {
        _ if prefix.is_empty() => Ok(()),
        Some(folder) if is_valid_key(folder) => Ok(()),
        _ => Err(invalid_key(target, prefix)),
    }
}

fn invalid_key(target: &str, key: &str) -> TargetError {
    TargetError::Failed {
        target: target.to_string(),
        reason: format!("invalid object key {key:?}"),
    }
}

/// Whether `key` is backup data: what a restore needs (chunks, manifests, the repository's
/// format file and keys), so what `append_only` targets and Object Lock protect. Everything
/// else (locks, records of runs, pins, the daemon's state) is bookkeeping the host rewrites
/// and removes as it runs. The names are the repository's (`repository::chunk_key`,
/// `manifest_key`, `FORMAT_KEY`, `keys::KEYS_KEY`; a test there keeps them in step).
pub fn is_backup_data(key: &str) -> bool {
    key.starts_with("chunks/")
        || key.starts_with("backups/")
        || key == "keys.json"
        || key == "larder-repository.json"
}

/// Until when the store keeps an object whatever anyone asks (S3 Object Lock).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Retention {
    /// `GOVERNANCE` or `COMPLIANCE`, as the store says it.
    pub mode: String,
    pub until: DateTime<Utc>,
}

impl Retention {
    /// Whether the object cannot be deleted at `now`.
    pub fn holds_at(&self, now: DateTime<Utc>) -> bool {
        self.until > now
    }
}

/// One object as listed by a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// What [`Target::put_if_absent`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The object was written: no object had the key.
    Written,
    /// An object already has the key; nothing was written.
    Exists,
    /// The target cannot create atomically (callers fall back to unique keys).
    Unsupported,
}

/// A place that stores repository objects under `/`-separated keys.
///
/// `put` must be atomic: a reader sees the whole object or none of it. It need not be durable
/// on its own: [`Target::flush`] makes every earlier `put` durable, and the repository calls it
/// before a manifest makes a backup's chunks reachable.
#[async_trait]
pub trait Target: Send + Sync {
    /// The target's configured name (used in messages).
    fn name(&self) -> &str;
    /// Where the target points, for humans (a path or URL without secrets).
    fn location(&self) -> String;
    async fn put(&self, key: &str, data: Bytes) -> Result<(), TargetError>;
    /// Writes `data` under `key` only if no object has that key, as one atomic step: of
    /// racing writers exactly one gets `Written`. Locks rely on it; a target that cannot
    /// do it keeps this default.
    async fn put_if_absent(&self, _key: &str, _data: Bytes) -> Result<Created, TargetError> {
        Ok(Created::Unsupported)
    }
    async fn get(&self, key: &str) -> Result<Bytes, TargetError>;
    /// The object's size, or `None` when it does not exist.
    async fn stat(&self, key: &str) -> Result<Option<u64>, TargetError>;
    /// All objects whose key starts with `prefix` (a folder such as `chunks/`).
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, TargetError>;
    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), TargetError>;
    /// Whether this host may not delete or overwrite backup data here (`append_only = true`
    /// without `--allow-delete`): deletion and garbage collection leave this target alone.
    fn append_only(&self) -> bool {
        false
    }
    /// The object's Object Lock retention, when the store keeps one (None: not locked, or a
    /// target without such a lock).
    async fn retention(&self, _key: &str) -> Result<Option<Retention>, TargetError> {
        Ok(None)
    }
    /// Like `put`, for an object of a backup whose retention ends at `until` (None: its
    /// policy sets no date): a target with S3 Object Lock locks it until then (at least its
    /// configured `days`). Targets without locks write it as `put` does.
    async fn put_until(
        &self,
        key: &str,
        data: Bytes,
        _until: Option<DateTime<Utc>>,
    ) -> Result<(), TargetError> {
        self.put(key, data).await
    }
    /// Keeps an object already stored (a chunk a new backup shares with older ones) locked
    /// until at least `until`, extending its Object Lock retention when it ends sooner (a
    /// lock is never shortened). Targets without locks have nothing to do.
    async fn hold_until(
        &self,
        _key: &str,
        _until: Option<DateTime<Utc>>,
    ) -> Result<(), TargetError> {
        Ok(())
    }
    /// Bytes available for new objects, when the target can tell.
    async fn available_space(&self) -> Result<Option<u64>, TargetError>;
    /// Makes every earlier `put` durable.
    async fn flush(&self) -> Result<(), TargetError>;
}
