//! Storage targets: where repository objects live.
//!
//! The engine and the repository see one small abstraction, [`Target`]: whole-object put, get,
//! stat, list and delete. Objects are bounded in size (chunks of a few MiB, JSON manifests), so
//! they move as whole buffers. Built-in: [`fs::FsTarget`], the local filesystem confined with
//! cap-std. Object stores and WebAssembly plugins implement the same trait.

pub mod configured;
pub mod fs;
pub mod retry;
pub mod s3;

use async_trait::async_trait;
use bytes::Bytes;

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

/// One object as listed by a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
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
    async fn get(&self, key: &str) -> Result<Bytes, TargetError>;
    /// The object's size, or `None` when it does not exist.
    async fn stat(&self, key: &str) -> Result<Option<u64>, TargetError>;
    /// All objects whose key starts with `prefix` (a folder such as `chunks/`).
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, TargetError>;
    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), TargetError>;
    /// Bytes available for new objects, when the target can tell.
    async fn available_space(&self) -> Result<Option<u64>, TargetError>;
    /// Makes every earlier `put` durable.
    async fn flush(&self) -> Result<(), TargetError>;
}
