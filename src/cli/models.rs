//! `facesearch models fetch | list | verify | bundle | import`.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use facesearch_face::Pack;
use facesearch_models::{FileStatus, ModelCache, ModelFile, bundle, catalog};

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
    /// Write the verified files of the packs asked (and the ONNX Runtime library) into one
    /// archive with a manifest of SHA-256 sums, for machines without network access
    /// (fetches missing files first). `.tar.gz`/`.tgz` compresses.
    Bundle {
        /// The archive to write.
        file: PathBuf,
        /// Packs whose files to include (default: every pack).
        #[arg(long, value_delimiter = ',')]
        pack: Vec<Pack>,
    },
    /// Install the files of a bundle written by `models bundle` into the cache, after
    /// checking every one against the hashes this build pins (no network needed).
    Import {
        /// The archive to read.
        file: PathBuf,
    },
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
        ModelsAction::Bundle { file, pack } => {
            let packs = if pack.is_empty() { Pack::ALL.to_vec() } else { pack };
            let mut wanted: Vec<ModelFile> = Vec::new();
            for file in packs.iter().flat_map(|p| p.files()) {
                if !wanted.contains(&file) {
                    wanted.push(file);
                }
            }
            let written = bundle::write_bundle(&cache, &wanted, &file)?;
            for f in &written {
                println!("bundled  {:<40} {}  {} bytes", f.name, f.sha256, f.bytes);
            }
            let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or_default();
            println!("wrote {} ({} files, {size} bytes)", file.display(), written.len());
        }
        ModelsAction::Import { file } => {
            let installed = bundle::import_bundle(&cache, &file)?;
            for f in &installed {
                println!("installed  {:<40} {}", f.name, f.sha256);
            }
            println!("{} files verified and installed into {}", installed.len(), cache.dir().display());
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
