//! Outbound HTTP for plugins: `wasi:http` requests pass through [`AllowListHooks`], which sends
//! only to the hosts the plugin's entry allow-lists and logs every refusal with the plugin's name.
//! (wasmtime's default sender opens raw TCP connections without consulting WASI socket
//! permissions, so this hook is the only gate.)

use super::policy::Grants;
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
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        if !self.grants.allows_host(&authority) {
            tracing::warn!(
                plugin = &*self.plugin,
                "denied an outbound request to {authority} ({} {}): not in the plugin's allow_hosts",
                request.method(),
                request.uri().path()
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        tracing::debug!(
            plugin = &*self.plugin,
            "{} {}",
            request.method(),
            request.uri()
        );
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
            ))
        })
    }
}
