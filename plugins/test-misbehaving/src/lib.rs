//! `test-misbehaving`: a storage-target plugin that misbehaves on purpose, for the host's
//! sandbox tests. Never configure it for real backups.
//!
//! It stores objects honestly in a preopened directory (config `dir`) until a chunk is written
//! (a key under `chunks/`); then it does what config `mode` says:
//! - `trap`: panics (a WebAssembly trap);
//! - `loop`: spins forever (the host's per-call deadline must stop it);
//! - `oom`: allocates until the memory cap stops it;
//! - `garbage`: answers `list` with keys outside the requested prefix;
//! - `escape`: tries to read `/etc/passwd` and to write beside its directory, and reports what
//!   the sandbox let through;
//! - anything else: behaves.

use dir_store::{DirStore, StoreError};
use exports::larder::plugin::storage::{Guest, ListPage, ObjectInfo};
use larder::plugin::host::{self, Level};
use larder::plugin::types::{Error, PluginInfo};

wit_bindgen::generate!({
    path: "../../wit/v1",
    world: "larder:plugin/storage-target@1.0.0",
});

struct Misbehaving;

fn to_error(e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::NotFound,
        StoreError::Denied(m) => Error::Denied(m),
        StoreError::Invalid(m) => Error::Invalid(m),
        StoreError::Other(m) => Error::Other(m),
    }
}

fn with_store<T>(f: impl FnOnce(&mut DirStore) -> Result<T, StoreError>) -> Result<T, Error> {
    dir_store::with_store(|| host::config("dir"), f).map_err(to_error)
}

fn mode() -> String {
    host::config("mode").unwrap_or_default()
}

fn misbehave_on_chunk() -> Result<(), Error> {
    match mode().as_str() {
        "trap" => panic!("test-misbehaving: trapping on purpose"),
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "oom" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 16 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "escape" => {
            let read = std::fs::read("/etc/passwd").map(|b| b.len());
            let dir = host::config("dir").unwrap_or_default();
            let write = std::fs::write(format!("{dir}/../escaped"), b"out of the sandbox");
            host::log(
                Level::Warn,
                &format!("escape attempt: read {read:?}, write {write:?}"),
            );
            match (read, write) {
                (Err(r), Err(w)) => Err(Error::Denied(format!(
                    "sandbox held: reading /etc/passwd failed ({r}); writing outside {dir} failed ({w})"
                ))),
                _ => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

impl Guest for Misbehaving {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "test-misbehaving".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: vec!["filesystem".into(), "test-only".into()],
        }
    }

    fn put(key: String, data: Vec<u8>) -> Result<(), Error> {
        if key.starts_with("chunks/") {
            misbehave_on_chunk()?;
        }
        with_store(|s| s.put(&key, &data))
    }

    fn get(key: String) -> Result<Vec<u8>, Error> {
        with_store(|s| s.get(&key))
    }

    fn stat(key: String) -> Result<Option<u64>, Error> {
        with_store(|s| s.stat(&key))
    }

    fn list(prefix: String, _cursor: Option<String>) -> Result<ListPage, Error> {
        let mut objects: Vec<ObjectInfo> = with_store(|s| s.list(&prefix))?
            .into_iter()
            .map(|(key, size)| ObjectInfo { key, size })
            .collect();
        if mode() == "garbage" {
            objects.push(ObjectInfo {
                key: "../../etc/shadow".into(),
                size: u64::MAX,
            });
        }
        Ok(ListPage {
            objects,
            next: None,
        })
    }

    fn delete(key: String) -> Result<(), Error> {
        with_store(|s| s.delete(&key))
    }

    fn flush() -> Result<(), Error> {
        with_store(|s| s.flush())
    }
}

export!(Misbehaving);
