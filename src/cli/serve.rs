//! `facesearch serve`: settings come from flags, then `FACESEARCH_*` environment
//! variables, then an optional TOML config file, then defaults.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use facesearch_api::client::IpNet;
use facesearch_api::{ApiConfig, TlsFiles};
use facesearch_face::{DecodeLimits, LivenessConfig, Pack, PipelineConfig, QualityMinimums, RuntimeOptions};
use facesearch_index::IndexConfig;
use serde::Deserialize;

use super::database::DatabaseArgs;
use crate::wiring::ServerConfig;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys, e.g. `bind = "0.0.0.0:8080"`).
    #[arg(long, env = "FACESEARCH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "FACESEARCH_BIND")]
    bind: Option<SocketAddr>,
    /// Where the database lives [default: ./facesearch-data].
    #[arg(long, env = "FACESEARCH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    database: DatabaseArgs,
    /// Model pack: open or insightface [default: open].
    #[arg(long, env = "FACESEARCH_PACK")]
    pack: Option<Pack>,
    /// Where models are cached [default: the user's cache dir].
    #[arg(long, env = "FACESEARCH_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// Live probability below which a search probe is refused as a spoof [default: 0.5].
    #[arg(long, env = "FACESEARCH_LIVENESS_THRESHOLD")]
    liveness_threshold: Option<f32>,
    /// Smallest context around a face (crop side / face side) for which liveness is judged;
    /// below it a search is refused with LIVENESS_CANNOT_JUDGE [default: 1.0, only a face
    /// larger than the photo; a close-up is judged with the fusion's close-up weights].
    #[arg(long, env = "FACESEARCH_LIVENESS_MIN_CONTEXT")]
    liveness_min_context: Option<f32>,
    /// Largest accepted image in bytes [default: 15728640].
    #[arg(long, env = "FACESEARCH_MAX_IMAGE_BYTES")]
    max_image_bytes: Option<usize>,
    /// Largest accepted image in pixels [default: 40000000].
    #[arg(long, env = "FACESEARCH_MAX_IMAGE_PIXELS")]
    max_image_pixels: Option<u64>,
    /// Largest max_results a search may ask for [default: 100].
    #[arg(long, env = "FACESEARCH_MAX_RESULTS_CAP")]
    max_results_cap: Option<usize>,
    /// Faces of one photo that a `faces=all` search analyses and searches at most,
    /// largest first [default: 10].
    #[arg(long, env = "FACESEARCH_MAX_SEARCH_FACES")]
    max_search_faces: Option<usize>,
    /// Smallest face (pixels, shorter box side) that is embedded [default: 32].
    #[arg(long, env = "FACESEARCH_MIN_FACE_SIZE")]
    min_face_size: Option<f32>,
    /// Seconds a request may take before it is answered 503 [default: 60].
    #[arg(long, env = "FACESEARCH_REQUEST_TIMEOUT")]
    request_timeout: Option<u64>,
    /// Photos analysed at once [default: number of cores].
    #[arg(long, env = "FACESEARCH_WORKERS")]
    workers: Option<usize>,
    /// Requests handled at once; more get 503 at once [default: 64].
    #[arg(long, env = "FACESEARCH_MAX_IN_FLIGHT")]
    max_in_flight: Option<usize>,
    /// Requests one user may have in flight at once; more get 503 at once
    /// [default: a quarter of --max-in-flight, at least 1].
    #[arg(long, env = "FACESEARCH_MAX_IN_FLIGHT_PER_USER")]
    max_in_flight_per_user: Option<usize>,
    /// Of --max-in-flight, the slots only admins may take, so that other users together
    /// cannot lock administration out [default: an eighth of --max-in-flight, at least 1].
    #[arg(long, env = "FACESEARCH_ADMIN_RESERVED_SLOTS")]
    admin_reserved_slots: Option<usize>,
    /// Bytes of request bodies held in memory at once (64 KiB of each body are not
    /// counted); beyond it an upload waits up to 5 s, then gets 503. At least one
    /// whole body; room for one is kept for admins [default: 268435456].
    #[arg(long, env = "FACESEARCH_UPLOAD_BUDGET_BYTES")]
    upload_budget_bytes: Option<usize>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "FACESEARCH_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, env = "FACESEARCH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Days the audit log is kept; 0 keeps it forever [default: 365].
    #[arg(long, env = "FACESEARCH_AUDIT_RETENTION_DAYS")]
    audit_retention_days: Option<u32>,
    /// Name of the admin user created on first start [default: admin].
    #[arg(long, env = "FACESEARCH_ADMIN_USER")]
    admin_user: Option<String>,
    /// A file holding the first admin's password (its first line), e.g. a systemd
    /// credential; FACESEARCH_ADMIN_PASSWORD, when set, wins. Never the password itself
    /// on the command line.
    #[arg(long, env = "FACESEARCH_ADMIN_PASSWORD_FILE")]
    admin_password_file: Option<PathBuf>,
    /// Make /metrics admin-only (HTTP Basic); by default it needs no credentials.
    #[arg(long, env = "FACESEARCH_METRICS_AUTH")]
    metrics_auth: bool,
    /// Reverse proxies (CIDRs or addresses, comma-separated, e.g. 10.0.0.0/8,192.0.2.7)
    /// whose X-Forwarded-For names the client; from any other peer the header is
    /// ignored. The client address is what failed logins are throttled by [default: none].
    #[arg(long, env = "FACESEARCH_TRUSTED_PROXIES", value_delimiter = ',', value_parser = facesearch_api::client::parse_proxy)]
    trusted_proxies: Vec<IpNet>,
    /// Make the liveness check mandatory: a search with perform_liveness_check=false from
    /// any user but an admin is refused (403 LIVENESS_REQUIRED).
    #[arg(long, env = "FACESEARCH_REQUIRE_LIVENESS")]
    require_liveness: bool,
    /// Indexes with at least this many faces are searched through an approximate
    /// (HNSW) graph, smaller ones by an exact scan [default: none: every search is exact,
    /// the only way to a threshold recall of 0.999 that is also the fastest; see README].
    #[arg(long, env = "FACESEARCH_EXACT_SEARCH_BELOW")]
    exact_search_below: Option<usize>,
    /// HNSW candidate list size at search time: higher is slower and finds more [default: 2048].
    #[arg(long, env = "FACESEARCH_ANN_EF_SEARCH")]
    ann_ef_search: Option<usize>,
    /// Seconds between saves of a changed vector index to DATA_DIR/vectors, so a restart
    /// need not re-read every vector; 0 never saves it [default: 60].
    #[arg(long, env = "FACESEARCH_INDEX_SAVE_INTERVAL")]
    index_save_interval: Option<u64>,
    /// Score (0-100, the scale of search) from which two records' faces count as one person:
    /// the default of duplicate jobs and the bar of `check_duplicates=true` [default: 80].
    #[arg(long, env = "FACESEARCH_DUPLICATE_SCORE")]
    duplicate_score: Option<f64>,
    /// Enrolment quality minimums (see docs/API.md, Face quality); 0 turns a minimum off.
    #[command(flatten)]
    quality: QualityArgs,
    /// Stop when standard input closes (used by tests that start the server as a child).
    #[arg(long, hide = true)]
    exit_on_stdin_close: bool,
    /// Test-only: re-embedding jobs stop (still running, resumed at the next start) once
    /// this many images of their index are staged, so a test can interrupt one at a
    /// known point.
    #[arg(long, hide = true)]
    reembed_pause_after: Option<u64>,
}

/// The enrolment quality limits; each falls back to the config file, then the default.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct QualityArgs {
    /// Smallest face box side (pixels) enrolled [default: 32].
    #[arg(long, env = "FACESEARCH_QUALITY_MIN_FACE_SIZE")]
    quality_min_face_size: Option<f32>,
    /// Smallest inter-ocular distance (pixels) enrolled [default: 15].
    #[arg(long, env = "FACESEARCH_QUALITY_MIN_EYE_DISTANCE")]
    quality_min_eye_distance: Option<f32>,
    /// Smallest sharpness (variance of the Laplacian of the aligned face) enrolled [default: 10].
    #[arg(long, env = "FACESEARCH_QUALITY_MIN_SHARPNESS")]
    quality_min_sharpness: Option<f32>,
    /// Largest JPEG blockiness enrolled [default: 2.0].
    #[arg(long, env = "FACESEARCH_QUALITY_MAX_COMPRESSION")]
    quality_max_compression: Option<f32>,
    /// Darkest mean grey level (0-255) of the face enrolled [default: 25].
    #[arg(long, env = "FACESEARCH_QUALITY_MIN_BRIGHTNESS")]
    quality_min_brightness: Option<f32>,
    /// Brightest mean grey level (0-255) of the face enrolled [default: 230].
    #[arg(long, env = "FACESEARCH_QUALITY_MAX_BRIGHTNESS")]
    quality_max_brightness: Option<f32>,
    /// Largest fraction (0-1) of the face clipped dark or bright [default: 0.5].
    #[arg(long, env = "FACESEARCH_QUALITY_MAX_CLIPPED")]
    quality_max_clipped: Option<f32>,
    /// Largest |yaw| in degrees [default: 60].
    #[arg(long, env = "FACESEARCH_QUALITY_MAX_YAW")]
    quality_max_yaw: Option<f32>,
    /// Largest |pitch| in degrees [default: 40].
    #[arg(long, env = "FACESEARCH_QUALITY_MAX_PITCH")]
    quality_max_pitch: Option<f32>,
    /// Smallest detector confidence (0-1) [default: 0.7].
    #[arg(long, env = "FACESEARCH_QUALITY_MIN_DETECTOR_SCORE")]
    quality_min_detector_score: Option<f32>,
}

impl QualityArgs {
    /// Flags (and environment) over the file's values over the defaults.
    fn resolve(&self, file: &QualityArgs) -> QualityMinimums {
        let d = QualityMinimums::default();
        let pick = |flag: Option<f32>, file: Option<f32>, default: f32| flag.or(file).unwrap_or(default);
        QualityMinimums {
            face_size: pick(self.quality_min_face_size, file.quality_min_face_size, d.face_size),
            eye_distance: pick(self.quality_min_eye_distance, file.quality_min_eye_distance, d.eye_distance),
            sharpness: pick(self.quality_min_sharpness, file.quality_min_sharpness, d.sharpness),
            max_compression: pick(self.quality_max_compression, file.quality_max_compression, d.max_compression),
            brightness: pick(self.quality_min_brightness, file.quality_min_brightness, d.brightness),
            max_brightness: pick(self.quality_max_brightness, file.quality_max_brightness, d.max_brightness),
            max_clipped: pick(self.quality_max_clipped, file.quality_max_clipped, d.max_clipped),
            max_yaw: pick(self.quality_max_yaw, file.quality_max_yaw, d.max_yaw),
            max_pitch: pick(self.quality_max_pitch, file.quality_max_pitch, d.max_pitch),
            detector_score: pick(self.quality_min_detector_score, file.quality_min_detector_score, d.detector_score),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bind: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    pack: Option<String>,
    models_dir: Option<PathBuf>,
    liveness_threshold: Option<f32>,
    liveness_min_context: Option<f32>,
    max_image_bytes: Option<usize>,
    max_image_pixels: Option<u64>,
    max_results_cap: Option<usize>,
    max_search_faces: Option<usize>,
    min_face_size: Option<f32>,
    request_timeout: Option<u64>,
    workers: Option<usize>,
    audit_retention_days: Option<u32>,
    max_in_flight: Option<usize>,
    max_in_flight_per_user: Option<usize>,
    admin_reserved_slots: Option<usize>,
    upload_budget_bytes: Option<usize>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    admin_user: Option<String>,
    admin_password_file: Option<PathBuf>,
    metrics_auth: Option<bool>,
    /// CIDRs or addresses, as a list or one comma-separated string.
    trusted_proxies: Option<StringOrList>,
    require_liveness: Option<bool>,
    exact_search_below: Option<usize>,
    ann_ef_search: Option<usize>,
    index_save_interval: Option<u64>,
    duplicate_score: Option<f64>,
    #[serde(flatten)]
    quality: QualityArgs,
}

/// A config-file value given either as `"a,b"` or as `["a", "b"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn items(&self) -> Vec<&str> {
        match self {
            StringOrList::One(s) => s.split(',').filter(|x| !x.trim().is_empty()).collect(),
            StringOrList::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// `--trusted-proxies` over the config file's `trusted_proxies`.
fn trusted_proxies(flag: Vec<IpNet>, file: Option<&StringOrList>) -> anyhow::Result<Vec<IpNet>> {
    if !flag.is_empty() {
        return Ok(flag);
    }
    let Some(list) = file else { return Ok(Vec::new()) };
    list.items()
        .into_iter()
        .map(|item| facesearch_api::client::parse_proxy(item).map_err(|e| anyhow::anyhow!("trusted_proxies: {e}")))
        .collect()
}

fn resolve(args: ServeArgs) -> anyhow::Result<(ServerConfig, bool)> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let pack = match (args.pack, file.pack) {
        (Some(p), _) => p,
        (None, Some(p)) => p.parse().map_err(anyhow::Error::msg)?,
        (None, None) => Pack::Open,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = args.workers.or(file.workers).unwrap_or(cores).max(1);
    let max_image_bytes = args.max_image_bytes.or(file.max_image_bytes).unwrap_or(15 * 1024 * 1024);
    let liveness_threshold =
        args.liveness_threshold.or(file.liveness_threshold).unwrap_or(facesearch_face::liveness::DEFAULT_THRESHOLD);
    anyhow::ensure!((0.0..=1.0).contains(&liveness_threshold), "liveness_threshold must be between 0 and 1");
    let duplicate_score =
        args.duplicate_score.or(file.duplicate_score).unwrap_or(facesearch_engine::DEFAULT_DUPLICATE_SCORE);
    anyhow::ensure!((0.0..=100.0).contains(&duplicate_score), "duplicate_score must be between 0 and 100");
    let quality = args.quality.resolve(&file.quality);
    let pipeline = PipelineConfig {
        decode: DecodeLimits {
            max_bytes: max_image_bytes,
            max_pixels: args.max_image_pixels.or(file.max_image_pixels).unwrap_or(40_000_000),
        },
        min_face_px: args.min_face_size.or(file.min_face_size).unwrap_or(32.0),
        liveness: LivenessConfig {
            min_context: args
                .liveness_min_context
                .or(file.liveness_min_context)
                .unwrap_or(LivenessConfig::default().min_context),
            ..LivenessConfig::default()
        },
        // Requests run concurrently: split the cores between them.
        runtime: RuntimeOptions { intra_threads: (cores / workers).max(1), sessions_per_model: workers },
        ..PipelineConfig::default()
    };
    let defaults = IndexConfig::default();
    let index = IndexConfig {
        ann_min_rows: args.exact_search_below.or(file.exact_search_below).unwrap_or(defaults.ann_min_rows).max(1),
        ef_search: args.ann_ef_search.or(file.ann_ef_search).unwrap_or(defaults.ef_search).clamp(1, 10_000),
        ..defaults
    };
    let save_every = args.index_save_interval.or(file.index_save_interval).unwrap_or(60);
    let max_in_flight = args.max_in_flight.or(file.max_in_flight).unwrap_or(64).max(1);
    let max_in_flight_per_user = args
        .max_in_flight_per_user
        .or(file.max_in_flight_per_user)
        .unwrap_or_else(|| facesearch_api::admission::default_per_user(max_in_flight))
        .clamp(1, max_in_flight);
    let admin_reserved_slots = args
        .admin_reserved_slots
        .or(file.admin_reserved_slots)
        .unwrap_or_else(|| facesearch_api::admission::default_admin_reserve(max_in_flight));
    anyhow::ensure!(
        admin_reserved_slots < max_in_flight,
        "admin_reserved_slots ({admin_reserved_slots}) must be less than max_in_flight ({max_in_flight})"
    );
    let config = ServerConfig {
        bind: args.bind.or(file.bind).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        data_dir: args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("facesearch-data")),
        postgres: args.database.postgres()?,
        pack,
        models_dir: args.models_dir.or(file.models_dir),
        pipeline,
        liveness_threshold,
        api: ApiConfig {
            max_image_bytes,
            max_results_cap: args.max_results_cap.or(file.max_results_cap).unwrap_or(100).max(1),
            pack,
            max_in_flight,
            max_in_flight_per_user,
            admin_reserved_slots,
            upload_budget: args
                .upload_budget_bytes
                .or(file.upload_budget_bytes)
                .unwrap_or(facesearch_api::admission::DEFAULT_UPLOAD_BUDGET),
            metrics_auth: args.metrics_auth || file.metrics_auth.unwrap_or(false),
            trusted_proxies: trusted_proxies(args.trusted_proxies, file.trusted_proxies.as_ref())?,
            require_liveness: args.require_liveness || file.require_liveness.unwrap_or(false),
            max_search_faces: args
                .max_search_faces
                .or(file.max_search_faces)
                .unwrap_or(facesearch_api::state::DEFAULT_MAX_SEARCH_FACES)
                .max(1),
            ..ApiConfig::default()
        },
        admin_user: args.admin_user.or(file.admin_user).unwrap_or_else(|| "admin".into()),
        // From the environment or a file only: a password never belongs in a flag.
        admin_password: match std::env::var("FACESEARCH_ADMIN_PASSWORD") {
            Ok(p) => Some(p),
            Err(_) => match args.admin_password_file.or(file.admin_password_file) {
                Some(path) => Some(read_password_file(&path)?),
                None => None,
            },
        },
        request_timeout: Duration::from_secs(args.request_timeout.or(file.request_timeout).unwrap_or(60).max(1)),
        max_concurrent_analyses: workers,
        queue_timeout: Duration::from_secs(10),
        audit_retention_days: args.audit_retention_days.or(file.audit_retention_days).unwrap_or(365),
        tls: match (args.tls_cert.or(file.tls_cert), args.tls_key.or(file.tls_key)) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => anyhow::bail!("TLS needs both a certificate (tls_cert) and a key (tls_key)"),
        },
        index,
        snapshot_interval: (save_every > 0).then(|| Duration::from_secs(save_every)),
        reembed_pause_after: args.reembed_pause_after,
        quality,
        duplicate_score,
    };
    Ok((config, args.exit_on_stdin_close))
}

/// The first line of a password file, without its line ending.
fn read_password_file(path: &std::path::Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading the admin password file {}", path.display()))?;
    let line = text.lines().next().unwrap_or_default();
    anyhow::ensure!(!line.is_empty(), "the admin password file {} is empty", path.display());
    Ok(line.to_string())
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (config, exit_on_stdin_close) = resolve(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        if exit_on_stdin_close {
            std::thread::spawn(move || {
                let mut sink = [0u8; 64];
                let mut stdin = std::io::stdin();
                while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
                let _ = tx.send(());
            });
        }
        let stop = async move {
            if exit_on_stdin_close {
                let _ = rx.await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        crate::wiring::run(config, stop).await
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_settings_come_from_the_config_file_under_flags() {
        let file: FileConfig = toml::from_str(
            "bind = \"127.0.0.1:9000\"\nquality_min_sharpness = 5.0\nquality_max_yaw = 30.0\nduplicate_score = 85.0\n",
        )
        .expect("a valid config");
        assert_eq!(file.duplicate_score, Some(85.0));
        let flags = QualityArgs { quality_max_yaw: Some(20.0), ..QualityArgs::default() };
        let m = flags.resolve(&file.quality);
        assert_eq!((m.sharpness, m.max_yaw), (5.0, 20.0), "file, then flag over file");
        assert_eq!(m.max_compression, QualityMinimums::default().max_compression, "the rest default");
        assert!(toml::from_str::<FileConfig>("quality_min_sharpnes = 5.0\n").is_err(), "a misspelt key is refused");
    }

    /// The config file the Debian package installs shows every setting: uncommenting
    /// all its examples gives a file that parses (no misspelt key) and sets every key.
    #[test]
    fn the_packaged_config_shows_every_setting() {
        let example = include_str!("../../packaging/deb/config.toml");
        let uncommented: String = example
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')) => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let file: FileConfig = toml::from_str(&uncommented).expect("the packaged config parses");
        // Every field is an Option: one left out prints as `None`.
        let shown = format!("{file:?}");
        assert!(!shown.contains("None"), "a setting is missing from packaging/deb/config.toml: {shown}");
    }

    #[test]
    fn trusted_proxies_come_from_the_flag_or_the_config_file() {
        let net = |s: &str| facesearch_api::client::parse_proxy(s).expect("a CIDR");
        let file: FileConfig = toml::from_str("trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\"]\n").expect("a list");
        let from_file = trusted_proxies(Vec::new(), file.trusted_proxies.as_ref()).expect("valid");
        assert_eq!(from_file, [net("10.0.0.0/8"), net("192.0.2.7/32")]);
        let file: FileConfig = toml::from_str("trusted_proxies = \"10.0.0.0/8, ::1\"\n").expect("a string");
        let from_file = trusted_proxies(Vec::new(), file.trusted_proxies.as_ref()).expect("valid");
        assert_eq!(from_file, [net("10.0.0.0/8"), net("::1/128")]);
        let flag = trusted_proxies(vec![net("127.0.0.1")], file.trusted_proxies.as_ref()).expect("valid");
        assert_eq!(flag, [net("127.0.0.1/32")], "the flag wins");
        let file: FileConfig = toml::from_str("trusted_proxies = [\"10.0.0.0/33\"]\n").expect("parses");
        let e = trusted_proxies(Vec::new(), file.trusted_proxies.as_ref()).expect_err("a bad CIDR");
        assert!(e.to_string().contains("trusted_proxies"), "{e}");
        assert_eq!(trusted_proxies(Vec::new(), None).expect("none"), []);
    }

    fn resolved(flags: &[&str]) -> anyhow::Result<ServerConfig> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let argv = std::iter::once("serve").chain(flags.iter().copied());
        let cli = <Cli as clap::Parser>::try_parse_from(argv)?;
        resolve(cli.serve).map(|(config, _)| config)
    }

    #[test]
    fn the_store_is_sqlite_in_the_data_dir_unless_a_postgres_url_is_given() {
        use facesearch_store::StoreConfig;
        let sqlite = resolved(&["--data-dir", "/srv/faces"]).expect("resolves").store();
        assert!(matches!(&sqlite, StoreConfig::Sqlite { data_dir } if data_dir == std::path::Path::new("/srv/faces")));
        let pg = resolved(&["--store", "postgres://u:secret@db/faces"]).expect("resolves").store();
        assert!(matches!(&pg, StoreConfig::Postgres(c) if c.url == "postgres://u:secret@db/faces"));
        assert!(!pg.location().contains("secret"), "the location shown hides the password");
    }

    #[test]
    fn request_slots_and_the_upload_budget_default_from_max_in_flight() {
        let limits = |c: ServerConfig| {
            (c.api.max_in_flight, c.api.max_in_flight_per_user, c.api.admin_reserved_slots, c.api.upload_budget)
        };
        assert_eq!(limits(resolved(&[]).expect("defaults")), (64, 16, 8, 256 << 20));
        assert_eq!(limits(resolved(&["--max-in-flight", "10"]).expect("scaled")).1, 2);
        assert_eq!(limits(resolved(&["--max-in-flight", "1"]).expect("one slot")), (1, 1, 0, 256 << 20));
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("facesearch.toml");
        std::fs::write(
            &file,
            "max_in_flight = 20\nmax_in_flight_per_user = 3\nadmin_reserved_slots = 5\nupload_budget_bytes = 1000000\n",
        )
        .expect("writing the config file");
        let config = file.to_str().expect("a UTF-8 path");
        assert_eq!(limits(resolved(&["--config", config]).expect("from the file")), (20, 3, 5, 1_000_000));
        let flags = ["--config", config, "--max-in-flight-per-user", "4", "--admin-reserved-slots", "2"];
        assert_eq!(limits(resolved(&flags).expect("flags over the file")), (20, 4, 2, 1_000_000));
        let all_reserved = resolved(&["--max-in-flight", "4", "--admin-reserved-slots", "4"]);
        assert!(all_reserved.is_err(), "a reserve that leaves non-admins no slot is refused");
    }

    #[test]
    fn liveness_is_required_by_flag_or_config_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("facesearch.toml");
        std::fs::write(&config, "require_liveness = true\n").expect("writing the config");
        let required = |extra: &[&str]| resolved(extra).expect("settings").api.require_liveness;
        assert!(!required(&[]), "off by default");
        assert!(required(&["--require-liveness"]));
        assert!(required(&["--config", config.to_str().expect("a UTF-8 path")]));
    }

    #[test]
    fn the_faces_of_a_faces_all_search_are_capped_by_flag_or_config_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("facesearch.toml");
        std::fs::write(&config, "max_search_faces = 25\n").expect("writing the config");
        let config = config.to_str().expect("a UTF-8 path");
        let cap = |extra: &[&str]| resolved(extra).expect("settings").api.max_search_faces;
        assert_eq!(cap(&[]), 10, "the default");
        assert_eq!(cap(&["--config", config]), 25);
        assert_eq!(cap(&["--config", config, "--max-search-faces", "3"]), 3, "the flag over the file");
        assert_eq!(cap(&["--max-search-faces", "0"]), 1, "at least the largest face");
    }
}
