//! Subcommands. Each module owns one subcommand and only parses arguments and prints;
//! the work is done by the library crates.

mod bench;
mod client;
mod eval;
mod import;
mod models;
mod serve;
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
    Serve(serve::ServeArgs),
    /// Fetch, list and verify the neural models and the ONNX runtime.
    Models(models::ModelsArgs),
    /// Measure accuracy on labelled photos.
    Eval(eval::EvalArgs),
    /// Measure the speed of each pipeline stage.
    Bench(bench::BenchArgs),
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

pub fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FACESEARCH_LOG").unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json { builder.json().init() } else { builder.init() }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Models(args) => models::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
        Command::User(args) => user::run(args),
        Command::Index(args) => client::index(args),
        Command::Enrol(args) => client::enrol(args),
        Command::Search(args) => client::search(args),
        Command::Export(args) => client::export(args),
        Command::Import(args) => import::run(args),
    }
}
