//! Which database a command uses: SQLite in the data directory (the default), or
//! PostgreSQL with pgvector when a URL is given.

use std::path::Path;
use std::time::Duration;

use clap::Args;
use facesearch_store::{PostgresConfig, StoreConfig};

#[derive(Args, Debug, Clone, Default)]
pub struct DatabaseArgs {
    /// Keep the data in PostgreSQL with pgvector instead of SQLite in the data directory:
    /// postgres://USER:PASSWORD@HOST:PORT/DATABASE[?sslmode=require]. Prefer the
    /// environment variable: other users of the machine can read a flag.
    #[arg(long = "store", env = "FACESEARCH_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub url: Option<String>,
    /// Most PostgreSQL connections this process opens [default: 16].
    #[arg(long, env = "FACESEARCH_DB_MAX_CONNECTIONS")]
    pub db_max_connections: Option<u32>,
    /// Seconds a request waits for a database connection before it fails with 503 [default: 5].
    #[arg(long, env = "FACESEARCH_DB_TIMEOUT")]
    pub db_timeout: Option<u64>,
    /// pgvector `hnsw.ef_search`: graph candidates kept per search, higher finds more
    /// and is slower (1-1000) [default: 1000].
    #[arg(long, env = "FACESEARCH_PG_EF_SEARCH")]
    pub pg_ef_search: Option<u32>,
    /// Searches over fewer records than this scan every vector exactly in PostgreSQL
    /// instead of walking the HNSW graph [default: none: every search is exact, since
    /// the graph misses matches at score 70 even at 100,000 faces, and a tenth of them
    /// at 1,000,000; see README].
    #[arg(long, env = "FACESEARCH_PG_EXACT_BELOW")]
    pub pg_exact_below: Option<u64>,
}

impl DatabaseArgs {
    /// The PostgreSQL settings, or `None` for the embedded SQLite store.
    pub fn postgres(&self) -> anyhow::Result<Option<PostgresConfig>> {
        let Some(url) = self.url.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        anyhow::ensure!(
            url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "--store takes a postgres:// URL (the embedded SQLite store needs no flag)"
        );
        let mut config = PostgresConfig::new(url);
        if let Some(n) = self.db_max_connections {
            anyhow::ensure!(n > 0, "--db-max-connections must be at least 1");
            config.max_connections = n;
        }
        if let Some(secs) = self.db_timeout {
            config.acquire_timeout = Duration::from_secs(secs.max(1));
        }
        if let Some(ef) = self.pg_ef_search {
            anyhow::ensure!((1..=1000).contains(&ef), "--pg-ef-search must be between 1 and 1000");
            config.ef_search = ef;
        }
        if let Some(n) = self.pg_exact_below {
            config.exact_below = n;
        }
        Ok(Some(config))
    }

    /// The store to open: PostgreSQL when a URL is given, else SQLite in `data_dir`.
    pub fn store_config(&self, data_dir: &Path) -> anyhow::Result<StoreConfig> {
        Ok(match self.postgres()? {
            Some(pg) => StoreConfig::Postgres(pg),
            None => StoreConfig::Sqlite { data_dir: data_dir.to_path_buf() },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_postgres_urls_are_taken() {
        let args = |url: &str| DatabaseArgs { url: Some(url.into()), ..DatabaseArgs::default() };
        assert!(DatabaseArgs::default().postgres().unwrap().is_none());
        assert!(args("").postgres().unwrap().is_none());
        let pg = args("postgres://u:p@h/db").postgres().unwrap().unwrap();
        assert_eq!((pg.max_connections, pg.ef_search, pg.exact_below), (16, 1000, u64::MAX));
        assert!(args("sqlite://x").postgres().is_err());
        let bad = DatabaseArgs { pg_ef_search: Some(0), ..args("postgresql://h/db") };
        assert!(bad.postgres().is_err());
        assert!(!format!("{pg:?}").contains(":p@"), "the password is not in Debug output");
    }
}
