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
//! | outbound TCP        | none                        | `allow_tcp = ["relay.internal:25"]` |
//! | private addresses   | refused (see [`Grants::admits`]) | `allow_private = true`         |
//! | filesystem          | none                        | `dirs = [{ host, guest, mode }]`    |
//! | configuration       | none                        | `config = { key = "value" }`        |
//! | secrets             | none                        | `secrets = { name = "env:VAR" }`    |
//! | one listing         | 2,000,000 keys, 100,000 pages, 10 min | `max_list_keys`, `max_list_pages`, `list_timeout` |
//! | one object (`get`)  | 256 MiB                     | `max_object_size = "1GiB"`          |
//! | texts (errors, log lines) | 4 KiB each, cut       | (fixed)                             |
//! | `describe`          | name 128 B, version 64 B, 32 capabilities of 64 B | (fixed)   |
//! | environment, args, stdio, UDP, listening | never  | —                                   |
//!
//! Clocks and randomness are the WASI defaults (wall clock, monotonic clock, secure random).

use std::collections::BTreeMap;
use std::net::IpAddr;
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
/// Linear memory past which a validator instance is dropped after its table instead of pooled.
pub const POOLED_MEMORY: usize = 16 * 1024 * 1024;
/// Keys one listing may return (a repository of ~2 TB in 1 MiB chunks) unless the entry says otherwise.
pub const DEFAULT_MAX_LIST_KEYS: usize = 2_000_000;
/// Pages one listing may take unless the entry says otherwise.
pub const DEFAULT_MAX_LIST_PAGES: usize = 100_000;
/// Time one listing may take, all pages together, unless the entry says otherwise.
pub const DEFAULT_LIST_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest object body `get` may return unless the entry says otherwise.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 256 * 1024 * 1024;
/// Longest error message or log line kept from a plugin; longer ones are cut.
pub const MAX_TEXT: usize = 4096;
/// Limits on `describe`'s answer.
pub const MAX_NAME: usize = 128;
pub const MAX_VERSION: usize = 64;
pub const MAX_CAPABILITIES: usize = 32;
pub const MAX_CAPABILITY: usize = 64;

/// How large the answers a plugin gives may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerLimits {
    pub max_list_keys: usize,
    pub max_list_pages: usize,
    pub list_timeout: Duration,
    pub max_object_size: u64,
}

impl Default for AnswerLimits {
    fn default() -> Self {
        AnswerLimits {
            max_list_keys: DEFAULT_MAX_LIST_KEYS,
            max_list_pages: DEFAULT_MAX_LIST_PAGES,
            list_timeout: DEFAULT_LIST_TIMEOUT,
            max_object_size: DEFAULT_MAX_OBJECT_SIZE,
        }
    }
}

/// `text` cut to [`MAX_TEXT`] bytes (at a character boundary), saying how long it was.
pub fn bounded_text(text: String) -> String {
    if text.len() <= MAX_TEXT {
        return text;
    }
    let mut cut = MAX_TEXT;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… (cut; {} bytes in all)", &text[..cut], text.len())
}

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
    /// `host:port` destinations the plugin may open TCP connections to (SMTP relays).
    pub allow_tcp: Vec<String>,
    /// Whether allow-listed names may resolve to loopback, link-local or private addresses.
    pub allow_private: bool,
    pub dirs: Vec<DirGrant>,
    pub memory: u64,
    pub call_timeout: Duration,
    pub instances: usize,
    pub limits: AnswerLimits,
}

impl std::fmt::Debug for Grants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grants")
            .field("config", &self.config)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("allow_hosts", &self.allow_hosts)
            .field("allow_tcp", &self.allow_tcp)
            .field("allow_private", &self.allow_private)
            .field("dirs", &self.dirs)
            .field("memory", &self.memory)
            .field("call_timeout", &self.call_timeout)
            .field("instances", &self.instances)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Grants {
    /// Whether the allow-list admits a request to `host` on `port` over `scheme`: an entry
    /// names the host exactly or `*.domain` (any subdomain), with `:PORT`, `:*` (any port) or
    /// no port (the scheme's default port only: 80 for http, 443 for https). `Ok(true)` when
    /// the matching entry names an address or `localhost` with an explicit port, which admits a
    /// loopback or private destination; `Err` says why the request is refused.
    pub fn admits(&self, scheme: &str, host: &str, port: u16) -> Result<bool, String> {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let default_port = if scheme.eq_ignore_ascii_case("https") {
            443
        } else {
            80
        };
        let mut named = None;
        for entry in &self.allow_hosts {
            let entry = entry.to_ascii_lowercase();
            let (pattern, entry_port) = split_port(&entry);
            let matches = match pattern.strip_prefix("*.") {
                Some(domain) => host.ends_with(&format!(".{domain}")),
                None => pattern == host,
            };
            if !matches {
                continue;
            }
            match entry_port {
                None if port == default_port => return Ok(false),
                Some("*") => return Ok(false),
                Some(p) if p.parse::<u16>().ok() == Some(port) => {
                    let literal = pattern == "localhost" || pattern.parse::<IpAddr>().is_ok();
                    return Ok(literal);
                }
                _ => named = Some(entry),
            }
        }
        Err(match named {
            Some(entry) => format!(
                "port {port} is not allowed by the allow_hosts entry \"{entry}\" (an entry without a port allows only port {default_port} for {scheme}; write \"{host}:{port}\" to allow it)"
            ),
            None => "not in the plugin's allow_hosts".to_string(),
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
        for destination in &self.allow_tcp {
            out.push(format!("tcp {destination}"));
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

/// An `allow_tcp` entry as (host, port): `host:PORT` with an exact port (brackets around IPv6).
pub fn tcp_destination(entry: &str) -> Option<(String, u16)> {
    let entry = entry.trim().to_ascii_lowercase();
    let (host, port) = split_port(&entry);
    let port = port?.parse::<u16>().ok()?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// `host:port` → (`host`, Some(`port`)); IPv6 literals in brackets keep their colons.
fn split_port(entry: &str) -> (&str, Option<&str>) {
    if let Some(rest) = entry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => (entry, None),
        };
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (entry, None),
    }
}

/// Why `addr` is not a public destination (loopback, link-local, private, unspecified…), if it is not.
pub fn non_public(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_unspecified() || v4.is_broadcast() || a == 0 {
                Some("unspecified")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared (carrier-grade NAT)")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return non_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else {
                None
            }
        }
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
                "localhost".into(),
                "minio.internal:*".into(),
                "[::1]:9001".into(),
            ],
            ..Grants::default()
        };
        assert_eq!(grants.admits("http", "127.0.0.1", 9000), Ok(true));
        assert!(grants.admits("http", "127.0.0.1", 9001).is_err());
        assert_eq!(grants.admits("https", "s3.example.com", 443), Ok(false));
        assert_eq!(grants.admits("http", "s3.example.com", 80), Ok(false));
        let refused = grants.admits("https", "s3.example.com", 9000).unwrap_err();
        assert!(refused.contains("\"s3.example.com:9000\""), "{refused}");
        assert_eq!(
            grants.admits("https", "bucket.s3.eu-west-1.amazonaws.com", 443),
            Ok(false)
        );
        assert!(
            grants
                .admits("https", "amazonaws.com.evil.net", 443)
                .is_err()
        );
        assert!(grants.admits("https", "evil.example.com", 443).is_err());
        // `localhost` alone: the default port only, and not as a loopback grant.
        assert_eq!(grants.admits("http", "localhost", 80), Ok(false));
        assert!(grants.admits("http", "localhost", 5432).is_err());
        assert_eq!(grants.admits("http", "minio.internal", 7000), Ok(false));
        assert_eq!(grants.admits("http", "[::1]", 9001), Ok(true));
    }

    #[test]
    fn tcp_destinations_need_an_exact_port() {
        assert_eq!(
            tcp_destination("Relay.Internal:25"),
            Some(("relay.internal".to_string(), 25))
        );
        assert_eq!(
            tcp_destination("[::1]:2525"),
            Some(("::1".to_string(), 2525))
        );
        assert_eq!(tcp_destination("relay.internal"), None);
        assert_eq!(tcp_destination("relay.internal:*"), None);
        assert_eq!(tcp_destination(":25"), None);
    }

    #[test]
    fn loopback_private_and_link_local_addresses_are_not_public() {
        for (addr, kind) in [
            ("127.0.0.1", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("192.168.0.1", Some("private")),
            ("172.16.0.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("0.0.0.0", Some("unspecified")),
            ("100.64.0.1", Some("shared (carrier-grade NAT)")),
            ("::1", Some("loopback")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("fd00::1", Some("private (unique local)")),
            ("fe80::1", Some("link-local")),
            ("52.216.0.1", None),
            ("2600:1f18::1", None),
        ] {
            assert_eq!(non_public(addr.parse().expect("address")), kind, "{addr}");
        }
    }
}
