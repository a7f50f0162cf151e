//! Host bindings generated from the WIT contract (`wit/v1`, `larder:plugin@1.0.0`).

wasmtime::component::bindgen!({
    path: "../wit/v1",
    world: "larder:plugin/storage-target@1.0.0",
    exports: { default: async },
});
