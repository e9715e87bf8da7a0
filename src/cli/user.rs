//! `facesearch user`: manage users directly in the database of a data directory (or
//! in PostgreSQL with `--store`), without a running server or next to one.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use facesearch_api::responses::UserObject;
use facesearch_engine::users::{check_password, check_username, parse_role};
use facesearch_engine::{EngineError, Service};
use facesearch_store::{Role, SQLITE_FILE, Store, StoreConfig, StoreError, User};
use serde_json::{Value, json};

/// Where a new password comes from when not typed on standard input.
const PASSWORD_ENV: &str = "FACESEARCH_NEW_PASSWORD";

#[derive(Args, Debug)]
#[command(after_help = "\
Passwords are read from the environment variable FACESEARCH_NEW_PASSWORD or, when it \
is not set, as one line from standard input; they must be 12 to 1024 characters long, \
at least one of them printable and not a space. \
Usernames are 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'.

The commands work on the database directly and may run while a server uses the same \
data directory. A running server remembers verified credentials for up to 30 s, so a \
password change, a revoked grant or a removed user made here can take up to 30 s to \
reach it (changes made through the HTTP API take effect at once).

A role cannot be changed in place: remove the user and add them again.")]
pub struct UserArgs {
    /// Data directory of the server [default: facesearch-data].
    #[arg(long, env = "FACESEARCH_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Manage the users of a PostgreSQL store instead.
    #[command(flatten)]
    database: super::database::DatabaseArgs,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create a user (creates the data directory and database if needed).
    Add {
        username: String,
        /// admin, operator, searcher or auditor.
        #[arg(long)]
        role: String,
        /// Grant access to this index, by id or unique name (repeatable).
        #[arg(long = "grant", value_name = "INDEX")]
        grants: Vec<String>,
    },
    /// List the users with their roles and grants.
    List,
    /// Set a new password.
    Passwd { username: String },
    /// Grant a user access to an index (its id or unique name).
    Grant {
        username: String,
        #[arg(value_name = "INDEX")]
        index_id: String,
    },
    /// Take a user's access to an index (its id or unique name) away.
    Revoke {
        username: String,
        #[arg(value_name = "INDEX")]
        index_id: String,
    },
    /// Delete a user and their grants (the last admin cannot be removed).
    Remove { username: String },
}

pub fn run(args: UserArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.clone().unwrap_or_else(|| PathBuf::from(super::settings::DEFAULT_DATA_DIR));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let config = args.database.store_config(&data_dir)?;
    runtime.block_on(execute(args, &config))
}

/// Opens the store; only `add` may create a new embedded one.
async fn open(config: &StoreConfig, create: bool) -> anyhow::Result<Arc<dyn Store>> {
    let context = match config {
        StoreConfig::Sqlite { data_dir } => {
            if !create && !data_dir.join(SQLITE_FILE).is_file() {
                bail!(
                    "there is no facesearch database in {} (wrong --data-dir or FACESEARCH_DATA_DIR?)",
                    data_dir.display()
                );
            }
            format!("opening the database in {}", data_dir.display())
        }
        StoreConfig::Postgres(_) => "opening the PostgreSQL database".to_string(),
    };
    facesearch_store::open(config).await.context(context)
}

/// The new password: from FACESEARCH_NEW_PASSWORD, else one line of standard input.
fn read_password(username: &str) -> anyhow::Result<String> {
    let password = match std::env::var(PASSWORD_ENV) {
        Ok(p) => p,
        Err(std::env::VarError::NotUnicode(_)) => bail!("{PASSWORD_ENV} is not valid UTF-8"),
        Err(std::env::VarError::NotPresent) => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprint!("new password for {username} (input is shown): ");
                let _ = std::io::stderr().flush();
            }
            let mut line = String::new();
            let n = stdin.lock().read_line(&mut line).context("reading the password from standard input")?;
            if n == 0 {
                bail!("no password given: set {PASSWORD_ENV} or write it as one line on standard input");
            }
            line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line).to_string()
        }
    };
    check_password(&password).map_err(|e| anyhow!("{e}"))?;
    Ok(password)
}

async fn existing_user(store: &dyn Store, username: &str) -> anyhow::Result<User> {
    store.get_user(username).await?.ok_or_else(|| anyhow!("there is no user named {username:?}"))
}

/// The id of the index `given` names: its id, else its unique name (exact, else
/// ignoring case); an unknown or ambiguous name is an error listing the candidates.
async fn existing_index(store: &dyn Store, given: &str) -> anyhow::Result<String> {
    use super::index_name::{Candidate, NotOne, resolve};
    if store.get_index(given).await?.is_some() {
        return Ok(given.to_string());
    }
    let candidates: Vec<Candidate> =
        store.list_indexes().await?.into_iter().map(|i| Candidate { id: i.id, name: i.index_name }).collect();
    match resolve(&candidates, given) {
        Ok(id) => Ok(id),
        Err(NotOne::Unknown { listing }) => {
            bail!("there is no index with the id or name {given:?}; indexes: {listing}")
        }
        Err(NotOne::Ambiguous { listing }) => bail!("{given:?} names several indexes: {listing}; give the id"),
    }
}

/// The user as the API shows it (through `Value`: its keys sorted, as the API sends them).
fn user_object(user: &User) -> Value {
    serde_json::to_value(UserObject::from(user)).unwrap_or(Value::Null)
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn grants_text(user: &User) -> String {
    if user.grants.is_empty() { "-".to_string() } else { user.grants.join(",") }
}

/// An engine refusal as the operator reads it; anything else with what was being done.
fn user_error(e: EngineError, doing: &'static str) -> anyhow::Error {
    match e {
        EngineError::UserNotFound(name) => anyhow!("there is no user named {name:?}"),
        EngineError::IndexNotFound(id) => anyhow!("there is no index with id {id:?}"),
        EngineError::Store(StoreError::DuplicateUser(name)) => anyhow!("a user named {name:?} already exists"),
        EngineError::Store(StoreError::LastAdmin(name)) => {
            anyhow!("{name:?} is the last admin and cannot be removed; add another admin first")
        }
        e => anyhow!(e).context(doing),
    }
}

async fn warn_if_no_admin(store: &dyn Store) -> anyhow::Result<()> {
    if !store.list_users().await?.iter().any(|u| u.role == Role::Admin) {
        eprintln!(
            "note: this database has no admin user, and the server only creates one in an empty database; \
             add one with `facesearch user add NAME --role admin`"
        );
    }
    Ok(())
}

async fn execute(args: UserArgs, location: &StoreConfig) -> anyhow::Result<()> {
    let json = args.json;
    match args.command {
        UserCommand::Add { username, role, grants } => {
            check_username(&username).map_err(|e| anyhow!("{e}"))?;
            let role = parse_role(&role).map_err(|e| anyhow!("{e}"))?;
            let password = read_password(&username)?;
            let store = open(location, true).await?;
            let mut ids = Vec::with_capacity(grants.len());
            for given in &grants {
                ids.push(existing_index(store.as_ref(), given).await?);
            }
            let grants = ids;
            // Through the engine's write path: a grant whose index is deleted meanwhile
            // removes the new user again instead of leaving it half made.
            let service = Service::new(store.clone());
            let user = service
                .create_user(&username, &password, role.as_str(), grants)
                .await
                .map_err(|e| user_error(e, "creating the user"))?;
            if json {
                print_json(&user_object(&user))?;
            } else {
                println!("created user {username} ({role}), grants: {}", grants_text(&user));
            }
            warn_if_no_admin(store.as_ref()).await?;
        }
        UserCommand::List => {
            let store = open(location, false).await?;
            let users = store.list_users().await?;
            if json {
                print_json(&Value::Array(users.iter().map(user_object).collect()))?;
            } else {
                let width = users.iter().map(|u| u.username.len()).max().unwrap_or(0).max("USERNAME".len());
                println!("{:width$}  {:8}  {:24}  GRANTS", "USERNAME", "ROLE", "CREATED");
                for u in &users {
                    println!("{:width$}  {:8}  {:24}  {}", u.username, u.role.as_str(), u.created_at, grants_text(u));
                }
            }
        }
        UserCommand::Passwd { username } => {
            let store = open(location, false).await?;
            // Asked before the prompt, so nobody types a password for a typo.
            existing_user(store.as_ref(), &username).await?;
            let password = read_password(&username)?;
            let user = Service::new(store)
                .update_user(&username, Some(&password), None)
                .await
                .map_err(|e| user_error(e, "changing the password"))?;
            if json {
                print_json(&user_object(&user))?;
            } else {
                println!("changed the password of {username}");
            }
        }
        UserCommand::Grant { username, index_id } => {
            let store = open(location, false).await?;
            existing_user(store.as_ref(), &username).await?;
            let index_id = existing_index(store.as_ref(), &index_id).await?;
            let service = Service::new(store.clone());
            service.grant(&username, &index_id).await.map_err(|e| user_error(e, "granting the index"))?;
            let user = existing_user(store.as_ref(), &username).await?;
            if json {
                print_json(&user_object(&user))?;
            } else {
                println!("granted {username} access to index {index_id}");
            }
        }
        UserCommand::Revoke { username, index_id } => {
            let store = open(location, false).await?;
            existing_user(store.as_ref(), &username).await?;
            let index_id = existing_index(store.as_ref(), &index_id).await?;
            let removed = Service::new(store.clone())
                .revoke(&username, &index_id)
                .await
                .map_err(|e| user_error(e, "revoking the grant"))?;
            let user = existing_user(store.as_ref(), &username).await?;
            if json {
                print_json(&json!({"user": user_object(&user), "revoked": removed}))?;
            } else if removed {
                println!("revoked {username}'s access to index {index_id}");
            } else {
                println!("{username} had no grant for index {index_id}; nothing changed");
            }
        }
        UserCommand::Remove { username } => {
            let store = open(location, false).await?;
            // The store refuses to delete the last admin, in the transaction of the delete
            // (so a server, or another `facesearch user`, deleting at the same moment
            // cannot leave none). An operator at the machine has no account of their own.
            Service::new(store).delete_user(None, &username).await.map_err(|e| user_error(e, "removing the user"))?;
            if json {
                print_json(&json!({"removed": username}))?;
            } else {
                println!("removed user {username}");
            }
        }
    }
    Ok(())
}
