//! The WebAssembly plugin runtime (wasmtime, component model).
//!
//! ```text
//! [[targets]] type = "plugin"  ──load──> Runtime::load: read .wasm, check the SHA-256 pin,
//!                                         compile (or reuse the on-disk cache) ──> Loaded
//! Loaded + Grants ──> PluginTarget (targets::Target): a pool of sandboxed instances;
//!                     every call runs under the memory cap, the epoch deadline and a timeout
//! ```
//!
//! The contract is the WIT package in `wit/v1` (`larder:plugin@1.0.0`); the sandbox limits live
//! in [`policy`]. Compiled components are cached under the cache directory, keyed by the
//! plugin's SHA-256 and the engine's compatibility hash, and only files this host wrote there
//! are ever deserialized.

pub mod bindings;
pub mod calls;
pub mod conformance;
pub mod entry;
pub mod guest_bytes;
pub mod http;
pub mod inspect;
pub mod notifier;
pub mod policy;
pub mod sandbox;
pub mod state;
pub mod target;
pub mod tcp;
pub mod validator;

use crate::error::{Error, Result};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

/// How a component came to be ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheStatus {
    /// Loaded from the compiled-component cache.
    Hit,
    /// Compiled now (and stored in the cache).
    Compiled,
}

/// A plugin file read, verified and compiled.
pub struct Loaded {
    pub path: PathBuf,
    pub sha256: String,
    pub component: Component,
    pub cache: CacheStatus,
}

impl Loaded {
    /// The file as `plugin list` shows it; `pinned`: its entry names its hash.
    pub fn file(&self, pinned: bool) -> PluginFile {
        PluginFile {
            path: self.path.clone(),
            sha256: self.sha256.clone(),
            pinned,
            cache: self.cache,
        }
    }
}

/// The file a configured plugin was loaded from: its hash, whether its entry pins it
/// (`sha256 = …`), and how it was compiled.
#[derive(Debug, Clone)]
pub struct PluginFile {
    pub path: PathBuf,
    pub sha256: String,
    pub pinned: bool,
    pub cache: CacheStatus,
}

/// A configured plugin (a target, a notifier or a validator), as `plugin list` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginSummary {
    /// The entry's name (`[[targets]]`, `[[notifiers]]` or `[[validators]]`).
    pub target: String,
    pub path: String,
    pub sha256: String,
    pub pinned: bool,
    pub world: &'static str,
    pub name: String,
    pub version: String,
    pub capabilities: Vec<String>,
    pub granted: Vec<String>,
    pub cache: CacheStatus,
}

impl PluginSummary {
    /// The plugin of entry `entry`, loaded from `file`, of `world`, as it describes itself
    /// (`info`), with what its entry grants.
    pub fn new(
        entry: &str,
        file: &PluginFile,
        world: &'static str,
        info: &bindings::larder::plugin::types::PluginInfo,
        grants: &policy::Grants,
    ) -> PluginSummary {
        PluginSummary {
            target: entry.to_string(),
            path: file.path.display().to_string(),
            sha256: file.sha256.clone(),
            pinned: file.pinned,
            world,
            name: info.name.clone(),
            version: info.version.clone(),
            capabilities: info.capabilities.clone(),
            granted: grants.describe(),
            cache: file.cache,
        }
    }
}

/// The engine, the linker with everything a plugin may import, and the compiled-code cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<state::PluginState>,
    cache_dir: PathBuf,
}

/// One engine per process: its epoch ticker thread runs for the life of the process.
fn engine() -> Result<Engine> {
    static ENGINE: OnceLock<std::result::Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = Config::new();
            config.wasm_component_model(true);
            config.epoch_interruption(true);
            let engine = Engine::new(&config).map_err(|e| format!("{e:#}"))?;
            let ticker = engine.clone();
            std::thread::Builder::new()
                .name("plugin-epoch".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(policy::EPOCH_TICK);
                        ticker.increment_epoch();
                    }
                })
                .map_err(|e| format!("starting the plugin deadline timer: {e}"))?;
            Ok(engine)
        })
        .clone()
        .map_err(|e| Error::Plugin(format!("cannot start the WebAssembly engine: {e}")))
}

impl Runtime {
    pub fn new(cache_dir: PathBuf) -> Result<Runtime> {
        let engine = engine()?;
        let mut linker = Linker::new(&engine);
        let link = |what: &str, r: wasmtime::Result<()>| {
            r.map_err(|e| Error::Plugin(format!("linking {what}: {e:#}")))
        };
        link("WASI", wasmtime_wasi::p2::add_to_linker_async(&mut linker))?;
        link(
            "wasi:http",
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker),
        )?;
        link(
            "larder:plugin/host",
            bindings::larder::plugin::host::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
                &mut linker,
                |s| s,
            ),
        )?;
        link(
            "larder:plugin/types",
            bindings::larder::plugin::types::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
                &mut linker,
                |s| s,
            ),
        )?;
        Ok(Runtime {
            engine,
            linker,
            cache_dir,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<state::PluginState> {
        &self.linker
    }

    /// `loaded` linked against everything the host provides and taken as a plugin of one world
    /// by `pre` (the world's `…Pre::new`); `world` names it in the error (`a notifier plugin
    /// (larder:plugin/notification@1.x)`), `plugin` as [`sandbox::label`] does.
    pub fn prepare<P>(
        &self,
        loaded: &Loaded,
        plugin: &str,
        world: &str,
        pre: impl FnOnce(wasmtime::component::InstancePre<state::PluginState>) -> wasmtime::Result<P>,
    ) -> Result<P> {
        let instance_pre = self
            .linker
            .instantiate_pre(&loaded.component)
            .map_err(|e| {
                Error::Plugin(format!(
                    "plugin {plugin} asks for something the host does not provide: {e:#}"
                ))
            })?;
        pre(instance_pre)
            .map_err(|e| Error::Plugin(format!("plugin {plugin} is not {world}: {e:#}")))
    }

    /// Reads a plugin, checks its pin, and compiles it or takes it from the cache.
    pub fn load(&self, path: &Path, pin: Option<&str>) -> Result<Loaded> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Plugin(format!("cannot read plugin {}: {e}", path.display())))?;
        let sha256 = crate::repository::sha256_hex(&bytes);
        if let Some(expected) = pin {
            let expected = expected.trim().to_ascii_lowercase();
            if expected != sha256 {
                return Err(Error::PluginPin {
                    path: path.display().to_string(),
                    expected,
                    actual: sha256,
                });
            }
        }
        let cached = self.cache_path(&sha256);
        if let Some(artifact) = self.read_own_artifact(&cached) {
            // SAFETY: the file was written by `store_in_cache` below (it is ours and only we
            // can write it and its folder: `read_own_artifact` checks), under a name that binds
            // the plugin's hash and this engine's compatibility hash; wasmtime also checks the
            // artifact's header.
            match unsafe { Component::deserialize(&self.engine, &artifact) } {
                Ok(component) => {
                    return Ok(Loaded {
                        path: path.to_path_buf(),
                        sha256,
                        component,
                        cache: CacheStatus::Hit,
                    });
                }
                Err(e) => tracing::warn!(
                    "ignoring unusable compiled plugin {}: {e:#}",
                    cached.display()
                ),
            }
        }
        let artifact = self.engine.precompile_component(&bytes).map_err(|e| {
            Error::Plugin(format!(
                "{} is not a valid WebAssembly component: {e:#}",
                path.display()
            ))
        })?;
        self.store_in_cache(&cached, &artifact);
        // SAFETY: `artifact` was produced by this engine a moment ago.
        let component = unsafe { Component::deserialize(&self.engine, &artifact) }
            .map_err(|e| Error::Plugin(format!("loading {}: {e:#}", path.display())))?;
        Ok(Loaded {
            path: path.to_path_buf(),
            sha256,
            component,
            cache: CacheStatus::Compiled,
        })
    }

    fn cache_path(&self, sha256: &str) -> PathBuf {
        let mut hasher = DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        self.cache_dir
            .join(format!("{sha256}-{:016x}.cwasm", hasher.finish()))
    }

    /// A cached artifact, only if it and its folder belong to this user and nobody else can
    /// write them (anything else could have been planted: it is recompiled instead).
    fn read_own_artifact(&self, path: &Path) -> Option<Vec<u8>> {
        use std::os::unix::fs::MetadataExt;
        let me = rustix::process::geteuid().as_raw();
        let trusted = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.uid() == me && m.mode() & 0o022 == 0)
                .unwrap_or(false)
        };
        if !trusted(&self.cache_dir) || !trusted(path) {
            if path.exists() {
                tracing::warn!(
                    "not loading {}: it or its folder is not owned by this user or is writable by others; recompiling",
                    path.display()
                );
            }
            return None;
        }
        std::fs::read(path).ok()
    }

    /// Best effort: a cache that cannot be written only costs a compile next time.
    fn store_in_cache(&self, path: &Path, artifact: &[u8]) {
        let result = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(&self.cache_dir)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&self.cache_dir, std::fs::Permissions::from_mode(0o700))?;
            }
            let mut temp = tempfile::NamedTempFile::new_in(&self.cache_dir)?;
            std::io::Write::write_all(&mut temp, artifact)?;
            temp.persist(path).map_err(|e| e.error)?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(
                "cannot cache the compiled plugin in {}: {e}",
                self.cache_dir.display()
            );
        }
    }
}
