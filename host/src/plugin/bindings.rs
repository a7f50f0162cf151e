//! Host bindings generated from the WIT contract (`wit/v1.1`, `larder:plugin@1.1.0`), one module
//! per world. Plugins built against `1.0.0` link too: wasmtime matches `@1.0.0` imports and
//! exports against `@1.1.0` semver-compatibly, and 1.1 changed no 1.0 interface.
//!
//! The storage world is generated at the root; the other worlds reuse its `host` and `types`
//! (`with`), so one `PluginState` serves every world and one linker holds them all.

wasmtime::component::bindgen!({
    path: "../wit/v1.1",
    world: "larder:plugin/storage-target@1.1.0",
    exports: { default: async },
});

/// The `notifier` world (`wit/v1.1/notifier.wit`).
pub mod notifier {
    wasmtime::component::bindgen!({
        path: "../wit/v1.1",
        world: "larder:plugin/notifier@1.1.0",
        exports: { default: async },
        with: {
            "larder:plugin/host": super::larder::plugin::host,
            "larder:plugin/types": super::larder::plugin::types,
        },
    });
}

/// The `validator` world (`wit/v1.1/validator.wit`).
pub mod validator {
    wasmtime::component::bindgen!({
        path: "../wit/v1.1",
        world: "larder:plugin/validator@1.1.0",
        exports: { default: async },
        with: {
            "larder:plugin/host": super::larder::plugin::host,
            "larder:plugin/types": super::larder::plugin::types,
        },
    });
}
