//! `facesearch migrate`: copies an embedded data directory (SQLite) into PostgreSQL,
//! then verifies the copy table by table (row counts and SHA-256 digests). Resumable:
//! rows already copied are skipped, so running it again continues an interrupted copy.
//! Stop the server on the data directory first, so that nothing changes meanwhile.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use facesearch_eval::table;
use facesearch_store::{PostgresStore, SqliteStore, copy};

use super::database::DatabaseArgs;

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The embedded data directory to copy from.
    #[arg(long, env = "FACESEARCH_DATA_DIR", default_value = super::settings::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// The PostgreSQL database to copy into (`--store postgres://…` or FACESEARCH_DATABASE_URL).
    #[command(flatten)]
    database: DatabaseArgs,
    /// Only compare the two stores; copy nothing.
    #[arg(long)]
    verify_only: bool,
}

pub fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let pg = args.database.postgres()?.context("migrate needs --store postgres://… (or FACESEARCH_DATABASE_URL)")?;
    anyhow::ensure!(
        args.data_dir.join(facesearch_store::SQLITE_FILE).is_file(),
        "no facesearch database in {}",
        args.data_dir.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let from = SqliteStore::open(&args.data_dir)
            .with_context(|| format!("opening the database in {}", args.data_dir.display()))?;
        let to = PostgresStore::connect(&pg).await.context("opening the PostgreSQL database")?;
        if !args.verify_only {
            let report = copy::copy(&from, &to, |table, rows| eprint!("\rcopying {table}: {rows} rows read ")).await?;
            eprintln!();
            let rows: Vec<Vec<String>> =
                report.iter().map(|t| vec![t.table.to_string(), t.read.to_string(), t.written.to_string()]).collect();
            println!("{}", table::render(&["table", "rows read", "rows written (new)"], &rows));
        }
        let checks = copy::verify(&from, &to).await?;
        let short = |d: &Option<String>| d.as_deref().map_or("-".to_string(), |d| d[..16].to_string());
        let rows: Vec<Vec<String>> = checks
            .iter()
            .map(|c| {
                vec![
                    c.table.to_string(),
                    c.sqlite_rows.to_string(),
                    c.postgres_rows.to_string(),
                    short(&c.sqlite_digest),
                    short(&c.postgres_digest),
                    if c.matches() { "ok" } else { "DIFFERENT" }.to_string(),
                ]
            })
            .collect();
        println!(
            "{}",
            table::render(&["table", "sqlite rows", "postgres rows", "sqlite sha256", "postgres sha256", ""], &rows)
        );
        let bad: Vec<&str> = checks.iter().filter(|c| !c.matches()).map(|c| c.table).collect();
        anyhow::ensure!(
            bad.is_empty(),
            "the copy differs in: {} (run migrate again to continue a copy)",
            bad.join(", ")
        );
        println!("verified: every table matches");
        Ok(())
    })
}
