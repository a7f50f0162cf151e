//! The built-in S3 target (any S3-compatible store), through opendal.
//!
//! With `object_lock` set, writes carry Content-MD5 (S3 refuses writes to a bucket with
//! default retention without it), and with `{ mode }` (and optionally `days`) every backup object
//! ([`is_backup_data`]) is written locked through [`LockClient`], which opendal cannot do:
//! until its backup's retention ends ([`Target::put_until`]), at least `days` from the write.
//! A chunk a new backup shares with older ones has its lock extended to the new backup's
//! date ([`Target::hold_until`]), so no chunk is unlocked while a locked backup needs it.
//! Whatever is configured, [`Target::retention`] reads an object's retention, so deletions
//! see a bucket's default retention too.

use super::object_lock::{LockClient, LockSettings};
use super::{
    Created, ObjectInfo, Retention, Target, TargetError, check_key, check_prefix, is_backup_data,
};
use crate::config::{ObjectLockConfig, ObjectLockMode};
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use opendal::{ErrorKind, Operator};

pub struct S3Target {
    name: String,
    location: String,
    op: Operator,
    lock: LockClient,
    /// `object_lock` as configured.
    object_lock: Option<ObjectLockConfig>,
}

/// Connection settings, secrets already resolved.
pub struct S3Settings<'a> {
    pub bucket: &'a str,
    pub endpoint: Option<&'a str>,
    pub region: &'a str,
    pub root: &'a str,
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
    pub object_lock: Option<&'a ObjectLockConfig>,
}

impl S3Target {
    pub fn new(name: &str, s: &S3Settings<'_>) -> Result<S3Target, TargetError> {
        // opendal's HTTP client uses rustls without a built-in provider; use ring, as the
        // PostgreSQL connections do (a second install attempt is harmless).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = opendal::services::S3::default()
            .bucket(s.bucket)
            .region(s.region)
            .root(&format!("/{}", s.root.trim_matches('/')))
            .access_key_id(s.access_key_id)
            .secret_access_key(s.secret_access_key)
            .disable_config_load()
            .disable_ec2_metadata();
        if let Some(endpoint) = s.endpoint {
            builder = builder.endpoint(endpoint);
        }
        if let Some(token) = s.session_token {
            builder = builder.session_token(token);
        }
        if s.object_lock.is_some() {
            builder = builder.checksum_algorithm("md5");
        }
        let op = Operator::new(builder)
            .map_err(|e| TargetError::Failed {
                target: name.to_string(),
                reason: format!("invalid S3 settings: {e}"),
            })?
            .finish();
        let lock = LockClient::new(&LockSettings {
            target: name,
            bucket: s.bucket,
            endpoint: s.endpoint,
            region: s.region,
            root: s.root,
            access_key_id: s.access_key_id,
            secret_access_key: s.secret_access_key,
            session_token: s.session_token,
        })?;
        Ok(S3Target {
            name: name.to_string(),
            location: format!(
                "s3://{}/{} ({})",
                s.bucket,
                s.root.trim_matches('/'),
                s.endpoint.unwrap_or("AWS")
            ),
            op,
            lock,
            object_lock: s.object_lock.cloned(),
        })
    }

    /// The mode and date `key` is locked with when written now for a backup whose
    /// retention ends at `until`: the later of that and `days` from now. None: the object
    /// is not locked by this host (not backup data, no `{ mode }` configured, or a date
    /// already past). A chunk or manifest with no date at all is refused: the lock would
    /// be missing, not merely short.
    fn lock_for(
        &self,
        key: &str,
        until: Option<DateTime<Utc>>,
    ) -> Result<Option<(ObjectLockMode, DateTime<Utc>)>, TargetError> {
        let Some(ObjectLockConfig::Retain { mode, days }) = &self.object_lock else {
            return Ok(None);
        };
        if !is_backup_data(key) {
            return Ok(None);
        }
        let now = Utc::now();
        let floor = days.map(|d| now + chrono::Duration::days(i64::from(d)));
        match until.max(floor) {
            Some(date) if date > now => Ok(Some((*mode, date))),
            Some(_) => Ok(None),
            None if key.starts_with("chunks/") || key.starts_with("backups/") => {
                Err(TargetError::Failed {
                    target: self.name.clone(),
                    reason: format!(
                        "cannot lock {key}: object_lock on this target has no `days` and the backup's retention sets no date (no policy governs it, or its policy keeps by count only); set object_lock = {{ mode = \"{}\", days = N }} as the fallback, or give the backup's retention a keep_within",
                        mode.header_value().to_ascii_lowercase()
                    ),
                })
            }
            // The repository's format file and key slots: locked by the next backup's hold.
            None => Ok(None),
        }
    }

    fn error(&self, what: &str, key: &str, e: opendal::Error) -> TargetError {
        let target = self.name.clone();
        let mut reason = format!("{what} {key}: {e}");
        // A bucket with default retention refuses writes without a checksum.
        if reason.contains("Content-MD5") && self.object_lock.is_none() {
            reason.push_str(
                "; the bucket uses S3 Object Lock: set object_lock = \"bucket-default\" (or { mode }) on this target",
            );
        }
        match e.kind() {
            ErrorKind::NotFound => TargetError::NotFound { target },
            _ if e.is_temporary() => TargetError::Unavailable { target, reason },
            _ => TargetError::Failed { target, reason },
        }
    }

    fn check(&self, key: &str) -> Result<(), TargetError> {
        check_key(&self.name, key)
    }
}

#[async_trait]
impl Target for S3Target {
    fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), TargetError> {
        self.put_until(key, data, None).await
    }

    async fn put_until(
        &self,
        key: &str,
        data: Bytes,
        until: Option<DateTime<Utc>>,
    ) -> Result<(), TargetError> {
        self.check(key)?;
        if let Some((mode, date)) = self.lock_for(key, until)? {
            return self
                .lock
                .put(key, data, mode.header_value(), date, false)
                .await
                .map(|_| ());
        }
        self.op
            .write(key, data)
            .await
            .map_err(|e| self.error("PUT", key, e))?;
        // On a bucket with default retention the object got the bucket's period; a backup
        // kept longer (its manifest, above all, which no later hold revisits) is extended to
        // its own date, in the mode the bucket gave it.
        if matches!(self.object_lock, Some(ObjectLockConfig::BucketDefault(_)))
            && is_backup_data(key)
        {
            self.hold_until(key, until).await?;
        }
        Ok(())
    }

    /// A conditional PUT (`If-None-Match: *`), which AWS S3, MinIO and moto honour; a server
    /// that answers it with "not implemented" makes the locks fall back to unique keys.
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<Created, TargetError> {
        self.check(key)?;
        if let Some((mode, date)) = self.lock_for(key, None)? {
            return self
                .lock
                .put(key, data, mode.header_value(), date, true)
                .await;
        }
        match self.op.write_with(key, data).if_not_exists(true).await {
            Ok(_) => Ok(Created::Written),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(Created::Exists),
            Err(e) if e.kind() == ErrorKind::Unsupported => Ok(Created::Unsupported),
            Err(e) => Err(self.error("PUT (if absent)", key, e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, TargetError> {
        self.check(key)?;
        self.op
            .read(key)
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| self.error("GET", key, e))
    }

    async fn stat(&self, key: &str) -> Result<Option<u64>, TargetError> {
        self.check(key)?;
        match self.op.stat(key).await {
            Ok(meta) => Ok(Some(meta.content_length())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error("HEAD", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, TargetError> {
        check_prefix(&self.name, prefix)?;
        let entries = match self.op.list_with(prefix).recursive(true).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.error("LIST", prefix, e)),
        };
        let mut out: Vec<ObjectInfo> = entries
            .into_iter()
            .filter(|e| e.metadata().is_file() && e.path().starts_with(prefix))
            .map(|e| ObjectInfo {
                size: e.metadata().content_length(),
                key: e.path().to_string(),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), TargetError> {
        self.check(key)?;
        self.op
            .delete(key)
            .await
            .map_err(|e| self.error("DELETE", key, e))
    }

    async fn retention(&self, key: &str) -> Result<Option<Retention>, TargetError> {
        self.check(key)?;
        self.lock.retention(key).await
    }

    /// HEAD, then PutObjectRetention when the lock ends before the date this target would
    /// lock the object with now (`{ mode }`), or before the backup's date (`bucket-default`,
    /// keeping the mode the bucket gave the object).
    async fn hold_until(&self, key: &str, until: Option<DateTime<Utc>>) -> Result<(), TargetError> {
        self.check(key)?;
        let (mode, date) = match &self.object_lock {
            None => return Ok(()),
            Some(ObjectLockConfig::Retain { .. }) => match self.lock_for(key, until)? {
                Some((mode, date)) => (Some(mode.header_value()), date),
                None => return Ok(()),
            },
            Some(ObjectLockConfig::BucketDefault(_)) => match until {
                Some(date) if date > Utc::now() => (None, date),
                _ => return Ok(()),
            },
        };
        let held = self.lock.retention(key).await?;
        if held.as_ref().is_some_and(|r| r.until >= date) {
            return Ok(());
        }
        // A lock keeps its mode (compliance cannot become governance); an object the bucket
        // locked by default is extended in the bucket's mode.
        let mode = match (&held, mode) {
            (Some(r), _) => r.mode.clone(),
            (None, Some(mode)) => mode.to_string(),
            (None, None) => return Ok(()),
        };
        self.lock.extend(key, &mode, date).await
    }

    async fn available_space(&self) -> Result<Option<u64>, TargetError> {
        Ok(None)
    }

    async fn flush(&self) -> Result<(), TargetError> {
        // An acknowledged S3 PUT is durable.
        Ok(())
    }
}
