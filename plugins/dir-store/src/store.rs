//! Whole-object storage in a directory, shared by the guest plugins that keep objects in a
//! preopened directory (`offsite-dir-target`, and the test plugins that misbehave on purpose).
//!
//! `put` writes a temporary file beside the object and renames it into place, so readers see the
//! whole object or none of it. Durability is batched: `flush` fsyncs every file renamed since the
//! last flush and the directories that received them, which is when the host needs it (before a
//! manifest makes chunks reachable). Keys are checked here as well as by the host: a key can never
//! name a path outside the store's root.
//!
//! Object bodies move with one `wasi:filesystem` `write` / `read` call each on the preopened
//! directory's descriptor: the standard library's file I/O goes through WASI output streams,
//! which carry at most 4 KiB per host call (256 calls per 1 MiB chunk).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use wasip2::filesystem::types::{Descriptor, DescriptorFlags, ErrorCode, OpenFlags, PathFlags};

/// Why an operation failed, in the terms of the plugin contract.
#[derive(Debug)]
pub enum StoreError {
    NotFound,
    Denied(String),
    Invalid(String),
    Other(String),
}

impl StoreError {
    fn wasi(what: &str, path: &str, e: ErrorCode) -> StoreError {
        let msg = format!("{what} {path}: {e:?}");
        match e {
            ErrorCode::NoEntry => StoreError::NotFound,
            ErrorCode::Access | ErrorCode::NotPermitted | ErrorCode::ReadOnly => {
                StoreError::Denied(msg)
            }
            ErrorCode::InsufficientSpace | ErrorCode::Quota => {
                StoreError::Other(format!("no space left: {msg}"))
            }
            _ => StoreError::Other(msg),
        }
    }

    fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
        let msg = format!("{what} {}: {e}", path.display());
        match e.kind() {
            ErrorKind::NotFound => StoreError::NotFound,
            ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => StoreError::Denied(msg),
            _ => StoreError::Other(msg),
        }
    }
}

/// A directory holding objects under `/`-separated keys.
pub struct DirStore {
    root: PathBuf,
    /// The preopened directory holding `root`, and `root` relative to it.
    base: Descriptor,
    base_relative: String,
    unsynced_files: BTreeSet<PathBuf>,
    unsynced_dirs: BTreeSet<PathBuf>,
}

const TEMP_MARK: &str = ".tmp-";

thread_local! {
    /// The store of this plugin instance (each instance has its own memory).
    static STORE: RefCell<Option<DirStore>> = const { RefCell::new(None) };
}

/// Runs `f` on this instance's store, opening it at `dir()` (the plugin's `dir` setting) on
/// first use.
pub fn with_store<T>(
    dir: impl FnOnce() -> Option<String>,
    f: impl FnOnce(&mut DirStore) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    STORE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let store = match slot.as_mut() {
            Some(store) => store,
            None => {
                let dir = dir()
                    .ok_or_else(|| StoreError::Invalid("config value `dir` is required".into()))?;
                slot.insert(DirStore::open(&dir)?)
            }
        };
        f(store)
    })
}

impl DirStore {
    /// A store rooted at `root`, which must exist (a directory the host preopened).
    pub fn open(root: &str) -> Result<DirStore, StoreError> {
        let root = PathBuf::from(root);
        match fs::metadata(&root) {
            Ok(meta) if meta.is_dir() => {
                let (base, base_relative) = preopen_of(&root)?;
                Ok(DirStore {
                    root,
                    base,
                    base_relative,
                    unsynced_files: BTreeSet::new(),
                    unsynced_dirs: BTreeSet::new(),
                })
            }
            Ok(_) => Err(StoreError::Invalid(format!(
                "{} is not a directory",
                root.display()
            ))),
            Err(e) => Err(StoreError::Invalid(format!(
                "cannot open {}: {e} (is it one of the directories the host preopened for this plugin?)",
                root.display()
            ))),
        }
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let valid = !key.is_empty()
            && !key.starts_with('/')
            && key.split('/').all(|seg| {
                !seg.is_empty() && seg != "." && seg != ".." && !seg.contains(TEMP_MARK)
            });
        if valid {
            Ok(self.root.join(key))
        } else {
            Err(StoreError::Invalid(format!("invalid object key {key:?}")))
        }
    }

    pub fn put(&mut self, key: &str, data: &[u8]) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| StoreError::io("creating", &dir, e))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        let temp_name = format!(
            "{name}{TEMP_MARK}{:016x}",
            wasip2::random::random::get_random_u64()
        );
        let temp = dir.join(&temp_name);
        let temp_key = match key.rsplit_once('/') {
            Some((folder, _)) => format!("{folder}/{temp_name}"),
            None => temp_name,
        };
        if let Err(e) = self.write_whole(&temp_key, data) {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        if let Err(e) = fs::rename(&temp, &path) {
            let _ = fs::remove_file(&temp);
            return Err(StoreError::io("renaming into", &path, e));
        }
        self.unsynced_files.insert(path);
        self.unsynced_dirs.insert(dir);
        Ok(())
    }

    pub fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.path(key)?;
        let rel = self.relative(key);
        let file = self
            .base
            .open_at(
                PathFlags::empty(),
                &rel,
                OpenFlags::empty(),
                DescriptorFlags::READ,
            )
            .map_err(|e| StoreError::wasi("opening", key, e))?;
        let size = file
            .stat()
            .map_err(|e| StoreError::wasi("inspecting", key, e))?
            .size;
        let mut out = Vec::with_capacity(size as usize);
        loop {
            let want = size.saturating_sub(out.len() as u64).max(1 << 16);
            let (piece, end) = file
                .read(want, out.len() as u64)
                .map_err(|e| StoreError::wasi("reading", key, e))?;
            out.extend_from_slice(&piece);
            if end || piece.is_empty() {
                return Ok(out);
            }
        }
    }

    /// The key's path relative to the preopened directory.
    fn relative(&self, key: &str) -> String {
        if self.base_relative.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.base_relative)
        }
    }

    /// Writes a new file in one call (plus more only if the host writes partially).
    fn write_whole(&self, key: &str, data: &[u8]) -> Result<(), StoreError> {
        let rel = self.relative(key);
        let file = self
            .base
            .open_at(
                PathFlags::empty(),
                &rel,
                OpenFlags::CREATE | OpenFlags::TRUNCATE,
                DescriptorFlags::WRITE,
            )
            .map_err(|e| StoreError::wasi("creating", key, e))?;
        let mut done = 0usize;
        while done < data.len() {
            let n = file
                .write(&data[done..], done as u64)
                .map_err(|e| StoreError::wasi("writing", key, e))?;
            if n == 0 {
                return Err(StoreError::Other(format!("writing {key}: no progress")));
            }
            done += n as usize;
        }
        Ok(())
    }

    pub fn stat(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let path = self.path(key)?;
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("inspecting", &path, e)),
        }
    }

    /// Every object whose key starts with `prefix`, sorted by key.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let base = match prefix.rfind('/') {
            Some(slash) => &prefix[..slash],
            None => "",
        };
        let start = if base.is_empty() {
            self.root.clone()
        } else {
            self.path(base)?
        };
        let mut out = Vec::new();
        let mut pending = vec![(start, base.to_string())];
        while let Some((dir, key_prefix)) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io("listing", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| StoreError::io("listing", &dir, e))?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if name.contains(TEMP_MARK) {
                    continue;
                }
                let key = if key_prefix.is_empty() {
                    name
                } else {
                    format!("{key_prefix}/{name}")
                };
                let meta = entry
                    .metadata()
                    .map_err(|e| StoreError::io("listing", &entry.path(), e))?;
                if meta.is_dir() {
                    if prefix.starts_with(&format!("{key}/")) || key.starts_with(prefix) {
                        pending.push((entry.path(), key));
                    }
                } else if key.starts_with(prefix) {
                    out.push((key, meta.len()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn delete(&mut self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                self.unsynced_files.remove(&path);
                if let Some(dir) = path.parent() {
                    self.unsynced_dirs.insert(dir.to_path_buf());
                }
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("deleting", &path, e)),
        }
    }

    /// Makes every earlier `put` and `delete` durable: fsync of each new file, then of each
    /// directory that changed.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        for path in std::mem::take(&mut self.unsynced_files) {
            match fs::File::open(&path).and_then(|file| file.sync_all()) {
                Ok(()) => {}
                // Deleted again since (by another instance): nothing to make durable.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("syncing", &path, e)),
            }
        }
        for dir in std::mem::take(&mut self.unsynced_dirs) {
            fs::File::open(&dir)
                .and_then(|file| file.sync_all())
                .map_err(|e| StoreError::io("syncing directory", &dir, e))?;
        }
        Ok(())
    }
}

/// The preopened directory that contains `root`, and `root` relative to it.
fn preopen_of(root: &Path) -> Result<(Descriptor, String), StoreError> {
    let root_text = root.to_string_lossy().trim_end_matches('/').to_string();
    let mut best: Option<(Descriptor, String)> = None;
    for (descriptor, guest) in wasip2::filesystem::preopens::get_directories() {
        let guest = guest.trim_end_matches('/').to_string();
        let relative = if root_text == guest {
            Some(String::new())
        } else {
            root_text
                .strip_prefix(&format!("{guest}/"))
                .map(str::to_string)
        };
        if let Some(relative) = relative
            && best.as_ref().is_none_or(|(_, r)| relative.len() < r.len())
        {
            best = Some((descriptor, relative));
        }
    }
    best.ok_or_else(|| {
        StoreError::Invalid(format!(
            "{} is not inside a directory the host preopened for this plugin",
            root.display()
        ))
    })
}
