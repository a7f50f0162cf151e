//! The sandbox every plugin instance runs in, whatever its world: an empty WASI context with only
//! the granted directories and network, the memory and resource caps, the epoch deadline, and
//! the words for what went wrong (trap, deadline, oversized `describe`), naming the plugin.

use super::Loaded;
use super::bindings::larder::plugin::types::PluginInfo;
use super::policy::{self, Grants};
use super::state::{Limits, PluginState};
use crate::error::{Error, Result};
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// How messages name a plugin: `entry-name (file.wasm)`.
pub fn label(name: &str, loaded: &Loaded) -> Arc<str> {
    let file = loaded
        .path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    Arc::from(format!("{name} ({file})"))
}

/// A store for one instance of `plugin` under `grants`.
pub fn new_store(
    engine: &Engine,
    plugin: &Arc<str>,
    grants: &Arc<Grants>,
) -> Result<Store<PluginState>> {
    // Starts empty (no environment, arguments, stdio or preopens). Sockets: TCP only to the
    // `allow_tcp` destinations (checked per address by `tcp::admits`), never UDP; name lookups
    // only when some TCP destination is granted. HTTP goes through the allow-listed hook.
    let mut wasi = WasiCtxBuilder::new();
    let tcp = !grants.allow_tcp.is_empty();
    wasi.allow_tcp(tcp)
        .allow_udp(false)
        .allow_ip_name_lookup(tcp);
    if tcp {
        let (plugin, grants) = (plugin.clone(), grants.clone());
        wasi.socket_addr_check(move |addr, use_| {
            let (plugin, grants) = (plugin.clone(), grants.clone());
            Box::pin(async move { super::tcp::admits(&plugin, &grants, addr, use_).await })
        });
    }
    for dir in &grants.dirs {
        let perms = if dir.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        wasi.preopened_dir(&dir.host, &dir.guest, perms)
            .map_err(|e| {
                Error::Plugin(format!(
                    "plugin {plugin}: cannot open granted directory {}: {e:#}",
                    dir.host.display()
                ))
            })?;
    }
    let mut table = ResourceTable::new();
    table.set_max_capacity(policy::MAX_RESOURCES);
    let state = PluginState {
        plugin: plugin.clone(),
        grants: grants.clone(),
        limits: Limits::new(
            StoreLimitsBuilder::new()
                .memory_size(grants.memory as usize)
                .instances(policy::MAX_CORE_INSTANCES)
                .tables(policy::MAX_TABLES)
                .memories(policy::MAX_MEMORIES)
                .trap_on_grow_failure(true)
                .build(),
        ),
        wasi: wasi.build(),
        http: wasmtime_wasi_http::WasiHttpCtx::new(),
        table,
        hooks: super::http::AllowListHooks {
            plugin: plugin.clone(),
            grants: grants.clone(),
        },
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    store.epoch_deadline_trap();
    store.set_epoch_deadline(grants.deadline_ticks());
    Ok(store)
}

/// `describe`'s answer within [`policy::MAX_NAME`] and the other limits.
pub fn checked_info(plugin: &str, info: PluginInfo) -> Result<PluginInfo> {
    let too_long = |what: &str, len: usize, max: usize| {
        Error::Plugin(format!(
            "plugin {plugin} returned an invalid answer to `describe`: its {what} is {len} bytes, more than {max}"
        ))
    };
    if info.name.len() > policy::MAX_NAME {
        return Err(too_long("name", info.name.len(), policy::MAX_NAME));
    }
    if info.version.len() > policy::MAX_VERSION {
        return Err(too_long("version", info.version.len(), policy::MAX_VERSION));
    }
    if info.capabilities.len() > policy::MAX_CAPABILITIES {
        return Err(Error::Plugin(format!(
            "plugin {plugin} returned an invalid answer to `describe`: {} capabilities, more than {}",
            info.capabilities.len(),
            policy::MAX_CAPABILITIES
        )));
    }
    if let Some(long) = info
        .capabilities
        .iter()
        .find(|c| c.len() > policy::MAX_CAPABILITY)
    {
        return Err(too_long("capability", long.len(), policy::MAX_CAPABILITY));
    }
    Ok(info)
}

pub fn deadline_error(plugin: &str, grants: &Grants, call: &str) -> Error {
    Error::Plugin(format!(
        "plugin {plugin} did not answer `{call}` within its {} deadline",
        humantime::format_duration(grants.call_timeout)
    ))
}

pub fn trap_error(plugin: &str, grants: &Grants, call: &str, e: wasmtime::Error) -> Error {
    let why = match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!(
            "ran past its {} deadline",
            humantime::format_duration(grants.call_timeout)
        ),
        Some(Trap::UnreachableCodeReached) => "trapped (the plugin panicked)".to_string(),
        Some(Trap::MemoryOutOfBounds) | Some(Trap::TableOutOfBounds) => {
            format!("trapped ({})", Trap::MemoryOutOfBounds)
        }
        Some(trap) => format!("trapped ({trap})"),
        None if format!("{e:#}").contains("grow") => format!(
            "exceeded its memory limit of {} MiB",
            grants.memory / (1024 * 1024)
        ),
        None => format!("failed: {e:#}"),
    };
    Error::Plugin(format!("plugin {plugin} {why} during `{call}`"))
}
