//! The built-in local filesystem target.
//!
//! All access goes through a cap-std [`Dir`] opened on the repository root, so no key can reach
//! outside it (`..`, absolute paths and symlinks out are rejected by the OS-level sandbox).
//! Writes go to a temporary file that is renamed into place, so readers never see a partial
//! object. Durability is batched: the repository flushes before any manifest refers to new
//! chunks, and `flush` makes what this process wrote since the last flush durable. When that
//! is a few objects (an incremental, a schema-only backup, a manifest, a lock) it fsyncs each
//! of them and their folders; when it is more (a full backup's chunks) it syncs the whole
//! filesystem once (syncfs), which was 3–15 % faster than fsyncing each new file and its
//! folder at scale 1 (BENCHMARKS.md). syncfs also waits for every other writer's dirty data
//! on that filesystem (a busy PostgreSQL on the same disk, other backups): 0.5 s of a 0.55 s
//! incremental on a shared machine, against a few ms for its handful of files.
//! Objects hold the database's contents, so folders are made 0700 and objects 0600 whatever
//! the umask (0750/0640 with `[repository] group_access`). Every key is checked against the
//! rules of [`super::is_valid_key`] before it reaches the filesystem.

use super::{Created, ObjectInfo, Target, TargetError, check_key, check_prefix};
use async_trait::async_trait;
use bytes::Bytes;
use cap_std::ambient_authority;
use cap_std::fs::{Dir, Permissions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The permissions of the folders and objects the target creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    pub folder: u32,
    pub object: u32,
}

impl Modes {
    /// Owner only (0700/0600), or owner and group reading (0750/0640).
    pub fn new(group_access: bool) -> Modes {
        if group_access {
            Modes {
                folder: 0o750,
                object: 0o640,
            }
        } else {
            Modes {
                folder: 0o700,
                object: 0o600,
            }
        }
    }
}

impl Default for Modes {
    fn default() -> Self {
        Modes::new(false)
    }
}

fn mode(bits: u32) -> std::fs::Permissions {
    std::fs::Permissions::from_mode(bits)
}

/// Up to this many objects written since the last flush are made durable one by one.
const SYNC_ONE_BY_ONE: usize = 64;

/// What this process changed on filesystem targets since their last flush: objects written
/// or removed (by root folder and key) while they are few, else the root folders to syncfs.
/// Shared by every [`FsTarget`] of the process, so that a flush covers what another instance
/// on the same folder wrote, as syncfs always did.
struct Unsynced {
    objects: Vec<(Arc<Dir>, String, Change)>,
    whole: Vec<Arc<Dir>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    Written,
    Removed,
}

static UNSYNCED: std::sync::Mutex<Unsynced> = std::sync::Mutex::new(Unsynced {
    objects: Vec::new(),
    whole: Vec::new(),
});

fn unsynced() -> std::sync::MutexGuard<'static, Unsynced> {
    UNSYNCED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Notes an object written or removed under `dir`, to be made durable by the next flush.
fn note(dir: &Arc<Dir>, key: &str, change: Change) {
    let mut pending = unsynced();
    if pending.whole.iter().any(|d| Arc::ptr_eq(d, dir)) {
        return;
    }
    if pending.objects.len() < SYNC_ONE_BY_ONE {
        pending.objects.push((dir.clone(), key.to_string(), change));
        return;
    }
    let objects = std::mem::take(&mut pending.objects);
    for root in objects.into_iter().map(|(d, _, _)| d).chain([dir.clone()]) {
        if !pending.whole.iter().any(|d| Arc::ptr_eq(d, &root)) {
            pending.whole.push(root);
        }
    }
}

/// Makes everything noted durable: syncfs of each root that had many changes, else an
/// fsync of each object written and of the folders holding what changed (a rename or a
/// removal is durable once its folder is). Put back what could not be synced, so that a
/// later flush tries again.
fn sync_noted() -> std::io::Result<()> {
    // One flush at a time: a second one waits until what the first took is durable, then
    // takes what was noted since (it must not return while the first is still syncing).
    static SYNCING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = SYNCING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Unsynced { objects, whole } = std::mem::replace(
        &mut *unsynced(),
        Unsynced {
            objects: Vec::new(),
            whole: Vec::new(),
        },
    );
    let result = (|| {
        for root in &whole {
            rustix::fs::syncfs(&root.open(".")?).map_err(std::io::Error::from)?;
        }
        let mut folders: Vec<(&Arc<Dir>, PathBuf)> = Vec::new();
        for (root, key, change) in &objects {
            if *change == Change::Written {
                match root.open(key) {
                    Ok(file) => file.sync_all()?,
                    // Removed since (a lock released): its folder's sync covers that.
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            // Its folder and every folder above it: one of them may be new.
            let mut folder = Path::new(key).parent();
            while let Some(path) = folder {
                let path_or_root = if path.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    path
                };
                if !folders
                    .iter()
                    .any(|(d, p)| Arc::ptr_eq(d, root) && p == path_or_root)
                {
                    folders.push((root, path_or_root.to_path_buf()));
                }
                folder = path.parent();
            }
        }
        for (root, path) in &folders {
            match root.open(path) {
                Ok(folder) => folder.sync_all()?,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let mut pending = unsynced();
        pending.whole.extend(whole);
        pending.objects.extend(objects);
    }
    result
}

pub struct FsTarget {
    name: String,
    root: PathBuf,
    /// Opened on first use. Reading never creates the folder: a missing repository folder is
    /// reported as missing, not silently made (a typo'd path or cron's working directory).
    /// The first `put` creates it, but only its last component, so a typo in a parent
    /// folder fails instead of building a tree.
    dir: OnceLock<Arc<Dir>>,
    modes: Modes,
}

impl FsTarget {
    /// The folder `root` as a target, without creating anything; what it creates later is
    /// owner-only.
    pub fn open(name: &str, root: &Path) -> Result<FsTarget, TargetError> {
        FsTarget::open_with(name, root, Modes::default())
    }

    /// Like [`FsTarget::open`]; the folders and objects it creates get `modes`.
    pub fn open_with(name: &str, root: &Path, modes: Modes) -> Result<FsTarget, TargetError> {
        let target = FsTarget {
            name: name.to_string(),
            root: root.to_path_buf(),
            dir: OnceLock::new(),
            modes,
        };
        match target.dir(false) {
            Ok(_) | Err(TargetError::NotFound { .. }) => Ok(target),
            Err(e) => Err(e),
        }
    }

    /// The folder `root` as a target, creating it and its parents (`backup-cli init`); the
    /// repository folder itself gets the folder mode.
    pub fn create(name: &str, root: &Path, modes: Modes) -> Result<FsTarget, TargetError> {
        let fail = |e: std::io::Error| TargetError::Failed {
            target: name.to_string(),
            reason: format!("cannot create {}: {e}", root.display()),
        };
        if !root.exists() {
            std::fs::create_dir_all(root).map_err(fail)?;
            std::fs::set_permissions(root, mode(modes.folder)).map_err(fail)?;
        }
        FsTarget::open_with(name, root, modes)
    }

    /// The opened root folder; `create` makes its last component when it is missing.
    fn dir(&self, create: bool) -> Result<Arc<Dir>, TargetError> {
        if let Some(dir) = self.dir.get() {
            return Ok(dir.clone());
        }
        let fail = |e: std::io::Error| TargetError::Failed {
            target: self.name.clone(),
            reason: format!("cannot open {}: {e}", self.root.display()),
        };
        let opened = match Dir::open_ambient_dir(&self.root, ambient_authority()) {
            Ok(dir) => dir,
            Err(e) if e.kind() == ErrorKind::NotFound && create => {
                match std::fs::create_dir(&self.root) {
                    Ok(()) => std::fs::set_permissions(&self.root, mode(self.modes.folder)),
                    // Another process (a concurrent first backup) created it just now.
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
                    Err(e) => Err(e),
                }
                .map_err(|e| TargetError::Failed {
                    target: self.name.clone(),
                    reason: if e.kind() == ErrorKind::NotFound {
                        format!(
                            "cannot create {}: its parent folder does not exist (is the path right? `backup-cli init` creates the whole path)",
                            self.root.display()
                        )
                    } else {
                        format!("cannot create {}: {e}", self.root.display())
                    },
                })?;
                Dir::open_ambient_dir(&self.root, ambient_authority()).map_err(fail)?
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(TargetError::NotFound {
                    target: self.name.clone(),
                });
            }
            Err(e) => return Err(fail(e)),
        };
        Ok(self.dir.get_or_init(|| Arc::new(opened)).clone())
    }

    fn err(&self, key: &str, e: std::io::Error) -> TargetError {
        io_error(&self.name, key, e)
    }

    /// Runs blocking filesystem work off the async threads. `None`: the root folder does not
    /// exist (and `create` was false).
    async fn blocking<T: Send + 'static>(
        &self,
        key: &str,
        create: bool,
        f: impl FnOnce(&Dir) -> std::io::Result<T> + Send + 'static,
    ) -> Result<Option<T>, TargetError> {
        let dir = match self.dir(create) {
            Ok(dir) => dir,
            Err(TargetError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let name = self.name.clone();
        let key_owned = key.to_string();
        let running = super::InFlight::start();
        tokio::task::spawn_blocking(move || {
            let _running = running;
            f(&dir)
        })
        .await
        .map_err(|e| TargetError::Failed {
            target: name,
            reason: format!("worker failed: {e}"),
        })?
        .map(Some)
        .map_err(|e| self.err(&key_owned, e))
    }

    /// Notes `key` for the next flush (see [`sync_noted`]).
    fn note(&self, key: &str, change: Change) {
        if let Some(dir) = self.dir.get() {
            note(dir, key, change);
        }
    }

    fn not_found(&self) -> TargetError {
        TargetError::NotFound {
            target: self.name.clone(),
        }
    }
}

fn io_error(target: &str, key: &str, e: std::io::Error) -> TargetError {
    match e.kind() {
        ErrorKind::NotFound => TargetError::NotFound {
            target: target.to_string(),
        },
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => TargetError::NoSpace {
            target: target.to_string(),
            reason: e.to_string(),
        },
        _ => TargetError::Failed {
            target: target.to_string(),
            reason: format!("{key}: {e}"),
        },
    }
}

/// Creates the folders of `key` that are missing, each with the folder mode.
fn create_parents(dir: &Dir, key: &str, modes: Modes) -> std::io::Result<()> {
    let Some(parent) = Path::new(key).parent() else {
        return Ok(());
    };
    let mut path = PathBuf::new();
    for part in parent.components() {
        path.push(part);
        match dir.create_dir(&path) {
            Ok(()) => dir.set_permissions(&path, Permissions::from_std(mode(modes.folder)))?,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes `data` to a new temporary file beside `key` (the object mode set before any byte
/// is written) and hands it to `place`, removing it if that fails. The key's folders are made
/// only when the temporary file cannot be created for want of them: a backup writing
/// thousands of chunks into folders that exist spends no `mkdir` on each.
fn with_temporary(
    dir: &Dir,
    key: &str,
    data: &[u8],
    modes: Modes,
    place: impl FnOnce(&str) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = format!("{key}.tmp-{}-{:08x}", std::process::id(), fastrand::u32(..));
    let mut options = cap_std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    let mut file = match dir.open_with(&tmp, &options) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            create_parents(dir, key, modes)?;
            dir.open_with(&tmp, &options)?
        }
        opened => opened?,
    };
    let result = (|| {
        file.set_permissions(Permissions::from_std(mode(modes.object)))?;
        file.write_all(data)?;
        drop(file);
        place(&tmp)
    })();
    if result.is_err() {
        let _ = dir.remove_file(&tmp);
    }
    result
}

fn write_atomically(dir: &Dir, key: &str, data: &[u8], modes: Modes) -> std::io::Result<()> {
    with_temporary(dir, key, data, modes, |tmp| dir.rename(tmp, dir, key))
}

/// Creates `key` only if it does not exist: a hard link fails atomically when the name is
/// taken, and readers see the whole object or none of it.
fn create_exclusively(dir: &Dir, key: &str, data: &[u8], modes: Modes) -> std::io::Result<bool> {
    let mut created = false;
    with_temporary(dir, key, data, modes, |tmp| {
        let linked = dir.hard_link(tmp, dir, key);
        let _ = dir.remove_file(tmp);
        match linked {
            Ok(()) => {
                created = true;
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    })?;
    Ok(created)
}

fn list_recursive(dir: &Dir, prefix: &str, out: &mut Vec<ObjectInfo>) -> std::io::Result<()> {
    let folder = prefix.trim_end_matches('/');
    let entries = match dir.read_dir(if folder.is_empty() { "." } else { folder }) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        // Temporary files of interrupted writes are listed too, so garbage collection
        // (which runs when no writer is active) removes them.
        let name = entry.file_name().to_string_lossy().into_owned();
        let key = if folder.is_empty() {
            name
        } else {
            format!("{folder}/{name}")
        };
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            // Removed or renamed into place by another process since the folder was read
            // (locks come and go all the time): not there any more.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            list_recursive(dir, &format!("{key}/"), out)?;
        } else {
            out.push(ObjectInfo {
                key,
                size: meta.len(),
            });
        }
    }
    Ok(())
}

#[async_trait]
impl Target for FsTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        std::fs::canonicalize(&self.root)
            .unwrap_or_else(|_| std::path::absolute(&self.root).unwrap_or(self.root.clone()))
            .display()
            .to_string()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), TargetError> {
        check_key(&self.name, key)?;
        let (key_owned, modes) = (key.to_string(), self.modes);
        self.blocking(key, true, move |dir| {
            write_atomically(dir, &key_owned, &data, modes)
        })
        .await?;
        self.note(key, Change::Written);
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<Created, TargetError> {
        check_key(&self.name, key)?;
        let (key_owned, modes) = (key.to_string(), self.modes);
        let created = self
            .blocking(key, true, move |dir| {
                create_exclusively(dir, &key_owned, &data, modes)
            })
            .await?;
        if created == Some(true) {
            self.note(key, Change::Written);
        }
        Ok(if created == Some(true) {
            Created::Written
        } else {
            Created::Exists
        })
    }

    async fn get(&self, key: &str) -> Result<Bytes, TargetError> {
        check_key(&self.name, key)?;
        let key_owned = key.to_string();
        self.blocking(key, false, move |dir| dir.read(&key_owned).map(Bytes::from))
            .await?
            .ok_or_else(|| self.not_found())
    }

    async fn stat(&self, key: &str) -> Result<Option<u64>, TargetError> {
        check_key(&self.name, key)?;
        let key_owned = key.to_string();
        self.blocking(key, false, move |dir| match dir.metadata(&key_owned) {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
        .map(Option::flatten)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, TargetError> {
        check_prefix(&self.name, prefix)?;
        let prefix_owned = prefix.to_string();
        self.blocking(prefix, false, move |dir| {
            let mut out = Vec::new();
            list_recursive(dir, &prefix_owned, &mut out)?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .map(Option::unwrap_or_default)
    }

    async fn delete(&self, key: &str) -> Result<(), TargetError> {
        check_key(&self.name, key)?;
        let key_owned = key.to_string();
        let removed = self
            .blocking(key, false, move |dir| match dir.remove_file(&key_owned) {
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
                other => other.map(|()| true),
            })
            .await?;
        if removed == Some(true) {
            self.note(key, Change::Removed);
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), TargetError> {
        self.blocking("(flush)", false, |_| sync_noted())
            .await
            .map(|_| ())
    }

    async fn available_space(&self) -> Result<Option<u64>, TargetError> {
        self.blocking("", false, move |dir| {
            let root = dir.open(".")?;
            let stat = rustix::fs::fstatvfs(&root).map_err(std::io::Error::from)?;
            Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
        })
        .await?
        .map(Some)
        .ok_or_else(|| self.not_found())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn flush_syncs_few_objects_one_by_one_and_many_by_filesystem() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target =
            FsTarget::create("local", &tmp.path().join("repo"), Modes::default()).expect("create");
        // A few objects, one in a new folder, one removed behind the target's back (a lock
        // another process released) and one deleted: the flush takes each in turn.
        for key in ["backups/a.json", "chunks/ab/abcd", "locks/l1"] {
            target
                .put(key, Bytes::from_static(b"x"))
                .await
                .expect("put");
        }
        std::fs::remove_file(tmp.path().join("repo/locks/l1")).expect("remove");
        target.delete("backups/a.json").await.expect("delete");
        target.flush().await.expect("flush of a few objects");
        assert_eq!(target.stat("chunks/ab/abcd").await.expect("stat"), Some(1));
        // Many: past the limit the notes become one syncfs of the root.
        for i in 0..(SYNC_ONE_BY_ONE + 10) {
            let key = format!("chunks/{:02x}/{i:04}", i % 256);
            target
                .put(&key, Bytes::from_static(b"y"))
                .await
                .expect("put");
        }
        target.flush().await.expect("flush of many objects");
        let listed = target.list("chunks/").await.expect("list");
        assert_eq!(listed.len(), SYNC_ONE_BY_ONE + 11);
        // Nothing noted: a flush has nothing to do and succeeds.
        target.flush().await.expect("empty flush");
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_repository_root() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = FsTarget::open("local", &tmp.path().join("repo")).expect("open");
        let err = target.put("../outside", Bytes::from_static(b"x")).await;
        assert!(err.is_err(), "a key with .. must be refused");
        assert!(!tmp.path().join("outside").exists());
        assert!(target.get("/etc/passwd").await.is_err());
    }

    #[tokio::test]
    async fn keys_outside_the_rules_are_refused_even_inside_the_root() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = FsTarget::open("local", tmp.path()).expect("open");
        target
            .put("larder-repository.json", Bytes::from_static(b"{}"))
            .await
            .expect("put");
        for key in [
            "validations/../larder-repository.json",
            "./x",
            "a//b",
            "chunks/é",
            "",
        ] {
            let refused = target.put(key, Bytes::from_static(b"x")).await;
            assert!(
                matches!(&refused, Err(TargetError::Failed { reason, .. }) if reason.contains("invalid object key")),
                "{key:?}: {refused:?}"
            );
            assert!(target.delete(key).await.is_err(), "{key:?}");
        }
        assert!(target.list("../").await.is_err());
        assert_eq!(
            target.get("larder-repository.json").await.expect("get"),
            Bytes::from_static(b"{}")
        );
    }

    #[tokio::test]
    async fn put_if_absent_writes_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = FsTarget::open("local", tmp.path()).expect("open");
        let first = target
            .put_if_absent("locks/x.json", Bytes::from_static(b"1"))
            .await;
        let second = target
            .put_if_absent("locks/x.json", Bytes::from_static(b"2"))
            .await;
        assert_eq!(
            (first.expect("first"), second.expect("second")),
            (Created::Written, Created::Exists)
        );
        assert_eq!(
            target.get("locks/x.json").await.expect("get"),
            Bytes::from_static(b"1")
        );
        assert_eq!(
            target.list("locks/").await.expect("list").len(),
            1,
            "no temporary left"
        );
    }

    #[tokio::test]
    async fn put_makes_the_missing_folders_with_the_folder_mode() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = FsTarget::open_with("local", tmp.path(), Modes::new(true)).expect("open");
        // A new folder two levels deep, then a second object in it (no folder made), then a
        // folder removed behind the target's back (made again).
        for key in ["chunks/ab/one", "chunks/ab/two", "chunks/cd/three"] {
            target
                .put(key, Bytes::from_static(b"x"))
                .await
                .unwrap_or_else(|e| panic!("{key}: {e}"));
        }
        std::fs::remove_dir_all(tmp.path().join("chunks/cd")).expect("remove a folder");
        target
            .put("chunks/cd/four", Bytes::from_static(b"y"))
            .await
            .expect("a folder removed is made again");
        let mode = |path: &str| {
            std::fs::metadata(tmp.path().join(path))
                .expect("metadata")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(
            (mode("chunks"), mode("chunks/ab"), mode("chunks/cd")),
            (0o750, 0o750, 0o750)
        );
        assert_eq!(mode("chunks/ab/two"), 0o640);
        let keys: Vec<String> = target
            .list("chunks/")
            .await
            .expect("list")
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["chunks/ab/one", "chunks/ab/two", "chunks/cd/four"]);
    }

    #[tokio::test]
    async fn put_get_list_delete_round_trip() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = FsTarget::open("local", tmp.path()).expect("open");
        target
            .put("chunks/ab/abc", Bytes::from_static(b"hello"))
            .await
            .expect("put");
        target.flush().await.expect("flush");
        assert_eq!(
            target.get("chunks/ab/abc").await.expect("get"),
            Bytes::from_static(b"hello")
        );
        assert_eq!(target.stat("chunks/ab/abc").await.expect("stat"), Some(5));
        assert_eq!(target.stat("chunks/ab/none").await.expect("stat"), None);
        let listed = target.list("chunks/").await.expect("list");
        assert_eq!(
            listed,
            vec![ObjectInfo {
                key: "chunks/ab/abc".into(),
                size: 5
            }]
        );
        target.delete("chunks/ab/abc").await.expect("delete");
        assert!(matches!(
            target.get("chunks/ab/abc").await,
            Err(TargetError::NotFound { .. })
        ));
    }
}
