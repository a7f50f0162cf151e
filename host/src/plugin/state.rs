//! What the host keeps per plugin instance (the `T` of `Store<T>`), and the host side of the
//! `larder:plugin/host` interface: logging, configuration values and granted secrets.

use super::bindings::larder::plugin::host::{Host, Level};
use super::bindings::larder::plugin::types;
use super::policy::Grants;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub struct PluginState {
    pub plugin: Arc<str>,
    pub grants: Arc<Grants>,
    pub limits: Limits,
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub hooks: super::http::AllowListHooks,
}

/// The store's limits (memory cap, instances, tables), and how much linear memory the
/// instance has come to hold.
pub struct Limits {
    pub caps: StoreLimits,
    /// The size its largest linear memory grew to, in bytes (wasm memories never shrink).
    pub memory_bytes: usize,
}

impl Limits {
    pub fn new(caps: StoreLimits) -> Limits {
        Limits {
            caps,
            memory_bytes: 0,
        }
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.caps.memory_growing(current, desired, maximum)?;
        if allowed {
            self.memory_bytes = self.memory_bytes.max(desired);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.caps.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.caps.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.caps.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.caps.instances()
    }

    fn tables(&self) -> usize {
        self.caps.tables()
    }

    fn memories(&self) -> usize {
        self.caps.memories()
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl types::Host for PluginState {}

impl Host for PluginState {
    fn log(&mut self, level: Level, message: String) {
        let plugin = &*self.plugin;
        let message = super::policy::bounded_text(message);
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.grants.config.get(&key).cloned()
    }

    fn secret(&mut self, name: String) -> Option<String> {
        self.grants.secrets.get(&name).cloned()
    }
}
