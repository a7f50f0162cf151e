//! Outbound TCP for plugins (e.g. SMTP): a connection is admitted only to an address that an
//! `allow_tcp = ["relay.internal:25"]` entry names, by the same rules as the HTTP allow-list
//! (an exact port is required; a name leading to a loopback, link-local or private address
//! needs the entry to name the address or `localhost`, or `allow_private = true`). Every refusal
//! is logged with the plugin's name. Listening and UDP are never allowed.

use super::policy::{self, Grants};
use std::net::SocketAddr;
use wasmtime_wasi::sockets::SocketAddrUse;

/// Whether `plugin` may use `addr` this way.
pub async fn admits(plugin: &str, grants: &Grants, addr: SocketAddr, use_: SocketAddrUse) -> bool {
    match use_ {
        // `connect` binds implicitly to the wildcard address first: that is not a listener.
        SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
        SocketAddrUse::TcpConnect => match connect_allowed(grants, addr).await {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!(plugin, "denied a TCP connection to {addr}: {why}");
                false
            }
        },
        other => {
            tracing::warn!(
                plugin,
                "denied a socket use ({other:?}) on {addr}: plugins may only connect out"
            );
            false
        }
    }
}

/// `Ok` when an `allow_tcp` entry leads to `addr`; `Err` says why not.
async fn connect_allowed(grants: &Grants, addr: SocketAddr) -> Result<(), String> {
    let mut near = None;
    for entry in &grants.allow_tcp {
        let Some((host, port)) = policy::tcp_destination(entry) else {
            continue;
        };
        if port != addr.port() {
            continue;
        }
        let literal = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok();
        let resolved: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(found) => found.collect(),
            Err(_) => continue,
        };
        if !resolved.iter().any(|r| r.ip() == addr.ip()) {
            continue;
        }
        if literal || grants.allow_private {
            return Ok(());
        }
        match policy::non_public(addr.ip()) {
            Some(kind) => {
                near = Some(format!(
                    "\"{entry}\" resolves to {}, a {kind} address; name the address (or localhost) in allow_tcp, or set allow_private = true",
                    addr.ip()
                ))
            }
            None => return Ok(()),
        }
    }
    Err(near.unwrap_or_else(|| "not in the plugin's allow_tcp".to_string()))
}
