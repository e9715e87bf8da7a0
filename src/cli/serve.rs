//! `facesearch serve`: settings come from flags, then `FACESEARCH_*` environment
//! variables, then an optional TOML config file, then defaults (see
//! [`super::settings`], the tree they fill). `--print-config` shows the result.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use facesearch_api::TlsFiles;
use facesearch_api::client::IpNet;
use facesearch_face::{Pack, RuntimeOptions};
use serde::{Serialize, Serializer};

use super::database::DatabaseArgs;
use super::settings::{self, Settings};
use crate::wiring::ServerConfig;

/// The flags (and their `FACESEARCH_*` variables) of `facesearch serve`. Serialised,
/// the ones given are the top layers of the settings tree: their serde names are the
/// tree's keys. `--help` shows each default from the tree ([`with_tree_defaults`]);
/// only a default in words (derived from another setting, or none) is written here.
#[derive(Args, Debug, Serialize)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys, e.g. `bind = "0.0.0.0:8080"`).
    #[arg(long, env = "FACESEARCH_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Print the effective settings, each with where it came from (default, config
    /// file, environment, flag), and exit. Secrets are not printed.
    #[arg(long)]
    #[serde(skip)]
    print_config: bool,
    /// Address to listen on.
    #[arg(long, env = "FACESEARCH_BIND")]
    bind: Option<SocketAddr>,
    /// Where the database lives.
    #[arg(long, env = "FACESEARCH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    #[serde(skip)]
    database: DatabaseArgs,
    /// Model pack: open or insightface.
    #[arg(long, env = "FACESEARCH_PACK")]
    #[serde(serialize_with = "as_text")]
    pack: Option<Pack>,
    /// Where models are cached [default: the user's cache dir].
    #[arg(long, env = "FACESEARCH_MODELS_DIR")]
    models_dir: Option<PathBuf>,
    /// Live probability below which a search probe is refused as a spoof.
    #[arg(long, env = "FACESEARCH_LIVENESS_THRESHOLD")]
    liveness_threshold: Option<f32>,
    /// Smallest context around a face (crop side / face side) for which liveness is judged;
    /// below it a search is refused with LIVENESS_CANNOT_JUDGE. At the default only a face
    /// larger than the photo is refused; a close-up is judged with the fusion's close-up
    /// weights.
    #[arg(long, env = "FACESEARCH_LIVENESS_MIN_CONTEXT")]
    liveness_min_context: Option<f32>,
    /// Largest accepted image in bytes.
    #[arg(long, env = "FACESEARCH_MAX_IMAGE_BYTES")]
    max_image_bytes: Option<usize>,
    /// Largest accepted image in pixels.
    #[arg(long, env = "FACESEARCH_MAX_IMAGE_PIXELS")]
    max_image_pixels: Option<u64>,
    /// Largest max_results a search may ask for.
    #[arg(long, env = "FACESEARCH_MAX_RESULTS_CAP")]
    max_results_cap: Option<usize>,
    /// Faces of one photo that a `faces=all` search analyses and searches at most,
    /// largest first.
    #[arg(long, env = "FACESEARCH_MAX_SEARCH_FACES")]
    max_search_faces: Option<usize>,
    /// Smallest face (pixels, shorter box side) that is embedded.
    #[arg(long, env = "FACESEARCH_MIN_FACE_SIZE")]
    min_face_size: Option<f32>,
    /// Seconds a request may take before it is answered 503.
    #[arg(long, env = "FACESEARCH_REQUEST_TIMEOUT")]
    request_timeout: Option<u64>,
    /// Photos analysed at once [default: number of cores].
    #[arg(long, env = "FACESEARCH_WORKERS")]
    workers: Option<usize>,
    /// Requests handled at once; more get 503 at once.
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
    /// whole body; room for one is kept for admins.
    #[arg(long, env = "FACESEARCH_UPLOAD_BUDGET_BYTES")]
    upload_budget_bytes: Option<usize>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "FACESEARCH_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, env = "FACESEARCH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Days the audit log is kept; 0 keeps it forever.
    #[arg(long, env = "FACESEARCH_AUDIT_RETENTION_DAYS")]
    audit_retention_days: Option<u32>,
    /// Name of the admin user created on first start.
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
    #[serde(serialize_with = "as_texts")]
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
    /// HNSW candidate list size at search time: higher is slower and finds more.
    #[arg(long, env = "FACESEARCH_ANN_EF_SEARCH")]
    ann_ef_search: Option<usize>,
    /// Seconds between saves of a changed vector index to DATA_DIR/vectors, so a restart
    /// need not re-read every vector; 0 never saves it.
    #[arg(long, env = "FACESEARCH_INDEX_SAVE_INTERVAL")]
    index_save_interval: Option<u64>,
    /// Score (0-100, the scale of search) from which two records' faces count as one person:
    /// the default of duplicate jobs and the bar of `check_duplicates=true`.
    #[arg(long, env = "FACESEARCH_DUPLICATE_SCORE")]
    duplicate_score: Option<f64>,
    /// Enrolment quality minimums (see docs/API.md, Face quality); 0 turns a minimum off.
    #[command(flatten)]
    #[serde(flatten)]
    quality: QualityArgs,
    /// Stop when standard input closes (used by tests that start the server as a child).
    #[arg(long, hide = true)]
    #[serde(skip)]
    exit_on_stdin_close: bool,
    /// Test-only: re-embedding jobs stop (still running, resumed at the next start) once
    /// this many images of their index are staged, so a test can interrupt one at a
    /// known point. Not a setting: no config key, no variable, not printed; refused by
    /// a build without the engine's `test-knobs` feature (only `cargo test` has it).
    #[arg(long, hide = true)]
    #[serde(skip)]
    reembed_pause_after: Option<u64>,
}

/// The enrolment quality limits (the engine's `QualityMinimums`).
#[derive(Args, Debug, Default, Serialize)]
struct QualityArgs {
    /// Smallest face box side (pixels) enrolled.
    #[arg(long, env = "FACESEARCH_QUALITY_MIN_FACE_SIZE")]
    quality_min_face_size: Option<f32>,
    /// Smallest inter-ocular distance (pixels) enrolled.
    #[arg(long, env = "FACESEARCH_QUALITY_MIN_EYE_DISTANCE")]
    quality_min_eye_distance: Option<f32>,
    /// Smallest sharpness (variance of the Laplacian of the aligned face) enrolled.
    #[arg(long, env = "FACESEARCH_QUALITY_MIN_SHARPNESS")]
    quality_min_sharpness: Option<f32>,
    /// Largest JPEG blockiness enrolled.
    #[arg(long, env = "FACESEARCH_QUALITY_MAX_COMPRESSION")]
    quality_max_compression: Option<f32>,
    /// Darkest mean grey level (0-255) of the face enrolled.
    #[arg(long, env = "FACESEARCH_QUALITY_MIN_BRIGHTNESS")]
    quality_min_brightness: Option<f32>,
    /// Brightest mean grey level (0-255) of the face enrolled.
    #[arg(long, env = "FACESEARCH_QUALITY_MAX_BRIGHTNESS")]
    quality_max_brightness: Option<f32>,
    /// Largest fraction (0-1) of the face clipped dark or bright.
    #[arg(long, env = "FACESEARCH_QUALITY_MAX_CLIPPED")]
    quality_max_clipped: Option<f32>,
    /// Largest |yaw| in degrees.
    #[arg(long, env = "FACESEARCH_QUALITY_MAX_YAW")]
    quality_max_yaw: Option<f32>,
    /// Largest |pitch| in degrees.
    #[arg(long, env = "FACESEARCH_QUALITY_MAX_PITCH")]
    quality_max_pitch: Option<f32>,
    /// Smallest detector confidence (0-1).
    #[arg(long, env = "FACESEARCH_QUALITY_MIN_DETECTOR_SCORE")]
    quality_min_detector_score: Option<f32>,
}

/// `serve` with each setting's `[default: …]` appended to its help from the settings
/// tree ([`settings::default_texts`]), so `--help` cannot drift from the defaults.
/// Settings without a default value keep their words (`[default: number of cores]`).
pub fn with_tree_defaults(command: clap::Command) -> clap::Command {
    let defaults = settings::default_texts();
    command.mut_args(|arg| {
        let Some(text) = defaults.get(arg.get_id().as_str()) else { return arg };
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        let long = arg.get_long_help().map(|h| format!("{h} [default: {text}]"));
        let arg = arg.help(format!("{help} [default: {text}]"));
        match long {
            Some(long) => arg.long_help(long),
            None => arg,
        }
    })
}

/// A flag value by its text (what the config file would hold).
fn as_text<S: Serializer, T: std::fmt::Display>(value: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    value.as_ref().map(ToString::to_string).serialize(s)
}

fn as_texts<S: Serializer, T: std::fmt::Display>(values: &[T], s: S) -> Result<S::Ok, S::Error> {
    values.iter().map(ToString::to_string).collect::<Vec<_>>().serialize(s)
}

/// The ids of the arguments whose value clap took from the environment.
pub fn from_environment(matches: &ArgMatches) -> BTreeSet<String> {
    matches
        .ids()
        .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::EnvVariable))
        .map(|id| id.as_str().to_string())
        .collect()
}

/// Each setting's variable and flag, as `serve --help` names them, by key.
fn arg_names() -> BTreeMap<String, (String, String)> {
    let command = ServeArgs::augment_args(clap::Command::new("serve"));
    let names = command.get_arguments().map(|arg| {
        let env = arg.get_env().map_or_else(String::new, |e| e.to_string_lossy().into_owned());
        let flag = arg.get_long().map_or_else(String::new, |l| format!("--{l}"));
        (arg.get_id().as_str().to_string(), (env, flag))
    });
    names.collect()
}

/// `trusted_proxies` parsed.
fn trusted_proxies(list: Option<&settings::StringOrList>) -> anyhow::Result<Vec<IpNet>> {
    let Some(list) = list else { return Ok(Vec::new()) };
    list.items()
        .into_iter()
        .map(|item| facesearch_api::client::parse_proxy(item).map_err(|e| anyhow::anyhow!("trusted_proxies: {e}")))
        .collect()
}

/// The settings resolved, and what `--print-config` shows of them.
struct Resolved {
    config: ServerConfig,
    exit_on_stdin_close: bool,
    print_config: bool,
    /// The effective settings (derived defaults filled in) with their sources.
    shown: String,
}

/// Layers the settings (`from_env`: the arguments clap read from the environment),
/// checks them, and builds what the server runs with.
fn resolve(args: ServeArgs, from_env: &BTreeSet<String>) -> anyhow::Result<Resolved> {
    let figment = settings::layered(args.config.as_deref(), settings::given(&args)?, from_env)?;
    let names = arg_names();
    let name_of = |key: &str| names.get(key).cloned().unwrap_or_default();
    let source = |key: &str| settings::source_of(&figment, key, &name_of);
    let mut s: Settings = settings::extract(&figment, &source)?;
    let pack: Pack = s.server.pack.parse().map_err(anyhow::Error::msg)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = s.server.workers.unwrap_or(cores).max(1);
    s.server.workers = Some(workers);
    s.engine.validate()?;
    // Requests run concurrently: split the cores between them.
    s.pipeline.runtime = RuntimeOptions {
        intra_threads: (cores / workers).max(1),
        sessions_per_model: workers,
        ..RuntimeOptions::default()
    };
    s.engine.vectors.ann_min_rows = s.engine.vectors.ann_min_rows.max(1);
    s.engine.vectors.ef_search = s.engine.vectors.ef_search.clamp(1, 10_000);
    s.engine.max_concurrent_analyses = workers;
    if let Some(images) = args.reembed_pause_after {
        anyhow::ensure!(
            s.engine.pause_reembeds_after(images),
            "--reembed-pause-after is a test hook: this build has none (the engine's test-knobs feature)"
        );
    }
    let max_in_flight = s.api.max_in_flight.max(1);
    let max_in_flight_per_user = s
        .server
        .max_in_flight_per_user
        .unwrap_or_else(|| facesearch_api::admission::default_per_user(max_in_flight))
        .clamp(1, max_in_flight);
    let admin_reserved_slots = s
        .server
        .admin_reserved_slots
        .unwrap_or_else(|| facesearch_api::admission::default_admin_reserve(max_in_flight));
    (s.server.max_in_flight_per_user, s.server.admin_reserved_slots) =
        (Some(max_in_flight_per_user), Some(admin_reserved_slots));
    let api = facesearch_api::ApiConfig {
        max_image_bytes: s.pipeline.decode.max_bytes,
        max_results_cap: s.api.max_results_cap.max(1),
        pack,
        max_in_flight,
        max_in_flight_per_user,
        admin_reserved_slots,
        trusted_proxies: trusted_proxies(s.server.trusted_proxies.as_ref())?,
        max_search_faces: s.api.max_search_faces.max(1),
        ..s.api.clone()
    };
    api.validate()?;
    // From the environment or a file only: a password never belongs in a flag.
    let (admin_password, password_source) = match std::env::var("FACESEARCH_ADMIN_PASSWORD") {
        Ok(p) => (Some(p), "environment FACESEARCH_ADMIN_PASSWORD"),
        Err(_) => match &s.server.admin_password_file {
            Some(path) => (Some(read_password_file(path)?), "admin_password_file"),
            None => (None, "default"),
        },
    };
    let save_every = s.server.index_save_interval;
    let config = ServerConfig {
        bind: s.server.bind,
        data_dir: s.server.data_dir.clone(),
        store: args.database.store_config(&s.server.data_dir)?,
        pack,
        models_dir: s.server.models_dir.clone(),
        pipeline: s.pipeline,
        engine: s.engine,
        api,
        admin_user: s.server.admin_user.clone(),
        admin_password,
        request_timeout: Duration::from_secs(s.server.request_timeout.max(1)),
        audit_retention_days: s.server.audit_retention_days,
        tls: match (s.server.tls_cert.clone(), s.server.tls_key.clone()) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => anyhow::bail!("TLS needs both a certificate (tls_cert) and a key (tls_key)"),
        },
        snapshot_interval: (save_every > 0).then(|| Duration::from_secs(save_every)),
    };
    let mut shown = settings::render(&s, &source)?;
    let store_source = match (&args.database.url, from_env.contains("url")) {
        (None, _) => "default".to_string(),
        (Some(_), true) => "environment FACESEARCH_DATABASE_URL".to_string(),
        (Some(_), false) => "flag --store".to_string(),
    };
    shown.push_str(&format!("# store: {}  # {store_source}\n", config.store.location()));
    let set = if config.admin_password.is_some() { "<set>" } else { "<unset>" };
    shown.push_str(&format!("# admin_password: {set}  # {password_source}\n"));
    Ok(Resolved { config, exit_on_stdin_close: args.exit_on_stdin_close, print_config: args.print_config, shown })
}

/// The first line of a password file, without its line ending.
fn read_password_file(path: &std::path::Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading the admin password file {}", path.display()))?;
    let line = text.lines().next().unwrap_or_default();
    anyhow::ensure!(!line.is_empty(), "the admin password file {} is empty", path.display());
    Ok(line.to_string())
}

/// `matches`: the arguments of `serve` as clap parsed them (for the sources of values).
pub fn run(args: ServeArgs, matches: &ArgMatches) -> anyhow::Result<()> {
    let resolved = resolve(args, &from_environment(matches))?;
    if resolved.print_config {
        print!("{}", resolved.shown);
        return Ok(());
    }
    let (config, exit_on_stdin_close) = (resolved.config, resolved.exit_on_stdin_close);
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
    use facesearch_face::QualityMinimums;

    /// `serve` parsed from `flags`; `env` names the arguments to count as read from
    /// the environment (clap's precedence of a flag over its variable is its own).
    fn resolve_with(flags: &[&str], env: &[&str]) -> anyhow::Result<Resolved> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        use clap::{CommandFactory, FromArgMatches};
        let argv = std::iter::once("serve").chain(flags.iter().copied());
        let matches = Cli::command().try_get_matches_from(argv)?;
        let cli = Cli::from_arg_matches(&matches)?;
        resolve(cli.serve, &env.iter().map(|s| s.to_string()).collect())
    }

    /// `--help` shows each tree default once, from the tree: the same values
    /// `--print-config` prints.
    #[test]
    fn help_shows_the_trees_defaults_once() {
        let command = with_tree_defaults(ServeArgs::augment_args(clap::Command::new("serve")));
        let defaults = settings::default_texts();
        let mut shown = 0;
        for arg in command.get_arguments() {
            let help = arg.get_long_help().or(arg.get_help()).map(ToString::to_string).unwrap_or_default();
            assert!(help.matches("[default:").count() <= 1, "--{}: {help}", arg.get_id());
            if let Some(text) = defaults.get(arg.get_id().as_str()) {
                assert!(help.ends_with(&format!("[default: {text}]")), "--{}: {help}", arg.get_id());
                shown += 1;
            }
        }
        assert!(shown >= 25, "only {shown} defaults shown");
        let help_of = |id: &str| {
            let arg = command.get_arguments().find(|a| a.get_id() == id).expect("a serve flag");
            arg.get_help().map(ToString::to_string).unwrap_or_default()
        };
        assert!(help_of("bind").ends_with("[default: 127.0.0.1:8080]"));
        assert!(help_of("max_in_flight").ends_with("[default: 64]"));
        assert!(help_of("liveness_threshold").ends_with("[default: 0.5]"));
        assert!(help_of("max_image_bytes").ends_with(&format!("[default: {}]", 15 * 1024 * 1024)));
        assert!(help_of("quality_max_compression").ends_with("[default: 2]"));
        assert!(help_of("workers").ends_with("[default: number of cores]"), "a derived default keeps its words");
        assert!(!help_of("metrics_auth").contains("[default:"), "switches show none");
    }

    fn resolved(flags: &[&str]) -> anyhow::Result<ServerConfig> {
        resolve_with(flags, &[]).map(|r| r.config)
    }

    /// A config file with `text` in a temporary directory.
    fn config_file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("facesearch.toml");
        std::fs::write(&path, text).expect("writing the config file");
        let path = path.to_str().expect("a UTF-8 path").to_string();
        (dir, path)
    }

    #[test]
    fn quality_settings_come_from_the_config_file_under_flags() {
        let (_dir, file) = config_file(
            "bind = \"127.0.0.1:9000\"\nquality_min_sharpness = 5.0\nquality_max_yaw = 30.0\nduplicate_score = 85.0\n",
        );
        let config = resolved(&["--config", &file, "--quality-max-yaw", "20"]).expect("a valid config");
        assert_eq!(config.engine.duplicate_score, 85.0);
        let m = config.engine.quality;
        assert_eq!((m.sharpness, m.max_yaw), (5.0, 20.0), "file, then flag over file");
        assert_eq!(m.max_compression, QualityMinimums::default().max_compression, "the rest default");
        let (_dir, misspelt) = config_file("quality_min_sharpnes = 5.0\n");
        let e = resolved(&["--config", &misspelt]).expect_err("a misspelt key is refused");
        assert!(format!("{e:#}").contains("quality_min_sharpnes"), "{e:#}");
        let (_dir, mistyped) = config_file("max_in_flight = \"many\"\n");
        let e = resolved(&["--config", &mistyped]).expect_err("a value of the wrong type is refused");
        assert!(format!("{e:#}").contains("max_in_flight (config file"), "the key and its source: {e:#}");
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
        let table: toml::Table = toml::from_str(&uncommented).expect("the packaged config parses");
        let keys: BTreeSet<String> = table.keys().cloned().collect();
        assert_eq!(keys, settings::known_keys(), "packaging/deb/config.toml shows every setting and no other");
        let (_dir, file) = config_file(&uncommented);
        let layers = settings::layered(Some(std::path::Path::new(&file)), Default::default(), &BTreeSet::new());
        let typed = layers.expect("the packaged config's keys are settings").extract::<Settings>();
        typed.expect("the packaged config's examples have the settings' types");
    }

    #[test]
    fn trusted_proxies_come_from_the_flag_or_the_config_file() {
        let net = |s: &str| facesearch_api::client::parse_proxy(s).expect("a CIDR");
        let proxies = |flags: &[&str]| resolved(flags).map(|c| c.api.trusted_proxies);
        let (_d1, list) = config_file("trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\"]\n");
        assert_eq!(proxies(&["--config", &list]).expect("valid"), [net("10.0.0.0/8"), net("192.0.2.7/32")]);
        let (_d2, one) = config_file("trusted_proxies = \"10.0.0.0/8, ::1\"\n");
        assert_eq!(proxies(&["--config", &one]).expect("valid"), [net("10.0.0.0/8"), net("::1/128")]);
        let flag = proxies(&["--config", &one, "--trusted-proxies", "127.0.0.1"]).expect("valid");
        assert_eq!(flag, [net("127.0.0.1/32")], "the flag wins");
        let (_d3, bad) = config_file("trusted_proxies = [\"10.0.0.0/33\"]\n");
        let e = proxies(&["--config", &bad]).expect_err("a bad CIDR");
        assert!(e.to_string().contains("trusted_proxies"), "{e}");
        assert_eq!(proxies(&[]).expect("none"), []);
    }

    #[test]
    fn the_store_is_sqlite_in_the_data_dir_unless_a_postgres_url_is_given() {
        use facesearch_store::StoreConfig;
        let sqlite = resolved(&["--data-dir", "/srv/faces"]).expect("resolves").store;
        assert!(matches!(&sqlite, StoreConfig::Sqlite { data_dir } if data_dir == std::path::Path::new("/srv/faces")));
        let pg = resolved(&["--store", "postgres://u:secret@db/faces"]).expect("resolves").store;
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
        let (_dir, config) = config_file(
            "max_in_flight = 20\nmax_in_flight_per_user = 3\nadmin_reserved_slots = 5\nupload_budget_bytes = 1000000\n",
        );
        let config = config.as_str();
        assert_eq!(limits(resolved(&["--config", config]).expect("from the file")), (20, 3, 5, 1_000_000));
        let flags = ["--config", config, "--max-in-flight-per-user", "4", "--admin-reserved-slots", "2"];
        assert_eq!(limits(resolved(&flags).expect("flags over the file")), (20, 4, 2, 1_000_000));
        let all_reserved = resolved(&["--max-in-flight", "4", "--admin-reserved-slots", "4"]);
        let e = all_reserved.expect_err("a reserve that leaves non-admins no slot is refused");
        assert!(e.to_string().contains("admin_reserved_slots"), "{e}");
    }

    /// Each range check lives with the config that owns the setting
    /// (`EngineConfig::validate`, `ApiConfig::validate`); serve applies them and says
    /// which setting is wrong.
    #[test]
    fn settings_out_of_range_are_refused_naming_the_setting() {
        for (flag, setting) in [
            ("--liveness-threshold=1.5", "liveness_threshold"),
            ("--liveness-threshold=-0.1", "liveness_threshold"),
            ("--duplicate-score=101", "duplicate_score"),
            ("--duplicate-score=NaN", "duplicate_score"),
        ] {
            let e = resolved(&[flag]).expect_err("out of range");
            assert!(e.to_string().starts_with(&format!("{setting} must be between")), "{flag}: {e}");
        }
        assert!(
            resolved(&["--liveness-threshold", "1", "--duplicate-score", "100"]).is_ok(),
            "the bounds are in range"
        );
    }

    #[test]
    fn liveness_is_required_by_flag_or_config_file() {
        let (_dir, config) = config_file("require_liveness = true\n");
        let required = |extra: &[&str]| resolved(extra).expect("settings").api.require_liveness;
        assert!(!required(&[]), "off by default");
        assert!(required(&["--require-liveness"]));
        assert!(required(&["--config", &config]));
    }

    #[test]
    fn the_faces_of_a_faces_all_search_are_capped_by_flag_or_config_file() {
        let (_dir, config) = config_file("max_search_faces = 25\n");
        let config = config.as_str();
        let cap = |extra: &[&str]| resolved(extra).expect("settings").api.max_search_faces;
        assert_eq!(cap(&[]), 10, "the default");
        assert_eq!(cap(&["--config", config]), 25);
        assert_eq!(cap(&["--config", config, "--max-search-faces", "3"]), 3, "the flag over the file");
        assert_eq!(cap(&["--max-search-faces", "0"]), 1, "at least the largest face");
    }

    /// Each key takes the value of its highest layer (file < environment < flag), and
    /// `--print-config` names that layer.
    #[test]
    fn settings_layer_file_under_environment_under_flags_with_their_sources() {
        let (_dir, file) = config_file("max_in_flight = 20\nworkers = 2\nmax_results_cap = 7\nmin_face_size = 40\n");
        // `--workers` and `--max-results-cap` as if clap had read FACESEARCH_WORKERS and
        // FACESEARCH_MAX_RESULTS_CAP; `--max-in-flight` as a flag.
        let flags = ["--config", &file, "--workers", "3", "--max-results-cap", "9", "--max-in-flight", "30"];
        let r = resolve_with(&flags, &["workers", "max_results_cap"]).expect("resolves");
        assert_eq!(r.config.engine.max_concurrent_analyses, 3, "the environment over the file");
        assert_eq!((r.config.api.max_results_cap, r.config.api.max_in_flight), (9, 30));
        assert_eq!(r.config.pipeline.min_face_px, 40.0, "the file over the default");
        let line = |key: &str| {
            r.shown
                .lines()
                .find(|l| l.starts_with(&format!("{key} = ")))
                .unwrap_or_else(|| panic!("{key}: {}", r.shown))
        };
        assert_eq!(line("workers"), "workers = 3  # environment FACESEARCH_WORKERS");
        assert_eq!(line("max_results_cap"), "max_results_cap = 9  # environment FACESEARCH_MAX_RESULTS_CAP");
        assert_eq!(line("max_in_flight"), "max_in_flight = 30  # flag --max-in-flight");
        assert_eq!(line("min_face_size"), format!("min_face_size = 40.0  # config file {file}"));
        assert_eq!(line("max_image_bytes"), "max_image_bytes = 15728640  # default");
        assert_eq!(line("max_in_flight_per_user"), "max_in_flight_per_user = 7  # default", "derived, shown");
        assert!(r.shown.contains("# exact_search_below = none  # default"), "{}", r.shown);
    }

    /// `--print-config` prints no secret: the PostgreSQL password is hidden and the
    /// admin password is only said to be set.
    #[test]
    fn print_config_shows_no_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let password = dir.path().join("admin-password");
        std::fs::write(&password, "hunter2-admin\n").expect("writing the password file");
        let password = password.to_str().expect("a UTF-8 path");
        let flags =
            ["--print-config", "--store", "postgres://u:hunter2-db@db/faces", "--admin-password-file", password];
        let r = resolve_with(&flags, &["url"]).expect("resolves");
        assert!(r.print_config);
        assert!(!r.shown.contains("hunter2"), "{}", r.shown);
        assert!(r.shown.contains("# store: postgres://"), "{}", r.shown);
        assert!(r.shown.contains("environment FACESEARCH_DATABASE_URL"), "{}", r.shown);
        assert!(r.shown.contains("# admin_password: <set>"), "{}", r.shown);
    }
}
