//! Directory-backed Larder storage targets (guest side): the `larder:plugin` bindings, the
//! whole-object [`store::DirStore`], and [`DirTarget`], the storage implementation that the
//! `offsite-dir-target` plugin exports as it is and that the test plugins wrap.
//!
//! A plugin crate exports it with `use dir_store::DirTarget; dir_store::export!(DirTarget);`, or implements
//! [`Guest`] for its own type and calls `DirTarget` for the calls it does not change.

pub mod store;

pub use exports::larder::plugin::storage::{Guest, ListPage, ObjectInfo};
pub use larder::plugin::host::{self, Level};
pub use larder::plugin::types::{Error, PluginInfo};
pub use store::{DirStore, StoreError};

wit_bindgen::generate!({
    path: "../../wit/v1",
    world: "larder:plugin/storage-target@1.0.0",
    pub_export_macro: true,
    default_bindings_module: "dir_store",
});

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        match e {
            StoreError::NotFound => Error::NotFound,
            StoreError::Denied(m) => Error::Denied(m),
            StoreError::Invalid(m) => Error::Invalid(m),
            StoreError::Other(m) => Error::Other(m),
        }
    }
}

/// Runs `f` on this instance's store, opened at the configured `dir` on first use.
pub fn with_store<T>(f: impl FnOnce(&mut DirStore) -> Result<T, StoreError>) -> Result<T, Error> {
    let dir = || {
        let dir = host::config("dir")?;
        host::log(Level::Debug, &format!("storing objects in {dir}"));
        Some(dir)
    };
    store::with_store(dir, f).map_err(Error::from)
}

/// The offsite directory target: every object in the directory named by config `dir`.
pub struct DirTarget;

impl Guest for DirTarget {
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
