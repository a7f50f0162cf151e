//! Repository locks: running backups and copies hold shared locks, garbage collection (delete,
//! clean-up after a failed backup) an exclusive one.
//!
//! A lock is a small JSON object under `locks/` naming its holder (purpose, host, pid, a random
//! token) and carrying a heartbeat: the holder rewrites it every [`HEARTBEAT`], and a lock not
//! refreshed for [`EXPIRY`] has expired. The protocol:
//!
//! - The exclusive lock is `locks/exclusive.json`, created atomically ([`Target::put_if_absent`]:
//!   create-if-absent on a filesystem, a conditional PUT on S3), so at most one holder exists.
//!   A target that cannot create atomically (plugins) gets a unique key
//!   `locks/exclusive-<token>.json` instead, and the check below makes two contenders back off.
//! - A shared lock is `locks/backup-<backup id>-<token>.json`.
//! - Each side writes its own lock first and then looks for locks that exclude it (the
//!   exclusive side: any other lock; the shared side: an exclusive one) and backs off if it
//!   finds a live one. Two racing processes can both back off but never both proceed.
//! - A lock is released only by its owner: release (and each heartbeat) first checks the
//!   object still carries its token.
//! - A lock of a process that is gone from this host is cleared automatically. One from
//!   another host blocks until it expires and an operator clears it with
//!   `backup-cli repository unlock` (`--force` for one that still looks alive).
//!
//! [`Target::put_if_absent`]: crate::targets::Target::put_if_absent

use super::Repository;
use crate::error::{Error, Result};
use crate::targets::{Created, TargetError, is_valid_key};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const EXCLUSIVE_KEY: &str = "locks/exclusive.json";

/// How often a holder refreshes its lock.
pub const HEARTBEAT: Duration = Duration::from_secs(30);
/// A lock not refreshed for this long has expired: its holder is presumed gone.
pub const EXPIRY: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    pub purpose: String,
    pub pid: u32,
    pub host: String,
    pub created_at: DateTime<Utc>,
    /// Random, per lock: how its owner recognises it.
    #[serde(default)]
    pub token: String,
    /// The holder's last heartbeat (locks written before heartbeats: `created_at`).
    #[serde(default)]
    pub heartbeat_at: Option<DateTime<Utc>>,
}

/// What a lock found in the repository looks like from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockState {
    /// Its holder runs (on this host), or its heartbeat is recent (another host).
    Live,
    /// No heartbeat for longer than the expiry: the holder is presumed gone.
    Expired,
    /// Its holder was on this host and no longer runs.
    Dead,
    /// The object is not a lock this version can read.
    Unreadable,
}

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

impl LockInfo {
    fn mine(purpose: &str) -> LockInfo {
        let now = Utc::now();
        LockInfo {
            purpose: purpose.to_string(),
            pid: std::process::id(),
            host: hostname(),
            created_at: now,
            token: format!("{:016x}", fastrand::u64(..)),
            heartbeat_at: Some(now),
        }
    }

    fn last_heartbeat(&self) -> DateTime<Utc> {
        self.heartbeat_at.unwrap_or(self.created_at)
    }

    fn state(&self, now: DateTime<Utc>) -> LockState {
        if self.host == hostname()
            && rustix::process::Pid::from_raw(self.pid as i32)
                // EPERM means the process exists (another user's): only ESRCH is "gone".
                .is_some_and(|pid| {
                    rustix::process::test_kill_process(pid) == Err(rustix::io::Errno::SRCH)
                })
        {
            return LockState::Dead;
        }
        let silent = (now - self.last_heartbeat()).to_std().unwrap_or_default();
        if silent > EXPIRY {
            LockState::Expired
        } else {
            LockState::Live
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} (pid {} on {}, since {}, last heartbeat {})",
            self.purpose,
            self.pid,
            self.host,
            self.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            self.last_heartbeat().format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

/// One lock object as found.
#[derive(Debug, Clone, Serialize)]
pub struct FoundLock {
    pub key: String,
    pub state: LockState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<LockInfo>,
}

impl FoundLock {
    /// The "is running; retry" message, saying how to clear the lock when its holder is gone.
    fn blocking(&self, what: &str) -> Error {
        let Some(holder) = &self.holder else {
            return Error::Locked(format!(
                "{} is not a lock this backup-cli can read; if no backup-cli is running on this repository, clear it with `backup-cli repository unlock`",
                self.key
            ));
        };
        let how = match self.state {
            LockState::Expired => format!(
                "it has had no heartbeat for over {}, so its holder looks gone: if no backup-cli runs as pid {} on {}, clear it with `backup-cli repository unlock`",
                humantime::format_duration(EXPIRY),
                holder.pid,
                holder.host
            ),
            _ => format!(
                "retry when it has finished (if that process is gone, e.g. after a crash on {}, clear the lock with `backup-cli repository unlock`; `--force` if it still looks alive)",
                holder.host
            ),
        };
        Error::Locked(format!("{} is running{what}; {how}", holder.describe()))
    }
}

/// A held lock, refreshed in the background; call [`RepoLock::release`] when done.
pub struct RepoLock {
    repo: Repository,
    key: String,
    info: LockInfo,
    /// Cleared by the heartbeat when the lock object is gone or no longer ours.
    held: Arc<AtomicBool>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
    }
}

impl RepoLock {
    /// Takes a shared lock for a backup (or a copy of one) being written.
    pub async fn shared(repo: &Repository, backup_id: &str) -> Result<RepoLock> {
        let info = LockInfo::mine(&format!("backup {backup_id}"));
        let key = format!("locks/backup-{backup_id}-{}.json", info.token);
        let lock = RepoLock::write(repo, key, info, false).await?;
        for found in repo.locks().await? {
            if found.state == LockState::Dead {
                repo.clear_lock(&found).await?;
            } else if is_exclusive_key(&found.key) {
                lock.release().await?;
                return Err(found.blocking(""));
            }
        }
        Ok(lock.beating())
    }

    /// Takes the exclusive lock for garbage collection; fails while any backup is running.
    pub async fn exclusive(repo: &Repository, purpose: &str) -> Result<RepoLock> {
        let info = LockInfo::mine(purpose);
        let lock = match RepoLock::write(repo, EXCLUSIVE_KEY.to_string(), info.clone(), true).await
        {
            Ok(lock) => lock,
            Err(Error::Locked(_)) => {
                // Taken: by a live holder (refuse), or by a dead one (clear it and retry once).
                let found = repo.lock_at(EXCLUSIVE_KEY).await?;
                match found {
                    Some(found) if found.state == LockState::Dead => {
                        repo.clear_lock(&found).await?;
                        RepoLock::write(repo, EXCLUSIVE_KEY.to_string(), info, true).await?
                    }
                    Some(found) => return Err(found.blocking("")),
                    None => RepoLock::write(repo, EXCLUSIVE_KEY.to_string(), info, true).await?,
                }
            }
            Err(e) => return Err(e),
        };
        for found in repo.locks().await? {
            // A daemon's lock says only that it runs; its backups take their own locks.
            if found.key == lock.key || is_daemon_key(&found.key) {
                continue;
            }
            if found.state == LockState::Dead {
                repo.clear_lock(&found).await?;
                continue;
            }
            lock.release().await?;
            return Err(found.blocking(" and may be writing chunks"));
        }
        Ok(lock.beating())
    }

    /// Takes the lock that lets one `backup-cli daemon` run per repository and database; a
    /// second one is refused with a message naming the first (pid, host, since). A lock left
    /// by a daemon that is gone from this host is cleared.
    pub async fn daemon(repo: &Repository, database: &str) -> Result<RepoLock> {
        let key = daemon_key(database);
        let purpose = format!("backup-cli daemon for database {database}");
        let refuse = |found: &FoundLock| {
            let Some(holder) = &found.holder else {
                return found.blocking("");
            };
            let hint = match found.state {
                LockState::Expired => format!(
                    "it has had no heartbeat for over {}: if no daemon runs as pid {} on {}, clear the lock with `backup-cli repository unlock`",
                    humantime::format_duration(EXPIRY),
                    holder.pid,
                    holder.host
                ),
                _ => format!(
                    "stop it first (e.g. `systemctl stop backup-cli-daemon` on {}); if it is gone, clear its lock with `backup-cli repository unlock` (`--force` if it still looks alive)",
                    holder.host
                ),
            };
            Error::Locked(format!(
                "another backup-cli daemon already runs for database '{database}' on this repository: pid {} on {}, since {} (last heartbeat {}); {hint}",
                holder.pid,
                holder.host,
                holder.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                holder.last_heartbeat().format("%Y-%m-%d %H:%M:%S UTC"),
            ))
        };
        let mut attempt = 0;
        let lock = loop {
            attempt += 1;
            match RepoLock::write(repo, key.clone(), LockInfo::mine(&purpose), true).await {
                Ok(lock) => break lock,
                Err(Error::Locked(_)) if attempt == 1 => match repo.lock_at(&key).await? {
                    Some(found) if found.state == LockState::Dead => {
                        repo.clear_lock(&found).await?;
                    }
                    Some(found) => return Err(refuse(&found)),
                    None => {}
                },
                Err(Error::Locked(_)) => {
                    return Err(Error::Locked(format!(
                        "another backup-cli daemon for database '{database}' took {key} at the same moment; retry"
                    )));
                }
                Err(e) => return Err(e),
            }
        };
        // Targets without atomic create get a key per holder: the first live other one wins.
        let prefix = key.trim_end_matches(".json");
        for found in repo.locks().await? {
            let same_database = found.key == key
                || found
                    .key
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('-'));
            if found.key == lock.key || !same_database {
                continue;
            }
            if found.state == LockState::Dead {
                repo.clear_lock(&found).await?;
                continue;
            }
            lock.release().await?;
            return Err(refuse(&found));
        }
        Ok(lock.beating())
    }

    /// Writes the lock object: atomically when `exclusive` and the target can (`Locked` when
    /// the key is taken), else under a key unique to this lock.
    async fn write(
        repo: &Repository,
        key: String,
        info: LockInfo,
        exclusive: bool,
    ) -> Result<RepoLock> {
        let body = Bytes::from(
            serde_json::to_vec(&info)
                .map_err(|e| Error::Repository(format!("encoding lock: {e}")))?,
        );
        let failed = |key: &str| {
            let key = key.to_string();
            move |e: TargetError| e.at(&key, "taking the repository lock")
        };
        let mut key = key;
        if exclusive {
            match repo.target().put_if_absent(&key, body.clone()).await {
                Ok(Created::Written) => {}
                Ok(Created::Exists) => {
                    // A retried create may have landed the first time: ours if it has our token.
                    let ours = repo
                        .lock_at(&key)
                        .await?
                        .and_then(|f| f.holder)
                        .is_some_and(|h| h.token == info.token);
                    if !ours {
                        return Err(Error::Locked(key));
                    }
                }
                Ok(Created::Unsupported) => {
                    // `locks/exclusive-<token>.json`, `locks/daemon-<database>-<token>.json`.
                    key = format!("{}-{}.json", key.trim_end_matches(".json"), info.token);
                    repo.target().put(&key, body).await.map_err(failed(&key))?;
                }
                Err(e) => return Err(failed(&key)(e)),
            }
        } else {
            repo.target().put(&key, body).await.map_err(failed(&key))?;
        }
        Ok(RepoLock {
            repo: repo.clone(),
            key,
            info,
            held: Arc::new(AtomicBool::new(true)),
            heartbeat: None,
        })
    }

    /// Starts the heartbeat: rewrites the lock every [`HEARTBEAT`] while it is still ours.
    fn beating(self) -> RepoLock {
        self.beating_every(HEARTBEAT)
    }

    fn beating_every(mut self, interval: Duration) -> RepoLock {
        let (repo, key, info, held) = (
            self.repo.clone(),
            self.key.clone(),
            self.info.clone(),
            self.held.clone(),
        );
        self.heartbeat = Some(tokio::spawn(async move {
            let mut info = info;
            loop {
                tokio::time::sleep(interval).await;
                if !repo.owns(&key, &info.token).await {
                    tracing::warn!(
                        "the repository lock {key} was removed or taken over while held by {}",
                        info.purpose
                    );
                    held.store(false, Ordering::SeqCst);
                    return;
                }
                info.heartbeat_at = Some(Utc::now());
                if let Ok(body) = serde_json::to_vec(&info)
                    && let Err(e) = repo.target().put(&key, Bytes::from(body)).await
                {
                    tracing::warn!("could not refresh the repository lock {key}: {e}");
                }
            }
        }));
        self
    }

    /// Whether the lock is still ours (checked against the object itself).
    pub async fn still_held(&self) -> bool {
        self.held.load(Ordering::SeqCst) && self.repo.owns(&self.key, &self.info.token).await
    }

    /// Releases the lock once the work done under it has given `result`, and returns that:
    /// the work's error first, else a failure to release (the one way to end a hold, so
    /// no caller forgets the release on an error path).
    pub async fn release_with<T>(self, result: Result<T>) -> Result<T> {
        let released = self.release().await;
        let out = result?;
        released?;
        Ok(out)
    }

    /// Releases the lock, deleting its object only if it is still ours.
    pub async fn release(mut self) -> Result<()> {
        if let Some(task) = self.heartbeat.take() {
            task.abort();
        }
        if !self.repo.owns(&self.key, &self.info.token).await {
            tracing::warn!(
                "the repository lock {} was no longer ours at release; left it alone",
                self.key
            );
            return Ok(());
        }
        self.repo
            .target()
            .delete(&self.key)
            .await
            .map_err(|e| e.at(&self.key, "releasing the repository lock"))
    }
}

fn is_exclusive_key(key: &str) -> bool {
    key == EXCLUSIVE_KEY || key.starts_with("locks/exclusive-")
}

const DAEMON_PREFIX: &str = "locks/daemon-";

/// `locks/daemon-<database, hex>.json`: hex keeps any database name a valid key, and keeps
/// `-<token>` (targets without atomic create) unambiguous.
fn daemon_key(database: &str) -> String {
    format!("{DAEMON_PREFIX}{}.json", hex::encode(database))
}

fn is_daemon_key(key: &str) -> bool {
    key.starts_with(DAEMON_PREFIX)
}

impl Repository {
    /// The lock of the daemon running for `database` on this repository, if any.
    pub async fn daemon_lock(&self, database: &str) -> Result<Option<FoundLock>> {
        self.lock_at(&daemon_key(database)).await
    }
}

/// What `repository unlock` found and did on one target.
#[derive(Debug, Clone, Serialize)]
pub struct UnlockReport {
    pub target: String,
    pub locks: Vec<UnlockedLock>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnlockedLock {
    #[serde(flatten)]
    pub lock: FoundLock,
    pub cleared: bool,
}

impl Repository {
    /// Every lock object, with its state (temporary files of interrupted writes are not
    /// locks and are left to garbage collection).
    pub async fn locks(&self) -> Result<Vec<FoundLock>> {
        let objects = self
            .target()
            .list("locks/")
            .await
            .map_err(|e| e.at("locks/", "listing locks"))?;
        let mut out = Vec::new();
        for object in objects {
            if !object.key.ends_with(".json") || !is_valid_key(&object.key) {
                continue;
            }
            if let Some(found) = self.lock_at(&object.key).await? {
                out.push(found);
            }
        }
        Ok(out)
    }

    /// The lock at `key`, if there is one.
    async fn lock_at(&self, key: &str) -> Result<Option<FoundLock>> {
        let bytes = match self.target().get(key).await {
            Ok(bytes) => bytes,
            Err(TargetError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.at(key, "reading the repository lock")),
        };
        let holder = serde_json::from_slice::<LockInfo>(&bytes).ok();
        let state = holder
            .as_ref()
            .map_or(LockState::Unreadable, |h| h.state(Utc::now()));
        Ok(Some(FoundLock {
            key: key.to_string(),
            state,
            holder,
        }))
    }

    async fn owns(&self, key: &str, token: &str) -> bool {
        matches!(
            self.lock_at(key).await,
            Ok(Some(FoundLock { holder: Some(h), .. })) if h.token == token
        )
    }

    /// Deletes a lock found earlier, if the object is still that lock (same token).
    async fn clear_lock(&self, found: &FoundLock) -> Result<bool> {
        let now = self.lock_at(&found.key).await?;
        let same = match (&now, &found.holder) {
            (
                Some(FoundLock {
                    holder: Some(a), ..
                }),
                Some(b),
            ) => a.token == b.token,
            (Some(FoundLock { holder: None, .. }), None) => true,
            _ => false,
        };
        if !same {
            return Ok(false);
        }
        if let Some(holder) = &found.holder {
            tracing::warn!("clearing lock {}: {}", found.key, holder.describe());
        }
        self.target()
            .delete(&found.key)
            .await
            .map_err(|e| e.at(&found.key, "clearing a lock"))?;
        Ok(true)
    }

    /// `repository unlock`: clears locks whose holders are gone (dead on this host, expired,
    /// or unreadable); with `force`, live-looking ones too.
    pub async fn unlock(&self, force: bool) -> Result<UnlockReport> {
        let mut locks = Vec::new();
        for found in self.locks().await? {
            let cleared = if force || found.state != LockState::Live {
                self.clear_lock(&found).await?
            } else {
                false
            };
            locks.push(UnlockedLock {
                lock: found,
                cleared,
            });
        }
        Ok(UnlockReport {
            target: self.target().name().to_string(),
            locks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::fs::FsTarget;

    async fn repo(dir: &std::path::Path) -> Repository {
        let target = Arc::new(FsTarget::open("local", dir).expect("open"));
        Repository::open_or_init(target).await.expect("init")
    }

    fn foreign(heartbeat: DateTime<Utc>) -> Vec<u8> {
        serde_json::to_vec(&LockInfo {
            purpose: "delete of backup 20260101-000000-0000".into(),
            pid: 4242,
            host: "another-host.example".into(),
            created_at: heartbeat,
            token: "feedfeedfeedfeed".into(),
            heartbeat_at: Some(heartbeat),
        })
        .expect("encode")
    }

    #[tokio::test]
    async fn only_one_exclusive_holder_and_release_checks_ownership() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = repo(tmp.path()).await;
        let first = RepoLock::exclusive(&repo, "gc one").await.expect("first");
        let second = RepoLock::exclusive(&repo, "gc two").await;
        assert!(
            matches!(second, Err(Error::Locked(_))),
            "{:?}",
            second.err()
        );
        let shared = RepoLock::shared(&repo, "20260101-000000-0001").await;
        assert!(matches!(shared, Err(Error::Locked(_))));
        // Someone else's lock now sits at the key (after an `unlock --force`): releasing
        // ours must leave it alone.
        repo.target()
            .put(EXCLUSIVE_KEY, Bytes::from(foreign(Utc::now())))
            .await
            .expect("replace");
        first.release().await.expect("release");
        assert!(
            repo.target()
                .stat(EXCLUSIVE_KEY)
                .await
                .expect("stat")
                .is_some(),
            "release deleted a lock that was not its own"
        );
    }

    #[tokio::test]
    async fn one_daemon_per_database_and_it_blocks_no_backup_or_gc() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = repo(tmp.path()).await;
        let first = RepoLock::daemon(&repo, "kitchen_pantry")
            .await
            .expect("first");
        let text = match RepoLock::daemon(&repo, "kitchen_pantry").await {
            Err(Error::Locked(text)) => text,
            other => panic!("a second daemon was not refused: {:?}", other.err()),
        };
        let pid = std::process::id().to_string();
        assert!(
            text.contains("another backup-cli daemon already runs for database 'kitchen_pantry'")
                && text.contains(&format!("pid {pid} on {}", hostname()))
                && text.contains("since "),
            "{text}"
        );
        // Another database on the same repository has its own daemon.
        let other = RepoLock::daemon(&repo, "other db/ü")
            .await
            .expect("other database");
        // Backups and garbage collection go on while daemons run.
        RepoLock::shared(&repo, "20260101-000000-0001")
            .await
            .expect("shared")
            .release()
            .await
            .expect("release");
        RepoLock::exclusive(&repo, "gc")
            .await
            .expect("exclusive beside daemon locks")
            .release()
            .await
            .expect("release");
        let found = repo
            .daemon_lock("kitchen_pantry")
            .await
            .expect("read")
            .expect("held");
        assert_eq!(found.state, LockState::Live);
        first.release().await.expect("release");
        other.release().await.expect("release");
        assert!(
            repo.daemon_lock("kitchen_pantry")
                .await
                .expect("read")
                .is_none()
        );
        // A lock left by a daemon on another host that stopped beating is refused with the
        // way to clear it.
        repo.target()
            .put(
                &daemon_key("kitchen_pantry"),
                Bytes::from(foreign(Utc::now() - chrono::Duration::hours(1))),
            )
            .await
            .expect("put");
        let text = RepoLock::daemon(&repo, "kitchen_pantry")
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(
            text.contains("pid 4242 on another-host.example")
                && text.contains("backup-cli repository unlock"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn release_with_releases_after_success_and_after_failure_keeping_the_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = repo(tmp.path()).await;
        let lock = RepoLock::exclusive(&repo, "gc").await.expect("lock");
        assert_eq!(lock.release_with(Ok(7)).await.expect("ok"), 7);
        let lock = RepoLock::exclusive(&repo, "gc again")
            .await
            .expect("released");
        let failed: Result<()> = lock
            .release_with(Err(Error::Refused("the work failed".into())))
            .await;
        assert!(
            matches!(&failed, Err(Error::Refused(m)) if m == "the work failed"),
            "{failed:?}"
        );
        RepoLock::exclusive(&repo, "after a failure")
            .await
            .expect("released after a failure too")
            .release()
            .await
            .expect("release");
    }

    #[tokio::test]
    async fn racing_exclusive_locks_never_both_win() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = repo(tmp.path()).await;
        for _ in 0..20 {
            let attempts: Vec<_> = (0..6)
                .map(|i| {
                    let repo = repo.clone();
                    tokio::spawn(async move {
                        RepoLock::exclusive(&repo, &format!("gc {i}")).await.ok()
                    })
                })
                .collect();
            let mut held = Vec::new();
            for attempt in attempts {
                if let Some(lock) = attempt.await.expect("task") {
                    held.push(lock);
                }
            }
            assert!(held.len() <= 1, "{} exclusive locks at once", held.len());
            for lock in held {
                lock.release().await.expect("release");
            }
        }
    }

    #[tokio::test]
    async fn a_foreign_lock_blocks_until_unlocked() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = repo(tmp.path()).await;
        let old = Utc::now() - chrono::Duration::hours(3);
        repo.target()
            .put(EXCLUSIVE_KEY, Bytes::from(foreign(old)))
            .await
            .expect("plant");
        let err = RepoLock::shared(&repo, "20260101-000000-0002")
            .await
            .err()
            .expect("blocked")
            .to_string();
        assert!(err.contains("another-host.example"), "{err}");
        assert!(err.contains("backup-cli repository unlock"), "{err}");
        let report = repo.unlock(false).await.expect("unlock");
        assert_eq!(report.locks.len(), 1);
        assert_eq!(report.locks[0].lock.state, LockState::Expired);
        assert!(report.locks[0].cleared);
        RepoLock::shared(&repo, "20260101-000000-0002")
            .await
            .expect("free after unlock")
            .release()
            .await
            .expect("release");

        // A live-looking foreign lock is kept unless forced.
        repo.target()
            .put(EXCLUSIVE_KEY, Bytes::from(foreign(Utc::now())))
            .await
            .expect("plant");
        let kept = repo.unlock(false).await.expect("unlock");
        assert_eq!(kept.locks[0].state_and_cleared(), (LockState::Live, false));
        let forced = repo.unlock(true).await.expect("unlock --force");
        assert_eq!(forced.locks[0].state_and_cleared(), (LockState::Live, true));
        assert!(repo.locks().await.expect("locks").is_empty());
    }

    #[tokio::test]
    async fn the_heartbeat_refreshes_the_lock_and_notices_losing_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = repo(tmp.path()).await;
        let info = LockInfo::mine("backup 20260101-000000-0003");
        let key = "locks/backup-20260101-000000-0003-test.json".to_string();
        let lock = RepoLock::write(&repo, key.clone(), info.clone(), false)
            .await
            .expect("write")
            .beating_every(Duration::from_millis(50));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let found = repo.lock_at(&key).await.expect("read").expect("there");
        let beat = found
            .holder
            .expect("holder")
            .heartbeat_at
            .expect("heartbeat");
        assert!(
            beat > info.created_at,
            "the heartbeat did not refresh the lock"
        );
        assert!(lock.still_held().await);
        // Taken over (an `unlock --force` and another process): the holder notices and
        // its heartbeat stops writing. The heartbeat checks and then writes, so a takeover
        // landing between the two is overwritten (and the other holder, whose own heartbeat
        // then finds the lock gone, is the one that stops); take over until one sticks.
        let mut tries = 0;
        loop {
            repo.target()
                .put(&key, Bytes::from(foreign(Utc::now())))
                .await
                .expect("take over");
            tokio::time::sleep(Duration::from_millis(300)).await;
            if !lock.still_held().await {
                break;
            }
            tries += 1;
            assert!(tries < 5, "the holder never noticed the takeover");
        }
        let after = repo.lock_at(&key).await.expect("read").expect("there");
        assert_eq!(after.holder.expect("holder").token, "feedfeedfeedfeed");
        lock.release().await.expect("release");
        assert!(
            repo.lock_at(&key).await.expect("read").is_some(),
            "release removed the other holder's lock"
        );
    }

    impl UnlockedLock {
        fn state_and_cleared(&self) -> (LockState, bool) {
            (self.lock.state, self.cleared)
        }
    }
}
