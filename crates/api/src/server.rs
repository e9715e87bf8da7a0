//! Starting and stopping the server: open the store, make sure an admin exists, bind,
//! load the models in the background (so `/healthz` answers at once and `/readyz`
//! says when search is possible), and shut down gracefully on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use facesearch_engine::{Engine, EngineConfig, EngineError, IndexOrigin, PipelineLoader, Service};
use facesearch_face::{FacePipeline, Pack, PipelineConfig, PipelineError, QualityMinimums};
use facesearch_models::ModelCache;
use facesearch_store::{PostgresConfig, PostgresStore, SqliteStore, Store};
use tokio::net::TcpListener;

use crate::state::{ApiConfig, AppState};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    /// Keep the data in PostgreSQL (with pgvector) instead of SQLite in `data_dir`.
    pub postgres: Option<PostgresConfig>,
    pub pack: Pack,
    pub models_dir: Option<PathBuf>,
    pub pipeline: PipelineConfig,
    pub liveness_threshold: f32,
    pub api: ApiConfig,
    pub admin_user: String,
    pub admin_password: Option<String>,
    pub request_timeout: Duration,
    pub max_concurrent_analyses: usize,
    /// How long a photo may wait for an analysis slot before the request gets 503.
    pub queue_timeout: Duration,
    /// Audit entries older than this many days are deleted (0 keeps them forever).
    pub audit_retention_days: u32,
    /// Serve HTTPS with this certificate chain and private key (PEM files).
    pub tls: Option<TlsFiles>,
    /// Exact or approximate vector search, by collection size.
    pub index: facesearch_index::IndexConfig,
    /// How often a changed vector index is saved to `data_dir/vectors` (it is also
    /// saved at shutdown); `None` never saves it (every start re-reads the store).
    pub snapshot_interval: Option<Duration>,
    /// Test-only: re-embedding jobs pause after staging this many images (see
    /// `EngineConfig::reembed_pause_after`).
    pub reembed_pause_after: Option<u64>,
    /// The least face quality an enrolment needs.
    pub quality: QualityMinimums,
    /// Score from which two records' faces count as one person (duplicate jobs'
    /// default, and the bar of `check_duplicates`).
    pub duplicate_score: f64,
}

/// PEM files for HTTPS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("could not open the store in {dir}: {source}")]
    Store { dir: PathBuf, source: facesearch_store::StoreError },
    #[error("could not open the database {url}: {source}")]
    Database { url: String, source: facesearch_store::StoreError },
    #[error("could not create the first admin user: {0}")]
    Admin(facesearch_engine::EngineError),
    #[error("FACESEARCH_ADMIN_PASSWORD is refused: {0}")]
    AdminPassword(String),
    #[error("could not listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error("could not load the TLS certificate {cert} or key {key}: {source}")]
    Tls { cert: PathBuf, key: PathBuf, source: std::io::Error },
}

/// Creates the first admin on an empty store; prints a generated password once.
async fn bootstrap_admin(service: &Service, config: &ServerConfig) -> Result<(), ServerError> {
    if !service.has_no_user().await.map_err(ServerError::Admin)? {
        return Ok(());
    }
    let (password, generated) = match &config.admin_password {
        Some(p) if !p.is_empty() => (p.clone(), false),
        _ => {
            let bytes: [u8; 18] = rand::random();
            (bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(), true)
        }
    };
    match service.create_first_admin(&config.admin_user, &password).await {
        Ok(true) => {}
        // Another node sharing the database created it at the same moment.
        Ok(false) => return Ok(()),
        // The rule every password obeys: not only spaces or control characters.
        Err(EngineError::UserRule(e)) => return Err(ServerError::AdminPassword(e.to_string())),
        Err(e) => return Err(ServerError::Admin(e)),
    }
    if generated {
        // Printed once on the console, never logged.
        println!("created admin user {:?} with password {password}", config.admin_user);
        println!("(shown only now; set FACESEARCH_ADMIN_PASSWORD to choose it)");
    } else {
        println!("created admin user {:?} with the password from FACESEARCH_ADMIN_PASSWORD", config.admin_user);
    }
    Ok(())
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

/// Runs the server until SIGINT/SIGTERM (or until `stop` resolves).
pub async fn run(config: ServerConfig, stop: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
    let (store, location): (Arc<dyn Store>, String) = match &config.postgres {
        None => {
            let store = SqliteStore::open(&config.data_dir)
                .map_err(|source| ServerError::Store { dir: config.data_dir.clone(), source })?;
            (Arc::new(store), config.data_dir.display().to_string())
        }
        Some(pg) => {
            let url = facesearch_store::redact_url(&pg.url);
            let store = PostgresStore::connect(pg)
                .await
                .map_err(|source| ServerError::Database { url: url.clone(), source })?;
            (Arc::new(store), url)
        }
    };
    let state = AppState::new(store.clone(), config.api.clone());
    bootstrap_admin(state.service(), &config).await?;
    let listener =
        TcpListener::bind(config.bind).await.map_err(|source| ServerError::Bind { addr: config.bind, source })?;
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    println!("facesearch listening on {scheme}://{addr} (data in {location})");
    // Where a newcomer goes next: printed, like the lines above, for whoever started it.
    println!("  web console:  {scheme}://{addr}/console");
    println!("  API docs:     {scheme}://{addr}/docs (OpenAPI document at /openapi.json)");
    println!("  health:       {scheme}://{addr}/healthz (process), {scheme}://{addr}/readyz (ready to search)");

    if config.audit_retention_days > 0 {
        let (service, days) = (state.service().clone(), u64::from(config.audit_retention_days));
        tokio::spawn(async move {
            let mut daily = tokio::time::interval(Duration::from_secs(24 * 60 * 60));
            loop {
                daily.tick().await;
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                let cutoff = facesearch_store::format_rfc3339(now.saturating_sub(Duration::from_secs(days * 86_400)));
                match service.prune_audit(&cutoff).await {
                    Ok(n) if n > 0 => tracing::info!(deleted = n, before = %cutoff, "audit retention applied"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "audit retention failed"),
                }
            }
        });
    }
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
    let loader_state = state.clone();
    let loader_config = config.clone();
    tokio::spawn(async move {
        let pack = loader_config.pack;
        if pack.non_commercial() {
            tracing::warn!("the insightface pack's pretrained models are licensed for non-commercial research only");
        }
        // Loads any pack's pipeline: the server's own now, others (for indexes moved to
        // them) on first need, with the same settings and model cache.
        let (models_dir, pipeline_config) = (loader_config.models_dir.clone(), loader_config.pipeline);
        let loader: PipelineLoader = Arc::new(move |pack| {
            let cache = ModelCache::resolve(models_dir.clone()).map_err(PipelineError::from)?;
            FacePipeline::load(pack, &cache, pipeline_config)
        });
        let load_default = loader.clone();
        let load = tokio::task::spawn_blocking(move || load_default(pack)).await;
        let pipeline = match load {
            Ok(Ok(p)) => Arc::new(p),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not load the face models; search and enrolment stay unavailable");
                eprintln!("error: could not load the face models: {e}");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "model loading task failed");
                return;
            }
        };
        let engine_config = EngineConfig {
            liveness_threshold: loader_config.liveness_threshold,
            max_concurrent_analyses: loader_config.max_concurrent_analyses,
            queue_timeout: loader_config.queue_timeout,
            index: loader_config.index,
            reembed_pause_after: loader_config.reembed_pause_after,
            quality: loader_config.quality,
            duplicate_score: loader_config.duplicate_score,
        };
        let snapshot_dir = loader_config.snapshot_interval.map(|_| loader_config.data_dir.join("vectors"));
        // Writes wait while the engine loads its vectors, then go through it.
        let observer: Arc<dyn facesearch_engine::EngineObserver> = loader_state.metrics().clone();
        let loaded = loader_state.service().load(pipeline, loader, engine_config, snapshot_dir, Some(observer)).await;
        let engine = match loaded {
            Ok(engine) => engine,
            Err(e) => {
                tracing::error!(error = %e, "could not open the engine");
                eprintln!("error: could not open the engine: {e}");
                return;
            }
        };
        let faces: usize = engine.index_stats().values().map(|s| s.vectors).sum();
        match engine.index_origin() {
            IndexOrigin::Database => println!("facesearch ready (model pack {pack}; vectors searched in the database)"),
            origin => println!("facesearch ready (model pack {pack}; {faces} faces read from the {})", origin.as_str()),
        }
        if let Some(every) = loader_config.snapshot_interval {
            tokio::spawn(save_snapshots(engine.clone(), every));
        }
        // Re-embedding jobs interrupted by the last stop continue where they were.
        if let Err(e) = engine.resume_reembeds().await {
            tracing::error!(error = %e, "could not resume the re-embedding jobs");
        }
    });

    let metrics = state.metrics().clone();
    let final_state = state.clone();
    let app = crate::limits::apply(crate::router(state), config.request_timeout, config.tls.is_some());
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
    let served = match &config.tls {
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
    };
    // Requests have drained: save the vector index so the next start reads it
    // instead of every stored vector.
    if let Ok(engine) = final_state.engine() {
        match engine.save_snapshot().await {
            Ok(true) => tracing::info!("vector index saved for the next start"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not save the vector index; the next start re-reads the store"),
        }
    }
    served
}

/// Saves the vector index every `every` while it keeps changing. A crash loses
/// nothing: the store is the truth, and a stale snapshot is detected and rebuilt.
async fn save_snapshots(engine: Arc<Engine>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Err(e) = engine.save_snapshot().await {
            tracing::warn!(error = %e, "could not save the vector index");
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
