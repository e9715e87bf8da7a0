//! The service put together: open the store, make sure an admin exists, bind, load the
//! models and open the engine in the background (so `/healthz` answers at once and
//! `/readyz` says when search is possible), start the periodic work (audit retention,
//! vector-index snapshots, interrupted re-embedding jobs), serve HTTP through
//! `facesearch_api::serve`, and save the vector index once requests have drained.
//!
//! This is the only place that knows every crate: the HTTP crate takes a ready
//! [`AppState`] and the store is opened by `facesearch_store::open`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use facesearch_api::{ApiConfig, AppState, ServeOptions, TlsFiles};
use facesearch_engine::{Engine, EngineConfig, EngineError, EngineObserver, IndexOrigin, PipelineLoader, Service};
use facesearch_face::{FacePipeline, Pack, PipelineConfig, PipelineError};
use facesearch_models::ModelCache;
use facesearch_store::{StoreConfig, StoreError};

/// Everything `facesearch serve` runs with, resolved from flags, environment and file
/// (the settings tree of `src/cli/settings.rs`): each crate's own config, and what
/// only the binary uses.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    /// The database the data is kept in: SQLite in `data_dir`, or PostgreSQL (with
    /// pgvector); made by `DatabaseArgs::store_config`, the one place that decides.
    pub store: StoreConfig,
    pub pack: Pack,
    pub models_dir: Option<PathBuf>,
    pub pipeline: PipelineConfig,
    /// The engine's settings (liveness threshold, analyses at once, vector index,
    /// quality minimums, duplicate score).
    pub engine: EngineConfig,
    pub api: ApiConfig,
    pub admin_user: String,
    pub admin_password: Option<String>,
    pub request_timeout: Duration,
    /// Audit entries older than this many days are deleted (0 keeps them forever).
    pub audit_retention_days: u32,
    /// Serve HTTPS with this certificate chain and private key (PEM files).
    pub tls: Option<TlsFiles>,
    /// How often a changed vector index is saved to `data_dir/vectors` (it is also
    /// saved at shutdown); `None` never saves it (every start re-reads the store).
    pub snapshot_interval: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error("could not open the store in {dir}: {source}")]
    Store { dir: PathBuf, source: StoreError },
    #[error("could not open the database {url}: {source}")]
    Database { url: String, source: StoreError },
    #[error("could not create the first admin user: {0}")]
    Admin(EngineError),
    #[error("the first admin's password (FACESEARCH_ADMIN_PASSWORD or --admin-password-file) is refused: {0}")]
    AdminPassword(String),
    #[error(transparent)]
    Http(#[from] facesearch_api::ServerError),
}

/// Creates the first admin on an empty store; prints a generated password once.
async fn bootstrap_admin(service: &Service, config: &ServerConfig) -> Result<(), WiringError> {
    if !service.has_no_user().await.map_err(WiringError::Admin)? {
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
        Err(EngineError::UserRule(e)) => return Err(WiringError::AdminPassword(e.to_string())),
        Err(e) => return Err(WiringError::Admin(e)),
    }
    if generated {
        // Printed once on the console, never logged.
        println!("created admin user {:?} with password {password}", config.admin_user);
        println!("(shown only now; set FACESEARCH_ADMIN_PASSWORD to choose it)");
    } else {
        println!("created admin user {:?} with the given password", config.admin_user);
    }
    Ok(())
}

/// Runs the service until SIGINT/SIGTERM (or until `stop` resolves).
pub async fn run(config: ServerConfig, stop: impl Future<Output = ()> + Send + 'static) -> Result<(), WiringError> {
    let location = config.store.location();
    let store = facesearch_store::open(&config.store).await.map_err(|source| match &config.store {
        StoreConfig::Sqlite { data_dir } => WiringError::Store { dir: data_dir.clone(), source },
        StoreConfig::Postgres(_) => WiringError::Database { url: location.clone(), source },
    })?;
    let state = AppState::new(store.clone(), config.api.clone());
    bootstrap_admin(state.service(), &config).await?;
    let listener = facesearch_api::bind(config.bind).await?;
    let addr = listener.local_addr().map_err(facesearch_api::ServerError::Serve)?;
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    println!("facesearch listening on {scheme}://{addr} (data in {location})");
    // Where a newcomer goes next: printed, like the lines above, for whoever started it.
    println!("  web console:  {scheme}://{addr}/console");
    println!("  API docs:     {scheme}://{addr}/docs (OpenAPI document at /openapi.json)");
    println!("  health:       {scheme}://{addr}/healthz (process), {scheme}://{addr}/readyz (ready to search)");

    if config.audit_retention_days > 0 {
        tokio::spawn(apply_audit_retention(state.service().clone(), u64::from(config.audit_retention_days)));
    }
    tokio::spawn(open_engine(state.clone(), config.clone()));

    let options = ServeOptions { request_timeout: config.request_timeout, tls: config.tls.clone() };
    let served = facesearch_api::serve(state.clone(), listener, &options, stop).await;
    // Requests have drained: save the vector index so the next start reads it
    // instead of every stored vector.
    if let Ok(engine) = state.engine() {
        match engine.save_snapshot().await {
            Ok(true) => tracing::info!("vector index saved for the next start"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not save the vector index; the next start re-reads the store"),
        }
    }
    Ok(served?)
}

/// Deletes audit entries older than `days` once a day.
async fn apply_audit_retention(service: Arc<Service>, days: u64) {
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
}

/// Loads the server's model pack, opens the engine on the store and publishes it on
/// `state`; then starts the snapshots and resumes interrupted re-embedding jobs. A
/// failure leaves search and enrolment unavailable (`/readyz` says so).
async fn open_engine(state: AppState, config: ServerConfig) {
    let pack = config.pack;
    if pack.non_commercial() {
        tracing::warn!("the insightface pack's pretrained models are licensed for non-commercial research only");
    }
    // Loads any pack's pipeline: the server's own now, others (for indexes moved to
    // them) on first need, with the same settings and model cache.
    let (models_dir, pipeline_config) = (config.models_dir.clone(), config.pipeline);
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
    let engine_config = config.engine;
    let snapshot_dir = config.snapshot_interval.map(|_| config.data_dir.join("vectors"));
    // Writes wait while the engine loads its vectors, then go through it.
    let observer: Arc<dyn EngineObserver> = state.metrics().clone();
    let loaded = state.service().load(pipeline, loader, engine_config, snapshot_dir, Some(observer)).await;
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
    if let Some(every) = config.snapshot_interval {
        tokio::spawn(save_snapshots(engine.clone(), every));
    }
    // Re-embedding jobs interrupted by the last stop continue where they were.
    if let Err(e) = engine.resume_reembeds().await {
        tracing::error!(error = %e, "could not resume the re-embedding jobs");
    }
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
