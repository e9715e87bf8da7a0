//! `facesearch models fetch | list | verify`.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use facesearch_models::{FileStatus, ModelCache, ModelFile, catalog};

#[derive(Args)]
pub struct ModelsArgs {
    /// Where models are cached (default: FACESEARCH_MODELS_DIR, else the user's cache dir).
    #[arg(long, env = "FACESEARCH_MODELS_DIR", global = true)]
    models_dir: Option<PathBuf>,
    #[command(subcommand)]
    action: ModelsAction,
}

#[derive(Subcommand)]
enum ModelsAction {
    /// Download (if missing) and verify every model file of both packs and the runtime.
    Fetch {
        /// Download again even if a verified copy is cached.
        #[arg(long)]
        force: bool,
    },
    /// Show every file, where it comes from and whether it is cached.
    List,
    /// Check every cached file's SHA-256; exits non-zero if any is missing or corrupt.
    Verify,
}

pub fn run(args: ModelsArgs) -> anyhow::Result<()> {
    let cache = ModelCache::resolve(args.models_dir)?;
    let files = catalog::all();
    match args.action {
        ModelsAction::Fetch { force } => {
            for file in &files {
                let path = if force { cache.fetch(file)? } else { cache.ensure(file)? };
                println!("ok  {:<40} {}", file.name, path.display());
            }
        }
        ModelsAction::List => {
            println!("cache: {}", cache.dir().display());
            for file in &files {
                println!("{:<9} {:<40} {}", status_word(&cache.status(file)), file.name, sources(file));
            }
        }
        ModelsAction::Verify => {
            let mut bad = 0;
            for file in &files {
                let status = cache.status(file);
                if !matches!(status, FileStatus::Verified) {
                    bad += 1;
                }
                println!("{:<9} {}", status_word(&status), cache.path_of(file).display());
            }
            if bad > 0 {
                bail!("{bad} file(s) missing or corrupt; run `facesearch models fetch`");
            }
        }
    }
    Ok(())
}

fn status_word(status: &FileStatus) -> &'static str {
    match status {
        FileStatus::Missing => "missing",
        FileStatus::Verified => "verified",
        FileStatus::Corrupt { .. } => "CORRUPT",
    }
}

fn sources(file: &ModelFile) -> String {
    file.sources
        .iter()
        .map(|s| match s {
            facesearch_models::Source::Pip { package, version, .. } => format!("pip {package}=={version}"),
            facesearch_models::Source::Npm { package, version, .. } => format!("npm {package}@{version}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
