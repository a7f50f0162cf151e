//! What every plugin entry (`[[targets]]` of type plugin, `[[notifiers]]`, `[[validators]]`)
//! shares: its file read and checked against its pin (and `require_pinned_plugins`), and the
//! grants it resolves to (settings, secrets, HTTP allow-list, memory, deadline).

use super::Runtime;
use super::policy::{self, Grants};
use crate::config::{Loaded, parse_bytes, resolve_secret};
use crate::error::{Error, Result};
use std::path::Path;

/// Reads a plugin entry's file (relative to the configuration file) and checks its pin; refuses
/// an unpinned entry when `[plugins] require_pinned_plugins` is on.
pub fn load_pinned(
    runtime: &Runtime,
    loaded: &Loaded,
    owner: &str,
    path: &Path,
    sha256: Option<&str>,
) -> Result<(std::path::PathBuf, super::Loaded)> {
    if sha256.is_none() && loaded.config.plugins.require_pinned_plugins {
        return Err(Error::Refused(format!(
            "{owner} has no sha256 pin and [plugins] require_pinned_plugins is on; add sha256 = \"…\" (from `backup-cli plugin hash {}`)",
            path.display()
        )));
    }
    let path = loaded.config_relative(path);
    let plugin = runtime.load(&path, sha256)?;
    Ok((path, plugin))
}

/// What every plugin entry (`[[targets]]`, `[[notifiers]]`) grants alike.
pub struct GrantEntry<'a> {
    pub config: &'a std::collections::BTreeMap<String, String>,
    pub secrets: &'a std::collections::BTreeMap<String, String>,
    pub allow_hosts: &'a [String],
    pub allow_private: bool,
    pub memory: Option<&'a str>,
    pub timeout: Option<std::time::Duration>,
}

/// The grants of a plugin entry: its config values, its secrets resolved, its HTTP allow-list,
/// memory and deadline (defaults from [`policy`]); the world's own grants are added by the caller.
pub fn plugin_grants(owner: &str, entry: &GrantEntry<'_>) -> Result<Grants> {
    let mut secrets = std::collections::BTreeMap::new();
    for (name, reference) in entry.secrets {
        secrets.insert(name.clone(), resolve_secret(owner, name, reference)?);
    }
    let memory = match entry.memory {
        Some(text) => parse_bytes(text).ok_or_else(|| {
            Error::Config(format!(
                "{owner}: memory '{text}' is not a size like 256MiB"
            ))
        })?,
        None => policy::DEFAULT_MEMORY,
    };
    Ok(Grants {
        config: entry.config.clone(),
        secrets,
        allow_hosts: entry.allow_hosts.to_vec(),
        allow_private: entry.allow_private,
        memory,
        call_timeout: entry.timeout.unwrap_or(policy::DEFAULT_CALL_TIMEOUT),
        instances: 1,
        ..Grants::default()
    })
}
