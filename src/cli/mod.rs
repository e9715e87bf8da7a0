//! Subcommands. Each module owns one subcommand and only parses arguments and prints;
//! the work is done by the library crates.

mod bench;
mod bench_fpir;
mod bench_index;
mod client;
mod database;
mod eval;
mod form;
mod import;
mod index_name;
mod liveness_candidates;
mod migrate;
mod models;
mod orientation_eval;
mod quality_eval;
mod serve;
mod settings;
mod threshold_recall;
mod user;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use facesearch_face::{Pack, PipelineConfig, RuntimeOptions};

#[derive(Parser)]
#[command(name = "facesearch", version, about = "Self-hosted face search (1:N) service")]
pub struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true, env = "FACESEARCH_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve(Box<serve::ServeArgs>),
    /// Fetch, list and verify the neural models and the ONNX runtime.
    Models(models::ModelsArgs),
    /// Measure accuracy on labelled photos.
    Eval(eval::EvalArgs),
    /// Measure the speed of each pipeline stage.
    Bench(bench::BenchArgs),
    /// Copy an embedded data directory into PostgreSQL (resumable) and verify the copy.
    Migrate(migrate::MigrateArgs),
    /// Manage users (add, list, passwd, grant, revoke, remove) in a data directory.
    User(user::UserArgs),
    /// Create, list, show and delete indexes on a running server (HTTP client).
    Index(client::IndexArgs),
    /// Enrol a photo with its record fields into an index of a running server.
    Enrol(client::EnrolArgs),
    /// Search indexes of a running server with a photo.
    Search(client::SearchArgs),
    /// Export the records of an index of a running server as CSV or JSON lines (images optionally).
    Export(client::ExportArgs),
    /// Enrol the rows of a CSV or JSON-lines file into an index of a running server.
    Import(import::ImportArgs),
    /// Move an index of a running server to another model pack (re-embeds its stored images).
    Reembed(client::ReembedArgs),
    /// Find records of an index of a running server whose faces match while their
    /// identities differ (one face enrolled under several names), with a progress bar.
    Duplicates(client::DuplicatesArgs),
}

/// Options shared by every subcommand that runs the face pipeline.
#[derive(Args, Clone, Debug)]
pub struct PipelineArgs {
    /// Model pack: open (YuNet + SFace, commercial use allowed) or insightface (non-commercial).
    #[arg(long, env = "FACESEARCH_PACK", default_value = "open", global = true)]
    pub pack: Pack,
    /// Where models are cached (default: FACESEARCH_MODELS_DIR, else the user's cache dir).
    #[arg(long, env = "FACESEARCH_MODELS_DIR", global = true)]
    pub models_dir: Option<PathBuf>,
    /// Threads one inference may use.
    #[arg(long, env = "FACESEARCH_INTRA_THREADS", global = true)]
    pub intra_threads: Option<usize>,
    /// Embed the mirrored face too and average the two vectors.
    #[arg(long, global = true)]
    pub flip_average: bool,
    /// Smallest context around a face (crop side / face side) for which liveness is judged.
    #[arg(long, global = true)]
    pub liveness_min_context: Option<f32>,
    /// Run a photo analysed alone on a shared pool of a thread per core (off by default:
    /// measured slower on average on two cores; README, Performance).
    #[arg(long, global = true)]
    pub lone_sessions: bool,
}

impl PipelineArgs {
    pub fn config(&self) -> PipelineConfig {
        let mut config = PipelineConfig { flip_average: self.flip_average, ..PipelineConfig::default() };
        if let Some(c) = self.liveness_min_context {
            config.liveness.min_context = c;
        }
        if let Some(n) = self.intra_threads {
            config.runtime = RuntimeOptions { intra_threads: n, ..config.runtime };
        }
        config.runtime.lone_sessions = self.lone_sessions;
        config
    }

    pub fn load(&self) -> anyhow::Result<facesearch_face::FacePipeline> {
        let cache = facesearch_models::ModelCache::resolve(self.models_dir.clone())?;
        if self.pack.non_commercial() {
            tracing::warn!("the insightface pack's pretrained models are licensed for non-commercial research only");
        }
        Ok(facesearch_face::FacePipeline::load(self.pack, &cache, self.config())?)
    }
}

/// Runs `f(i)` for every `i` in `0..n` on `workers` threads taking the next index as
/// they finish (so slow items do not hold up a fixed share); results in index order.
pub fn parallel_map<R: Send>(n: usize, workers: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break out;
                        }
                        out.push((i, f(i)));
                    }
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

impl Command {
    /// The log level when `FACESEARCH_LOG` does not set one: the server and the long
    /// local jobs say what they do; commands an operator runs by hand (users, the HTTP
    /// client commands) print their answer and nothing else unless asked.
    fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Serve(_)
            | Command::Models(_)
            | Command::Eval(_)
            | Command::Bench(_)
            | Command::Migrate(_)
            | Command::Import(_) => "info,ort=warn",
            Command::User(_)
            | Command::Index(_)
            | Command::Enrol(_)
            | Command::Search(_)
            | Command::Export(_)
            | Command::Reembed(_)
            | Command::Duplicates(_) => "warn,ort=warn",
        }
    }
}

/// Logs to stderr: `FACESEARCH_LOG` (an `EnvFilter`, e.g. `info` or `debug`) overrides
/// the command's default level; colours only when stderr is a terminal, so that files
/// and journals hold no escape codes.
pub fn init_tracing(cli: &Cli) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("FACESEARCH_LOG").unwrap_or_else(|_| EnvFilter::new(cli.command.default_log_filter()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if cli.log_json { builder.json().init() } else { builder.init() }
}

/// The command line as parsed and as `--help` shows it: [`Cli`] with `serve`'s defaults
/// written into its help from the settings tree.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command().mut_subcommand("serve", serve::with_tree_defaults)
}

/// `matches`: what clap parsed `cli` from.
pub fn run(cli: Cli, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(*args, matches.subcommand_matches("serve").unwrap_or(matches)),
        Command::Models(args) => models::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Migrate(args) => migrate::run(args),
        Command::User(args) => user::run(args),
        Command::Index(args) => client::index(args),
        Command::Enrol(args) => client::enrol(args),
        Command::Search(args) => client::search(args),
        Command::Export(args) => client::export(args),
        Command::Import(args) => import::run(args),
        Command::Reembed(args) => client::reembed(args),
        Command::Duplicates(args) => client::duplicates(args),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parallel_map_keeps_order_and_covers_every_item() {
        for workers in [1, 3, 8] {
            let out = super::parallel_map(50, workers, |i| i * i);
            assert_eq!(out, (0..50).map(|i| i * i).collect::<Vec<_>>());
        }
        assert!(super::parallel_map(0, 4, |i| i).is_empty());
    }
}
