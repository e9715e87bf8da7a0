//! Saving the whole index to disk and loading it back, so that a restart with
//! millions of faces reads a few flat files instead of re-reading and re-inserting
//! every vector from the store (and rebuilding every graph).
//!
//! A snapshot is a directory `snap-<tag>-<nanos>/` beside a `CURRENT` file naming it.
//! Files are written and synced first, then `CURRENT` is replaced atomically (write a
//! temporary file, fsync, rename, fsync the directory), so a crash leaves either the
//! old snapshot or the new one, never a mix. The caller passes a `tag` (the store's
//! change counter) and gets it back on load: a tag that differs from the store's
//! means the snapshot is stale and the index must be rebuilt from the store.
//!
//! Layout of one snapshot: `manifest.json` (format, dimension, tag, collections), and
//! per collection `cN.vec` (little-endian f32 rows), `cN.ids` (per row: graph key u64,
//! then image id and record id as u32 length + UTF-8), and `cN.graph` (USearch's own
//! format) when the collection has a graph.
//!
//! # Verification
//!
//! A snapshot is a copy of the store, and a copy is only used when it provably is the
//! one that was saved: the manifest records the SHA-256 digest of every file of every
//! collection, and `CURRENT` records the digest of the manifest (second line). On
//! load every digest is checked before the file's contents are used, and every vector
//! must be of unit length. Any mismatch fails the whole load ([`VectorError::Snapshot`]
//! with the reason): nothing of a snapshot that fails is ever used, so nothing of it
//! can be saved again; the caller rebuilds the index from the store. The digests
//! detect damage (a disk, a copy, an edit), not a deliberate forgery by someone who can
//! write the data directory (who could recompute them, or edit the database itself).
//!
//! Directories are created 0700 and files 0600 (on Unix), whatever the umask and the
//! mode of the directory above; a snapshot directory left looser by an older version
//! is tightened when the next snapshot is saved into it.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Collection, Owner, UNIT_TOLERANCE, VectorConfig, VectorError, VectorIndex, ann::AnnGraph};

/// 2: file digests in the manifest, the manifest's digest in `CURRENT`.
const FORMAT: u32 = 2;
const CURRENT: &str = "CURRENT";

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: u32,
    dim: usize,
    tag: u64,
    collections: Vec<CollectionEntry>,
}

#[derive(Serialize, Deserialize)]
struct CollectionEntry {
    name: String,
    stem: String,
    rows: usize,
    next_key: u64,
    graph: bool,
    /// SHA-256 (lower-case hex) of `stem.vec`, `stem.ids` and `stem.graph`.
    vec_sha256: String,
    ids_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    graph_sha256: Option<String>,
}

fn io(path: &Path, e: std::io::Error) -> VectorError {
    VectorError::Snapshot(format!("{}: {e}", path.display()))
}

fn bad(path: &Path, what: &str) -> VectorError {
    VectorError::Snapshot(format!("{}: {what}", path.display()))
}

fn utf8(path: &Path) -> Result<&str, VectorError> {
    path.to_str().ok_or_else(|| bad(path, "path is not UTF-8"))
}

fn sync_dir(dir: &Path) -> Result<(), VectorError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))
}

/// Creates `dir` (and any missing parent) mode 0700 on Unix, and tightens it to 0700
/// if it already exists with a looser mode (e.g. made by an older version).
pub fn create_private_dir(dir: &Path) -> Result<(), VectorError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| io(dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir).map_err(|e| io(dir, e))?.permissions().mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| io(dir, e))?;
        }
    }
    Ok(())
}

/// Opens `path` for writing, truncated, mode 0600 on Unix (also when it existed).
fn create_private_file(path: &Path) -> Result<File, VectorError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path).map_err(|e| io(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(|e| io(path, e))?;
    }
    Ok(file)
}

/// A file being written, with the SHA-256 of what was written so far.
struct Out {
    path: PathBuf,
    w: BufWriter<File>,
    hash: Sha256,
}

impl Out {
    fn create(path: PathBuf) -> Result<Self, VectorError> {
        let file = create_private_file(&path)?;
        Ok(Self { path, w: BufWriter::with_capacity(1 << 20, file), hash: Sha256::new() })
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), VectorError> {
        self.hash.update(bytes);
        self.w.write_all(bytes).map_err(|e| io(&self.path, e))
    }

    fn put_str(&mut self, s: &str) -> Result<(), VectorError> {
        self.put(&(s.len() as u32).to_le_bytes())?;
        self.put(s.as_bytes())
    }

    /// Flushes and syncs the file; returns its digest.
    fn finish(self) -> Result<String, VectorError> {
        let f = self.w.into_inner().map_err(|e| io(&self.path, e.into_error()))?;
        f.sync_all().map_err(|e| io(&self.path, e))?;
        Ok(hex::encode(self.hash.finalize()))
    }
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The SHA-256 of a file, read in blocks (a graph can be large).
fn digest_file(path: &Path) -> Result<String, VectorError> {
    let mut file = File::open(path).map_err(|e| io(path, e))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| io(path, e))?;
        if n == 0 {
            return Ok(hex::encode(hash.finalize()));
        }
        hash.update(&buf[..n]);
    }
}

/// Fails unless `actual` is the digest the snapshot recorded for `path`.
fn verify(path: &Path, actual: &str, expected: &str) -> Result<(), VectorError> {
    if actual != expected.to_ascii_lowercase() {
        return Err(bad(
            path,
            &format!(
                "SHA-256 digest {actual} differs from the recorded {expected}: the file changed after it was saved"
            ),
        ));
    }
    Ok(())
}

fn read_str(r: &mut &[u8], path: &Path) -> Result<Box<str>, VectorError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(|e| io(path, e))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > 4096 {
        return Err(bad(path, "identifier longer than 4096 bytes"));
    }
    let mut bytes = vec![0u8; len];
    r.read_exact(&mut bytes).map_err(|e| io(path, e))?;
    String::from_utf8(bytes).map(String::into_boxed_str).map_err(|_| bad(path, "identifier is not UTF-8"))
}

/// Whether a vector is of unit length (within [`UNIT_TOLERANCE`]); false for NaN or
/// infinite components.
pub fn is_unit(vector: &[f32]) -> bool {
    let squared: f64 = vector.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    (squared - 1.0).abs() <= f64::from(UNIT_TOLERANCE)
}

/// `CURRENT`: the snapshot's directory name, then the manifest's digest.
fn parse_current<'a>(path: &Path, text: &'a str) -> Result<(&'a str, &'a str), VectorError> {
    let mut lines = text.lines().map(str::trim);
    let name = lines.next().unwrap_or_default();
    let Some(manifest_digest) = lines.next().filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
    else {
        return Err(bad(path, "records no manifest digest (a snapshot of an older version, or damaged)"));
    };
    if lines.any(|l| !l.is_empty()) {
        return Err(bad(path, "has more than two lines"));
    }
    if !name.starts_with("snap-") || name.contains(['/', '\\']) || name.contains("..") {
        return Err(bad(path, "names a path outside the snapshot directory"));
    }
    Ok((name, manifest_digest))
}

impl VectorIndex {
    /// Writes the index under `dir` with `tag`, replacing the previous snapshot.
    /// Writers of the index should be held off by the caller while this runs, so the
    /// snapshot matches `tag`; searches may go on.
    pub fn save(&self, dir: &Path, tag: u64) -> Result<(), VectorError> {
        create_private_dir(dir)?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let name = format!("snap-{tag}-{nanos}");
        let snap = dir.join(&name);
        create_private_dir(&snap)?;
        let all = self.read();
        let mut names: Vec<&String> = all.keys().collect();
        names.sort();
        let mut entries = Vec::new();
        for (i, name) in names.into_iter().enumerate() {
            let c = &all[name];
            let stem = format!("c{i}");
            let mut vec_out = Out::create(snap.join(format!("{stem}.vec")))?;
            let mut row = Vec::with_capacity(self.dim * 4);
            for v in c.vectors.chunks_exact(self.dim.max(1)) {
                row.clear();
                row.extend(v.iter().flat_map(|x| x.to_le_bytes()));
                vec_out.put(&row)?;
            }
            let vec_sha256 = vec_out.finish()?;
            let mut ids_out = Out::create(snap.join(format!("{stem}.ids")))?;
            for o in &c.owners {
                ids_out.put(&o.key.to_le_bytes())?;
                ids_out.put_str(&o.image_id)?;
                ids_out.put_str(&o.record_id)?;
            }
            let ids_sha256 = ids_out.finish()?;
            let graph_sha256 = match &c.graph {
                Some(graph) => {
                    let graph_path = snap.join(format!("{stem}.graph"));
                    // Made 0600 first: USearch truncates and rewrites it, keeping the mode.
                    drop(create_private_file(&graph_path)?);
                    graph.save(utf8(&graph_path)?)?;
                    File::open(&graph_path).and_then(|f| f.sync_all()).map_err(|e| io(&graph_path, e))?;
                    Some(digest_file(&graph_path)?)
                }
                None => None,
            };
            entries.push(CollectionEntry {
                name: name.clone(),
                stem,
                rows: c.len(),
                next_key: c.next_key,
                graph: c.graph.is_some(),
                vec_sha256,
                ids_sha256,
                graph_sha256,
            });
        }
        drop(all);
        let manifest = Manifest { format: FORMAT, dim: self.dim, tag, collections: entries };
        let manifest_path = snap.join("manifest.json");
        let json = serde_json::to_vec(&manifest).map_err(|e| bad(&manifest_path, &e.to_string()))?;
        let mut out = Out::create(manifest_path)?;
        out.put(&json)?;
        let manifest_sha256 = out.finish()?;
        sync_dir(&snap)?;

        let tmp = dir.join(format!("{CURRENT}.tmp"));
        let mut out = Out::create(tmp.clone())?;
        out.put(format!("{name}\n{manifest_sha256}\n").as_bytes())?;
        out.finish()?;
        fs::rename(&tmp, dir.join(CURRENT)).map_err(|e| io(dir, e))?;
        sync_dir(dir)?;
        remove_other_snapshots(dir, &name);
        Ok(())
    }

    /// Loads the snapshot under `dir`, returning the index and the tag it was saved
    /// with; `Ok(None)` when there is none. Every file is checked against its recorded
    /// digest and every vector for unit length before anything is used; any damage
    /// is an error (the caller then rebuilds from the store) and nothing of the
    /// snapshot is returned.
    pub fn load(dir: &Path, dim: usize, config: VectorConfig) -> Result<Option<(VectorIndex, u64)>, VectorError> {
        let current = dir.join(CURRENT);
        let text = match fs::read_to_string(&current) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&current, e)),
        };
        let (name, manifest_sha256) = parse_current(&current, &text)?;
        let snap = dir.join(name);
        let manifest_path = snap.join("manifest.json");
        let bytes = fs::read(&manifest_path).map_err(|e| io(&manifest_path, e))?;
        verify(&manifest_path, &digest(&bytes), manifest_sha256)?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| bad(&manifest_path, &e.to_string()))?;
        if manifest.format != FORMAT || manifest.dim != dim {
            return Err(bad(&manifest_path, &format!("format {} dim {}", manifest.format, manifest.dim)));
        }
        let index = VectorIndex::with_config(dim, config);
        let mut collections = HashMap::new();
        for entry in &manifest.collections {
            if collections.insert(entry.name.clone(), load_collection(&snap, entry, dim, &index.config)?).is_some() {
                return Err(bad(&manifest_path, "a collection listed twice"));
            }
        }
        *index.write() = collections;
        Ok(Some((index, manifest.tag)))
    }
}

fn load_collection(
    snap: &Path,
    entry: &CollectionEntry,
    dim: usize,
    config: &VectorConfig,
) -> Result<Collection, VectorError> {
    if entry.stem.contains(['/', '\\']) || entry.stem.contains("..") {
        return Err(bad(snap, "bad collection file name"));
    }
    let vec_path = snap.join(format!("{}.vec", entry.stem));
    let bytes = fs::read(&vec_path).map_err(|e| io(&vec_path, e))?;
    verify(&vec_path, &digest(&bytes), &entry.vec_sha256)?;
    if Some(bytes.len()) != entry.rows.checked_mul(dim * 4) {
        return Err(bad(&vec_path, &format!("{} bytes for {} rows of {dim}", bytes.len(), entry.rows)));
    }
    let vectors: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    drop(bytes);
    // Every stored embedding is normalised; a row that is not cannot be trusted (and
    // would make similarities leave [-1, 1]).
    if let Some(row) = vectors.chunks_exact(dim).position(|v| !is_unit(v)) {
        return Err(bad(&vec_path, &format!("row {row} is not a unit-length vector")));
    }

    let ids_path = snap.join(format!("{}.ids", entry.stem));
    let bytes = fs::read(&ids_path).map_err(|e| io(&ids_path, e))?;
    verify(&ids_path, &digest(&bytes), &entry.ids_sha256)?;
    let mut r: &[u8] = &bytes;
    let mut owners = Vec::with_capacity(entry.rows);
    let mut rows = HashMap::with_capacity(entry.rows);
    for row in 0..entry.rows {
        let mut key = [0u8; 8];
        r.read_exact(&mut key).map_err(|e| io(&ids_path, e))?;
        let key = u64::from_le_bytes(key);
        if key >= entry.next_key {
            return Err(bad(&ids_path, "graph key beyond the recorded next key"));
        }
        let image_id = read_str(&mut r, &ids_path)?;
        let record_id = read_str(&mut r, &ids_path)?;
        if rows.insert(image_id.clone(), row).is_some() {
            return Err(bad(&ids_path, "image listed twice"));
        }
        owners.push(Owner { image_id, record_id, key });
    }
    if !r.is_empty() {
        return Err(bad(&ids_path, "trailing bytes"));
    }
    drop(bytes);

    let mut c =
        Collection { vectors, owners, rows, keys: HashMap::new(), next_key: entry.next_key, graph: None, quant: None };
    c.ensure_quant(dim, config.exact_scan);
    if entry.graph {
        let graph_path = snap.join(format!("{}.graph", entry.stem));
        let Some(expected) = &entry.graph_sha256 else {
            return Err(bad(&graph_path, "no digest recorded"));
        };
        verify(&graph_path, &digest_file(&graph_path)?, expected)?;
        let graph = AnnGraph::load(utf8(&graph_path)?, dim, config)?;
        if graph.len() != c.len() {
            return Err(bad(&graph_path, &format!("graph holds {} vectors, collection {}", graph.len(), c.len())));
        }
        c.keys = c.owners.iter().enumerate().map(|(row, o)| (o.key, row)).collect();
        c.graph = Some(graph);
    } else if c.len() >= config.ann_min_rows {
        c.build_graph(dim, config)?;
    }
    Ok(c)
}

/// Deletes the snapshot under `dir` (its `CURRENT` first, so a crash midway leaves
/// no snapshot rather than half of one). Used when faces are deleted: a deleted
/// person's vector must not outlive the record in a file on disk.
pub fn remove(dir: &Path) -> Result<(), VectorError> {
    match fs::remove_file(dir.join(CURRENT)) {
        Ok(()) => sync_dir(dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(dir, e)),
    }
    remove_other_snapshots(dir, "");
    Ok(())
}

/// Best effort: an old snapshot left behind only costs disk space.
fn remove_other_snapshots(dir: &Path, keep: &str) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap-") && name != keep {
            let path: PathBuf = entry.path();
            if let Err(e) = fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove an old index snapshot");
            }
        }
    }
}
