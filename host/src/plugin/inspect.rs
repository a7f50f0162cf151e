//! `plugin inspect` and `plugin hash`: what a plugin file is and what it asks for, without
//! running it.

use super::Runtime;
use crate::error::{Error, Result};
use serde::Serialize;
use std::path::Path;

/// The contract's exported interfaces, per world; versions are checked by major only.
pub const STORAGE_EXPORT: &str = "larder:plugin/storage@1.";
pub const NOTIFIER_EXPORT: &str = "larder:plugin/notification@1.";
pub const VALIDATOR_EXPORT: &str = "larder:plugin/validation@1.";

/// The worlds of the contract, by the interface each one exports.
const WORLDS: [(&str, &str); 3] = [
    (STORAGE_EXPORT, "larder:plugin/storage-target"),
    (NOTIFIER_EXPORT, "larder:plugin/notifier"),
    (VALIDATOR_EXPORT, "larder:plugin/validator"),
];

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub path: String,
    pub sha256: String,
    pub size: u64,
    /// The Larder world the plugin implements, if any (`storage-target`, `notifier`).
    pub world: Option<String>,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    /// What the imports mean for the sandbox: which grants the plugin can use.
    pub asks_for: Vec<String>,
}

/// The SHA-256 of a plugin file, as `sha256 = "…"` pins expect it.
pub fn hash(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Plugin(format!("cannot read plugin {}: {e}", path.display())))?;
    Ok(crate::repository::sha256_hex(&bytes))
}

pub fn inspect(runtime: &Runtime, path: &Path) -> Result<Inspection> {
    let loaded = runtime.load(path, None)?;
    let ty = loaded.component.component_type();
    let engine = runtime.engine();
    let mut exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let mut imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    exports.sort();
    imports.sort();
    let world = WORLDS
        .iter()
        .find(|(export, _)| exports.iter().any(|e| e.starts_with(export)))
        .map(|(_, world)| world.to_string());
    let mut asks_for = Vec::new();
    let has = |prefix: &str| imports.iter().any(|i| i.starts_with(prefix));
    if has("wasi:http/outgoing-handler") {
        asks_for.push("outbound HTTP (granted by allow_hosts)".to_string());
    }
    if has("wasi:filesystem/") {
        asks_for.push("filesystem (sees only directories granted by dirs)".to_string());
    }
    if has("larder:plugin/host") {
        asks_for.push("host logging, config values and named secrets".to_string());
    }
    if has("wasi:sockets/") {
        asks_for.push(
            "sockets (TCP only to the destinations granted by allow_tcp; otherwise calls fail)"
                .to_string(),
        );
    }
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(Inspection {
        path: path.display().to_string(),
        sha256: loaded.sha256,
        size,
        world,
        exports,
        imports,
        asks_for,
    })
}
