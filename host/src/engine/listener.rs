//! The daemon's HTTP listener on `[daemon] listen`: `/metrics` (Prometheus text), `/health`
//! (JSON, 200 or 503) and `/` (the status page). Read-only: only GET and HEAD are answered.
//!
//! HTTP/1.1 through hyper (already built for the plugins' outbound HTTP), with limits a
//! listener on a monitoring network needs: headers of at most 16 KiB, read within 10 s, a
//! connection lives at most 60 s, at most 16 connections at once (more are closed at once),
//! and no request body is ever read. Scrapes arriving together share one [`Snapshot`].

use crate::config::Loaded;
use crate::engine::alerts::Scope;
use crate::engine::metrics::{self, Index, Snapshot, Sources};
use crate::engine::monitor::{Monitored, Status};
use crate::engine::status_page;
use crate::error::{Error, Result};
use crate::targets::Target;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};

const MAX_HEADER_BYTES: usize = 16 * 1024;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
const MAX_CONNECTIONS: usize = 16;
/// A snapshot younger than this answers the next request too (several scrapers, a page
/// reload), so a burst of requests costs one scrape.
const REUSE_FOR: Duration = Duration::from_secs(2);

/// What the listener reads: the same sources as `monitor metrics`.
pub struct View {
    pub loaded: Loaded,
    /// Every configured target, the primary first.
    pub targets: Vec<Arc<dyn Target>>,
    pub monitored: Vec<Monitored>,
    pub scope: Scope,
}

/// The metrics index, and the last snapshot taken with when.
type Kept = (Index, Option<(Instant, Arc<Snapshot>)>);

struct Served {
    view: View,
    state: Mutex<Kept>,
    connections: Arc<Semaphore>,
}

impl Served {
    fn sources(&self) -> Sources<'_> {
        Sources {
            loaded: &self.view.loaded,
            targets: &self.view.targets,
            monitored: &self.view.monitored,
            scope: &self.view.scope,
        }
    }

    async fn snapshot(&self) -> Arc<Snapshot> {
        let mut state = self.state.lock().await;
        if let Some((at, snapshot)) = &state.1
            && at.elapsed() < REUSE_FOR
        {
            return snapshot.clone();
        }
        let sources = self.sources();
        let snapshot = Arc::new(metrics::scrape(&sources, &mut state.0).await);
        if snapshot.index_grew() {
            state.0.save(&sources.index_path());
        }
        state.1 = Some((Instant::now(), snapshot.clone()));
        snapshot
    }
}

/// Binds `addr` and serves until the process ends. Binding fails with a configuration error
/// naming the address (in use, not local).
pub async fn start(addr: SocketAddr, view: View) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        Error::Config(format!(
            "[daemon] listen = \"{addr}\": cannot listen there: {e} (choose another port, or \"off\")"
        ))
    })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let index = Index::load(&index_path(&view));
    let served = Arc::new(Served {
        view,
        state: Mutex::new((index, None)),
        connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    });
    tokio::spawn(accept(listener, served));
    Ok(bound)
}

fn index_path(view: &View) -> std::path::PathBuf {
    metrics::index_path(&view.loaded.alert_state_dir(), &view.scope.repository)
}

async fn accept(listener: TcpListener, served: Arc<Served>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!("listener: accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(permit) = served.connections.clone().try_acquire_owned() else {
            tracing::warn!(
                "listener: {MAX_CONNECTIONS} connections are open; closed the one from {peer}"
            );
            continue;
        };
        let served = served.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                let served = served.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&served, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!("listener: connection from {peer}: {e}"),
                Err(_) => tracing::debug!(
                    "listener: connection from {peer} closed after {CONNECTION_LIFETIME:?}"
                ),
            }
        });
    }
}

async fn answer<B>(served: &Served, request: Request<B>) -> Response<Full<Bytes>> {
    let head = request.method() == Method::HEAD;
    if request.method() != Method::GET && !head {
        let mut refused = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET and HEAD are served\n".into(),
            head,
        );
        refused
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return refused;
    }
    match request.uri().path() {
        "/metrics" => {
            let snapshot = served.snapshot().await;
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics::render(&snapshot),
                head,
            )
        }
        "/health" => {
            let snapshot = served.snapshot().await;
            let health = metrics::health(&snapshot, &served.view.monitored).await;
            let status = if health.status == Status::Fail {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            let body = serde_json::to_string_pretty(&health).unwrap_or_default() + "\n";
            reply(status, "application/json", body, head)
        }
        "/" => {
            let snapshot = served.snapshot().await;
            let health = metrics::health(&snapshot, &served.view.monitored).await;
            reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                status_page::render(&snapshot, &health),
                head,
            )
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /, /metrics or /health\n".into(),
            head,
        ),
    }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: String,
    head: bool,
) -> Response<Full<Bytes>> {
    let length = body.len();
    let body = if head {
        Bytes::new()
    } else {
        Bytes::from(body)
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(length));
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    // The status page loads nothing from anywhere: no script, no external style or image.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'",
        ),
    );
    response
}
