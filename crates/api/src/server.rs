//! Serving HTTP: bind the listener, serve the router over HTTP or HTTPS with hyper's
//! connection limits, and shut down gracefully on SIGINT/SIGTERM. Opening the store,
//! loading the models and the background work of the service are the binary's wiring
//! (`src/wiring.rs`); this module takes the ready [`AppState`] and serves it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::state::AppState;

/// How the HTTP server itself runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A request that takes longer is answered 503 (the deadline of [`crate::limits`]).
    pub request_timeout: Duration,
    /// Serve HTTPS with this certificate chain and private key (PEM files).
    pub tls: Option<TlsFiles>,
}

/// PEM files for HTTPS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("could not listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error("could not load the TLS certificate {cert} or key {key}: {source}")]
    Tls { cert: PathBuf, key: PathBuf, source: std::io::Error },
    /// Settings that cannot work together ([`crate::ApiConfig::validate`]).
    #[error("{setting} must be {rule}, not {value}")]
    Setting { setting: &'static str, rule: String, value: String },
}

/// Binds the listening socket (before the models load, so `/healthz` answers at once).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
    tracing::info!("shutting down: finishing requests in flight");
}

/// Serves `state` on `listener` until SIGINT/SIGTERM (or until `stop` resolves); requests
/// in flight then get 30 s to finish. The engine may be set on `state` at any time
/// (until then search answers 503).
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    options: &ServeOptions,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    // Refusals left out of the audit log (over its flood limit) are counted; the count
    // is written once their minute is over.
    let flush_state = state.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(crate::audit::REFUSAL_WINDOW);
        loop {
            ticks.tick().await;
            crate::audit::flush_left_out(&flush_state).await;
        }
    });
    let metrics = state.metrics().clone();
    let app = crate::limits::apply(crate::router(state), options.request_timeout, options.tls.is_some());
    let app = crate::telemetry::apply(app, metrics);
    // The client address is recorded for failed-login throttling per address and for
    // the audit of refused requests (see `crate::client` for `--trusted-proxies`).
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let shutdown = async move {
        tokio::select! { _ = shutdown_signal() => {}, _ = stop => {} }
    };
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        // In-flight requests get this long to finish.
        stopper.graceful_shutdown(Some(Duration::from_secs(30)));
    });
    let listener = listener.into_std().map_err(ServerError::Serve)?;
    match &options.tls {
        None => {
            let mut server = axum_server::from_tcp(listener)
                .map_err(ServerError::Serve)?
                .handle(handle)
                .map(crate::conn::GuardAcceptor);
            limit_connections(server.http_builder());
            server.serve(service).await.map_err(ServerError::Serve)
        }
        Some(files) => {
            let tls_error = |source| ServerError::Tls { cert: files.cert.clone(), key: files.key.clone(), source };
            let rustls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
                .await
                .map_err(tls_error)?;
            let mut server = axum_server::from_tcp_rustls(listener, rustls)
                .map_err(ServerError::Serve)?
                .handle(handle)
                .map(crate::conn::GuardAcceptor);
            limit_connections(server.http_builder());
            server.serve(service).await.map_err(ServerError::Serve)
        }
    }
}

/// hyper's hard limits on a request head: about twice the documented ones
/// ([`crate::limits`]), so that a request over those reaches the router and gets its
/// JSON answer. Beyond these hyper answers itself (HTTP/1: rewritten to JSON by
/// [`crate::conn`]; HTTP/2: a bare `431`).
pub const HYPER_MAX_HEAD_BYTES: usize = 128 * 1024;
pub const HYPER_MAX_HEADERS: usize = 2 * crate::limits::MAX_HEADERS;

/// A client must send its whole header block within 10 s, in at most 128 KiB: a
/// half-sent request cannot hold a connection open, nor a huge header memory.
fn limit_connections(builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>) {
    builder
        .http1()
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(HYPER_MAX_HEAD_BYTES)
        .max_headers(HYPER_MAX_HEADERS);
    builder.http2().max_header_list_size(HYPER_MAX_HEAD_BYTES as u32);
}
