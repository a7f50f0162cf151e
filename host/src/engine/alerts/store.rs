//! Where the alert room keeps its [`State`]: one JSON file per repository in the
//! state folder, replaced atomically, and a lock file so two runs (cron and the daemon) never
//! deliver the same event twice.

use super::lifecycle::State;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The state file of one repository, and its lock held while open.
pub struct Stored {
    pub path: PathBuf,
    pub state: State,
    _lock: Option<std::fs::File>,
}

/// How long a run waits for another run's lock before it works without it (with a warning).
const LOCK_WAIT: Duration = Duration::from_secs(120);

/// The file name for a scope: a digest, so any repository location and database name fit.
pub fn file_name(identity: &str) -> String {
    let digest = crate::repository::sha256_hex(identity.as_bytes());
    format!("alerts-{}.json", &digest[..16])
}

/// Opens (creating the folder) and locks the state of `identity`; a missing file is an empty state.
pub async fn open(dir: &Path, identity: &str) -> Result<Stored> {
    let fail = |what: &str, e: std::io::Error| {
        Error::Config(format!(
            "alert state in {}: {what}: {e} (set [alerts] state_dir to a writable folder)",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(|e| fail("cannot create the folder", e))?;
    let path = dir.join(file_name(identity));
    let lock_path = path.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| fail("cannot open the lock file", e))?;
    let started = Instant::now();
    let locked = loop {
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => break true,
            Err(_) if started.elapsed() < LOCK_WAIT => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => {
                tracing::warn!(
                    "another run has held {} for {}s ({e}); going on without it",
                    lock_path.display(),
                    LOCK_WAIT.as_secs()
                );
                break false;
            }
        }
    };
    let state = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(
                "alert state {} is unreadable ({e}); starting afresh (it is kept as .corrupt)",
                path.display()
            );
            let _ = std::fs::rename(&path, path.with_extension("corrupt"));
            State::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
        Err(e) => return Err(fail("cannot read the state file", e)),
    };
    Ok(Stored {
        path,
        state,
        _lock: locked.then_some(lock),
    })
}

/// The state of `identity` as last saved, read without the lock (for metrics and the status
/// page, which must not wait for a run that is delivering): missing or unreadable is empty.
pub fn peek(dir: &Path, identity: &str) -> State {
    std::fs::read(dir.join(file_name(identity)))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

impl Stored {
    /// Writes the state back (temporary file, then rename).
    pub fn save(&self) -> Result<()> {
        let fail = |e: std::io::Error| {
            Error::Config(format!(
                "cannot write the alert state {}: {e}",
                self.path.display()
            ))
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
        let body = serde_json::to_vec_pretty(&self.state)
            .map_err(|e| Error::Config(format!("cannot encode the alert state: {e}")))?;
        std::io::Write::write_all(&mut temp, &body).map_err(fail)?;
        temp.persist(&self.path).map_err(|e| fail(e.error))?;
        Ok(())
    }
}
