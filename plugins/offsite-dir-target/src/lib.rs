//! `offsite-dir-target`: a Larder storage target that keeps the repository in a directory the
//! host preopened for it, typically an NFS or SMB mount of the offsite site.
//!
//! Configuration (`config` table of the `[[targets]]` entry):
//! - `dir`: the directory as the plugin sees it (the `guest` side of a `dirs` grant).
//!
//! Objects are written to a temporary file and renamed into place (atomic); `flush` fsyncs the
//! new files and their directories before the host writes a manifest.

use dir_store::{DirStore, StoreError};
use exports::larder::plugin::storage::{Guest, ListPage, ObjectInfo};
use larder::plugin::host::{self, Level};
use larder::plugin::types::{Error, PluginInfo};

wit_bindgen::generate!({
    path: "../../wit/v1",
    world: "larder:plugin/storage-target@1.0.0",
});

struct OffsiteDir;

fn to_error(e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::NotFound,
        StoreError::Denied(m) => Error::Denied(m),
        StoreError::Invalid(m) => Error::Invalid(m),
        StoreError::Other(m) => Error::Other(m),
    }
}

/// Runs `f` on this instance's store, opened at the configured `dir` on first use.
fn with_store<T>(f: impl FnOnce(&mut DirStore) -> Result<T, StoreError>) -> Result<T, Error> {
    let dir = || {
        let dir = host::config("dir")?;
        host::log(Level::Debug, &format!("storing objects in {dir}"));
        Some(dir)
    };
    dir_store::with_store(dir, f).map_err(to_error)
}

impl Guest for OffsiteDir {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "offsite-dir-target".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: vec!["filesystem".into(), "durable-put".into()],
        }
    }

    fn put(key: String, data: Vec<u8>) -> Result<(), Error> {
        with_store(|s| s.put(&key, &data))
    }

    fn get(key: String) -> Result<Vec<u8>, Error> {
        with_store(|s| s.get(&key))
    }

    fn stat(key: String) -> Result<Option<u64>, Error> {
        with_store(|s| s.stat(&key))
    }

    fn list(prefix: String, _cursor: Option<String>) -> Result<ListPage, Error> {
        let objects = with_store(|s| s.list(&prefix))?;
        Ok(ListPage {
            objects: objects
                .into_iter()
                .map(|(key, size)| ObjectInfo { key, size })
                .collect(),
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

export!(OffsiteDir);
