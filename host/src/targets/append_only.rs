//! `append_only = true` on a `[[targets]]` entry: this host writes new backup data there but
//! never deletes or overwrites it, so the credentials it holds for that target can be put-only
//! and a compromised backup host cannot destroy that copy.
//!
//! [`AppendOnly`] wraps the target. Backup data ([`is_backup_data`]: chunks, manifests, the
//! repository's format file and keys) is written only where no object has the key yet; a chunk
//! already there is left as it is (its name is its content), any other existing object is kept
//! and the write refused. Deleting backup data is refused. Bookkeeping (locks, records, pins)
//! passes through. `backup delete`, `backup prune` and garbage collection ask
//! [`Target::append_only`] first and leave the target alone, saying so; a separate
//! maintenance host that holds delete rights runs them with `--allow-delete`, which opens the
//! target without this wrapper.

use super::{Created, ObjectInfo, Retention, Target, TargetError, is_backup_data};
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::sync::Arc;

pub struct AppendOnly {
    inner: Arc<dyn Target>,
}

impl AppendOnly {
    pub fn wrap(inner: Arc<dyn Target>) -> Arc<dyn Target> {
        Arc::new(AppendOnly { inner })
    }

    fn refuse(&self, what: &str, key: &str) -> TargetError {
        TargetError::Protected {
            target: self.inner.name().to_string(),
            reason: format!(
                "the target is append_only: this host does not {what} {key}; run that from a maintenance host with --allow-delete"
            ),
        }
    }
}

#[async_trait]
impl Target for AppendOnly {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), TargetError> {
        if !is_backup_data(key) {
            return self.inner.put(key, data).await;
        }
        let created = match self.inner.put_if_absent(key, data.clone()).await? {
            Created::Unsupported => match self.inner.stat(key).await? {
                Some(_) => Created::Exists,
                None => {
                    self.inner.put(key, data).await?;
                    Created::Written
                }
            },
            created => created,
        };
        match created {
            Created::Exists if !key.starts_with("chunks/") => Err(self.refuse("overwrite", key)),
            _ => Ok(()),
        }
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<Created, TargetError> {
        self.inner.put_if_absent(key, data).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, TargetError> {
        self.inner.get(key).await
    }

    async fn stat(&self, key: &str) -> Result<Option<u64>, TargetError> {
        self.inner.stat(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, TargetError> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<(), TargetError> {
        if is_backup_data(key) {
            return Err(self.refuse("delete", key));
        }
        self.inner.delete(key).await
    }

    fn append_only(&self) -> bool {
        true
    }

    async fn retention(&self, key: &str) -> Result<Option<Retention>, TargetError> {
        self.inner.retention(key).await
    }

    /// As `put` does, with the backup's retention passed on to the store. Without a date the
    /// atomic create of `put` is used; with one (S3 Object Lock) the write must carry the
    /// lock, so an existing object is looked for first (a locked, versioned bucket keeps the
    /// locked version whatever a racing writer does).
    async fn put_until(
        &self,
        key: &str,
        data: Bytes,
        until: Option<DateTime<Utc>>,
    ) -> Result<(), TargetError> {
        if !is_backup_data(key) {
            return self.inner.put_until(key, data, until).await;
        }
        if until.is_none() {
            return self.put(key, data).await;
        }
        match self.inner.stat(key).await? {
            Some(_) if key.starts_with("chunks/") => self.inner.hold_until(key, until).await,
            Some(_) => Err(self.refuse("overwrite", key)),
            None => self.inner.put_until(key, data, until).await,
        }
    }

    async fn hold_until(&self, key: &str, until: Option<DateTime<Utc>>) -> Result<(), TargetError> {
        self.inner.hold_until(key, until).await
    }

    async fn available_space(&self) -> Result<Option<u64>, TargetError> {
        self.inner.available_space().await
    }

    async fn flush(&self) -> Result<(), TargetError> {
        self.inner.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::fs::FsTarget;

    fn folder() -> (tempfile::TempDir, Arc<dyn Target>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = FsTarget::open("vault", dir.path()).expect("open folder");
        (dir, AppendOnly::wrap(Arc::new(target)))
    }

    #[tokio::test]
    async fn backup_data_is_written_once_and_never_deleted() {
        let (_dir, target) = folder();
        let chunk = "chunks/ab/abcd";
        target
            .put(chunk, Bytes::from_static(b"one"))
            .await
            .expect("new chunk");
        // The same chunk again (content-addressed): accepted, the stored object unchanged.
        target
            .put(chunk, Bytes::from_static(b"one"))
            .await
            .expect("same chunk");
        let manifest = "backups/20261201-020000-abcd.json";
        target
            .put(manifest, Bytes::from_static(b"{}"))
            .await
            .expect("new manifest");
        let overwrite = target
            .put(manifest, Bytes::from_static(b"{\"edited\":1}"))
            .await;
        assert!(
            matches!(&overwrite, Err(TargetError::Protected { reason, .. }) if reason.contains("overwrite")),
            "{overwrite:?}"
        );
        assert_eq!(
            target.get(manifest).await.expect("kept"),
            Bytes::from_static(b"{}")
        );
        for key in [chunk, manifest] {
            let deleted = target.delete(key).await;
            assert!(
                matches!(&deleted, Err(TargetError::Protected { reason, .. }) if reason.contains("--allow-delete")),
                "{deleted:?}"
            );
            assert!(
                target.stat(key).await.expect("stat").is_some(),
                "{key} kept"
            );
        }
        assert!(target.append_only());
    }

    #[tokio::test]
    async fn bookkeeping_is_rewritten_and_removed() {
        let (_dir, target) = folder();
        let lock = "locks/exclusive.json";
        target
            .put(lock, Bytes::from_static(b"a"))
            .await
            .expect("lock");
        target
            .put(lock, Bytes::from_static(b"b"))
            .await
            .expect("heartbeat");
        assert_eq!(
            target.get(lock).await.expect("read"),
            Bytes::from_static(b"b")
        );
        target.delete(lock).await.expect("release");
        assert_eq!(target.stat(lock).await.expect("stat"), None);
    }
}
