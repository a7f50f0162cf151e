//! The sandbox policy: every limit a plugin runs under, in one place.
//!
//! A plugin gets exactly what its `[[targets]]` entry grants and nothing else:
//!
//! | resource            | default                     | granted by                          |
//! |---------------------|-----------------------------|-------------------------------------|
//! | linear memory       | 256 MiB per instance        | `memory = "512MiB"`                 |
//! | time per call       | 30 s (epoch interruption and a host-side timeout) | `timeout = "60s"` |
//! | guest-held handles  | 1024 resources per instance | (fixed)                             |
//! | outbound HTTP       | none                        | `allow_hosts = ["s3.example.com"]`  |
//! | filesystem          | none                        | `dirs = [{ host, guest, mode }]`    |
//! | configuration       | none                        | `config = { key = "value" }`        |
//! | secrets             | none                        | `secrets = { name = "env:VAR" }`    |
//! | environment, args, stdio, sockets | never         | —                                   |
//!
//! Clocks and randomness are the WASI defaults (wall clock, monotonic clock, secure random).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Memory cap per plugin instance unless the entry says otherwise.
pub const DEFAULT_MEMORY: u64 = 256 * 1024 * 1024;
/// Deadline per plugin call unless the entry says otherwise.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the engine's epoch advances; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(50);
/// Resources (streams, HTTP bodies, file descriptors) one instance may hold at once.
pub const MAX_RESOURCES: usize = 1024;
/// Core instances, tables and memories one component instance may create.
pub const MAX_CORE_INSTANCES: usize = 64;
pub const MAX_TABLES: usize = 64;
pub const MAX_MEMORIES: usize = 16;
/// Instances of one plugin that may run calls at the same time.
pub const DEFAULT_INSTANCES: usize = 4;

/// A directory the plugin may see, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    pub host: PathBuf,
    pub guest: String,
    pub writable: bool,
}

/// What one plugin is granted (resolved: secrets are values here, never in the config file).
#[derive(Clone, Default)]
pub struct Grants {
    pub config: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
    pub allow_hosts: Vec<String>,
    pub dirs: Vec<DirGrant>,
    pub memory: u64,
    pub call_timeout: Duration,
    pub instances: usize,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("config", &self.config)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("allow_hosts", &self.allow_hosts)
            .field("dirs", &self.dirs)
            .field("memory", &self.memory)
            .field("call_timeout", &self.call_timeout)
            .field("instances", &self.instances)
            .finish()
    }
}

impl Grants {
    /// Whether an outbound request to `authority` (`host` or `host:port`) is allowed: an entry
    /// matches the host exactly, `host:port` exactly, or `*.domain` any subdomain.
    pub fn allows_host(&self, authority: &str) -> bool {
        let authority = authority.to_ascii_lowercase();
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => authority.as_str(),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.allow_hosts.iter().any(|entry| {
            let entry = entry.to_ascii_lowercase();
            if let Some(domain) = entry.strip_prefix("*.") {
                host.ends_with(&format!(".{domain}"))
            } else {
                entry == authority || entry == host
            }
        })
    }

    /// Epoch ticks that make up the call deadline.
    pub fn deadline_ticks(&self) -> u64 {
        (self.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
    }

    /// Capabilities in words, for `plugin list`.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for dir in &self.dirs {
            let mode = if dir.writable { "rw" } else { "ro" };
            out.push(format!(
                "dir {} -> {} ({mode})",
                dir.host.display(),
                dir.guest
            ));
        }
        for host in &self.allow_hosts {
            out.push(format!("http {host}"));
        }
        for name in self.secrets.keys() {
            out.push(format!("secret {name}"));
        }
        for key in self.config.keys() {
            out.push(format!("config {key}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_hosts_ports_and_subdomains_only() {
        let grants = Grants {
            allow_hosts: vec![
                "127.0.0.1:9000".into(),
                "s3.example.com".into(),
                "*.amazonaws.com".into(),
            ],
            ..Grants::default()
        };
        assert!(grants.allows_host("127.0.0.1:9000"));
        assert!(!grants.allows_host("127.0.0.1:9001"));
        assert!(grants.allows_host("s3.example.com"));
        assert!(grants.allows_host("s3.example.com:443"));
        assert!(grants.allows_host("bucket.s3.eu-west-1.amazonaws.com"));
        assert!(!grants.allows_host("amazonaws.com.evil.net"));
        assert!(!grants.allows_host("evil.example.com"));
    }
}
