//! Repository locks: running backups hold shared locks, garbage collection an exclusive one.
//!
//! A lock is a small JSON object under `locks/`. Each side writes its own lock first and then
//! looks for the other kind, so two racing processes can both back off but never both proceed.
//! A lock left by a process that died on this host is stale and is cleared automatically.

use super::Repository;
use crate::error::{Error, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

const EXCLUSIVE_KEY: &str = "locks/exclusive.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    pub purpose: String,
    pub pid: u32,
    pub host: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A held lock; call [`RepoLock::release`] when done (a crashed holder is detected as stale).
pub struct RepoLock {
    repo: Repository,
    key: String,
}

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

impl LockInfo {
    fn mine(purpose: &str) -> LockInfo {
        LockInfo {
            purpose: purpose.to_string(),
            pid: std::process::id(),
            host: hostname(),
            created_at: chrono::Utc::now(),
        }
    }

    /// A lock from a process on this host that no longer runs.
    fn is_stale(&self) -> bool {
        self.host == hostname()
            && rustix::process::Pid::from_raw(self.pid as i32)
                .is_some_and(|pid| rustix::process::test_kill_process(pid).is_err())
    }

    fn describe(&self) -> String {
        format!(
            "{} (pid {} on {}, since {})",
            self.purpose,
            self.pid,
            self.host,
            self.created_at.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

impl RepoLock {
    /// Takes a shared lock for a backup being written.
    pub async fn shared(repo: &Repository, backup_id: &str) -> Result<RepoLock> {
        let lock = RepoLock::write(
            repo,
            format!("locks/backup-{backup_id}.json"),
            &format!("backup {backup_id}"),
        )
        .await?;
        if let Some(holder) = live_lock(repo, EXCLUSIVE_KEY).await? {
            lock.release().await?;
            return Err(Error::Locked(format!(
                "{} is running; retry when it has finished",
                holder.describe()
            )));
        }
        Ok(lock)
    }

    /// Takes the exclusive lock for garbage collection; fails while any backup is running.
    pub async fn exclusive(repo: &Repository, purpose: &str) -> Result<RepoLock> {
        if let Some(holder) = live_lock(repo, EXCLUSIVE_KEY).await? {
            return Err(Error::Locked(format!(
                "{} is running; retry when it has finished",
                holder.describe()
            )));
        }
        let lock = RepoLock::write(repo, EXCLUSIVE_KEY.to_string(), purpose).await?;
        let others = repo
            .target()
            .list("locks/")
            .await
            .map_err(|e| Error::from_target(e, "locks/", "listing locks"))?;
        for other in others.iter().filter(|o| o.key != EXCLUSIVE_KEY) {
            if let Some(holder) = live_lock(repo, &other.key).await? {
                lock.release().await?;
                return Err(Error::Locked(format!(
                    "{} is running and may be writing chunks; retry when it has finished",
                    holder.describe()
                )));
            }
        }
        Ok(lock)
    }

    async fn write(repo: &Repository, key: String, purpose: &str) -> Result<RepoLock> {
        let body = serde_json::to_vec(&LockInfo::mine(purpose))
            .map_err(|e| Error::Repository(format!("encoding lock: {e}")))?;
        repo.target()
            .put(&key, Bytes::from(body))
            .await
            .map_err(|e| Error::from_target(e, &key, "taking the repository lock"))?;
        Ok(RepoLock {
            repo: repo.clone(),
            key,
        })
    }

    pub async fn release(self) -> Result<()> {
        self.repo
            .target()
            .delete(&self.key)
            .await
            .map_err(|e| Error::from_target(e, &self.key, "releasing the repository lock"))
    }
}

/// Reads a lock; clears and ignores it when stale.
async fn live_lock(repo: &Repository, key: &str) -> Result<Option<LockInfo>> {
    let bytes = match repo.target().get(key).await {
        Ok(bytes) => bytes,
        Err(crate::targets::TargetError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(Error::from_target(e, key, "reading the repository lock")),
    };
    let Ok(info) = serde_json::from_slice::<LockInfo>(&bytes) else {
        return Ok(None);
    };
    if info.is_stale() {
        tracing::warn!("clearing stale lock {key}: {}", info.describe());
        repo.target()
            .delete(key)
            .await
            .map_err(|e| Error::from_target(e, key, "clearing a stale lock"))?;
        return Ok(None);
    }
    Ok(Some(info))
}
