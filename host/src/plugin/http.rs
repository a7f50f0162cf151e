//! Outbound HTTP for plugins: `wasi:http` requests pass through [`AllowListHooks`], which sends
//! only to the hosts and ports the plugin's entry allow-lists, never (unless allowed explicitly) to
//! loopback, link-local or private addresses, and logs every refusal with the plugin's name.
//! (wasmtime's default sender opens raw TCP connections without consulting WASI socket
//! permissions, so this hook is the only gate.)

use super::policy::{self, Grants};
use std::sync::Arc;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

pub struct AllowListHooks {
    pub plugin: Arc<str>,
    pub grants: Arc<Grants>,
}

type SendFuture = Box<
    dyn std::future::Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for AllowListHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let uri = request.uri().clone();
        let scheme = uri.scheme_str().unwrap_or("http").to_ascii_lowercase();
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let (plugin, grants) = (self.plugin.clone(), self.grants.clone());
        let method = request.method().clone();
        let denied = {
            let (host, method) = (host.clone(), method.clone());
            move |why: String| {
                tracing::warn!(
                    plugin = &*plugin,
                    "denied an outbound request to {host}:{port} ({method} {}): {why}",
                    uri.path()
                );
                HttpError::HttpRequestDenied
            }
        };
        Box::new(async move {
            let literal = match grants.admits(&scheme, &host, port) {
                Ok(literal) => literal,
                Err(why) => return Err(denied(why)),
            };
            if !literal && !grants.allow_private {
                // Where the name leads now: a public name must not lead into this machine or
                // its network (the PostgreSQL port, cloud metadata, internal services).
                let name = host.trim_start_matches('[').trim_end_matches(']');
                if let Ok(addrs) = tokio::net::lookup_host((name, port)).await {
                    for addr in addrs {
                        if let Some(kind) = policy::non_public(addr.ip()) {
                            return Err(denied(format!(
                                "it resolves to {}, a {kind} address; allow it with an allow_hosts entry naming the address \
                                 (or localhost) and its port, or allow_private = true",
                                addr.ip()
                            )));
                        }
                    }
                }
            }
            tracing::debug!("{method} {}", request.uri());
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}
