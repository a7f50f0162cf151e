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
//!
//! Two modes misbehave from the start:
//! - `endless-list`: every `list` page holds 1,000 new keys and a cursor that always advances;
//! - `huge-answers`: `describe` logs a 1 MiB line and answers with a 1 MiB name.

use dir_store::{DirTarget, Error, Guest, Level, ListPage, ObjectInfo, PluginInfo, host};

struct Misbehaving;

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
        if mode() == "huge-answers" {
            let huge = "x".repeat(1 << 20);
            host::log(Level::Warn, &huge);
            return PluginInfo {
                name: huge,
                version: env!("CARGO_PKG_VERSION").into(),
                capabilities: vec!["test-only".into()],
            };
        }
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
        DirTarget::put(key, data)
    }

    fn get(key: String) -> Result<Vec<u8>, Error> {
        DirTarget::get(key)
    }

    fn stat(key: String) -> Result<Option<u64>, Error> {
        DirTarget::stat(key)
    }

    fn list(prefix: String, cursor: Option<String>) -> Result<ListPage, Error> {
        if mode() == "endless-list" {
            let start: u64 = cursor.and_then(|c| c.parse().ok()).unwrap_or(0);
            let objects = (start..start + 1000)
                .map(|n| ObjectInfo {
                    key: format!("{prefix}endless-{n:020}.json"),
                    size: 1,
                })
                .collect();
            return Ok(ListPage {
                objects,
                next: Some((start + 1000).to_string()),
            });
        }
        let mut page = DirTarget::list(prefix, cursor)?;
        if mode() == "garbage" {
            page.objects.push(ObjectInfo {
                key: "../../etc/shadow".into(),
                size: u64::MAX,
            });
        }
        Ok(page)
    }

    fn delete(key: String) -> Result<(), Error> {
        DirTarget::delete(key)
    }

    fn flush() -> Result<(), Error> {
        DirTarget::flush()
    }
}

dir_store::export!(Misbehaving);
