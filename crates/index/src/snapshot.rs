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

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Collection, FaceIndex, IndexConfig, IndexError, Owner, ann::AnnGraph};

const FORMAT: u32 = 1;
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
}

fn io(path: &Path, e: std::io::Error) -> IndexError {
    IndexError::Snapshot(format!("{}: {e}", path.display()))
}

fn bad(path: &Path, what: &str) -> IndexError {
    IndexError::Snapshot(format!("{}: {what}", path.display()))
}

fn utf8(path: &Path) -> Result<&str, IndexError> {
    path.to_str().ok_or_else(|| bad(path, "path is not UTF-8"))
}

fn sync_dir(dir: &Path) -> Result<(), IndexError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))
}

fn create(path: &Path) -> Result<BufWriter<File>, IndexError> {
    File::create(path).map(|f| BufWriter::with_capacity(1 << 20, f)).map_err(|e| io(path, e))
}

fn finish(path: &Path, w: BufWriter<File>) -> Result<(), IndexError> {
    let f = w.into_inner().map_err(|e| io(path, e.into_error()))?;
    f.sync_all().map_err(|e| io(path, e))
}

fn write_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u32).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn read_str(r: &mut impl Read, path: &Path) -> Result<Box<str>, IndexError> {
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

impl FaceIndex {
    /// Writes the index under `dir` with `tag`, replacing the previous snapshot.
    /// Writers of the index should be held off by the caller while this runs, so the
    /// snapshot matches `tag`; searches may go on.
    pub fn save(&self, dir: &Path, tag: u64) -> Result<(), IndexError> {
        fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let name = format!("snap-{tag}-{nanos}");
        let snap = dir.join(&name);
        fs::create_dir(&snap).map_err(|e| io(&snap, e))?;
        let all = self.read();
        let mut names: Vec<&String> = all.keys().collect();
        names.sort();
        let mut entries = Vec::new();
        for (i, name) in names.into_iter().enumerate() {
            let c = &all[name];
            let stem = format!("c{i}");
            let vec_path = snap.join(format!("{stem}.vec"));
            let mut w = create(&vec_path)?;
            for x in &c.vectors {
                w.write_all(&x.to_le_bytes()).map_err(|e| io(&vec_path, e))?;
            }
            finish(&vec_path, w)?;
            let ids_path = snap.join(format!("{stem}.ids"));
            let mut w = create(&ids_path)?;
            for o in &c.owners {
                (|| {
                    w.write_all(&o.key.to_le_bytes())?;
                    write_str(&mut w, &o.image_id)?;
                    write_str(&mut w, &o.record_id)
                })()
                .map_err(|e| io(&ids_path, e))?;
            }
            finish(&ids_path, w)?;
            if let Some(graph) = &c.graph {
                let graph_path = snap.join(format!("{stem}.graph"));
                graph.save(utf8(&graph_path)?)?;
                File::open(&graph_path).and_then(|f| f.sync_all()).map_err(|e| io(&graph_path, e))?;
            }
            entries.push(CollectionEntry {
                name: name.clone(),
                stem,
                rows: c.len(),
                next_key: c.next_key,
                graph: c.graph.is_some(),
            });
        }
        drop(all);
        let manifest = Manifest { format: FORMAT, dim: self.dim, tag, collections: entries };
        let manifest_path = snap.join("manifest.json");
        let mut w = create(&manifest_path)?;
        serde_json::to_writer(&mut w, &manifest).map_err(|e| bad(&manifest_path, &e.to_string()))?;
        finish(&manifest_path, w)?;
        sync_dir(&snap)?;

        let tmp = dir.join(format!("{CURRENT}.tmp"));
        let mut w = create(&tmp)?;
        w.write_all(name.as_bytes()).map_err(|e| io(&tmp, e))?;
        finish(&tmp, w)?;
        fs::rename(&tmp, dir.join(CURRENT)).map_err(|e| io(dir, e))?;
        sync_dir(dir)?;
        remove_other_snapshots(dir, &name);
        Ok(())
    }

    /// Loads the snapshot under `dir`, returning the index and the tag it was saved
    /// with; `Ok(None)` when there is none. Any damage is an error (the caller then
    /// rebuilds from the store).
    pub fn load(dir: &Path, dim: usize, config: IndexConfig) -> Result<Option<(FaceIndex, u64)>, IndexError> {
        let current = dir.join(CURRENT);
        let name = match fs::read_to_string(&current) {
            Ok(name) => name,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&current, e)),
        };
        if name.contains('/') || name.contains("..") {
            return Err(bad(&current, "names a path outside the snapshot directory"));
        }
        let snap = dir.join(name.trim());
        let manifest_path = snap.join("manifest.json");
        let file = File::open(&manifest_path).map_err(|e| io(&manifest_path, e))?;
        let manifest: Manifest =
            serde_json::from_reader(BufReader::new(file)).map_err(|e| bad(&manifest_path, &e.to_string()))?;
        if manifest.format != FORMAT || manifest.dim != dim {
            return Err(bad(&manifest_path, &format!("format {} dim {}", manifest.format, manifest.dim)));
        }
        let index = FaceIndex::with_config(dim, config);
        let mut collections = HashMap::new();
        for entry in &manifest.collections {
            collections.insert(entry.name.clone(), load_collection(&snap, entry, dim, &index.config)?);
        }
        *index.write() = collections;
        Ok(Some((index, manifest.tag)))
    }
}

fn load_collection(
    snap: &Path,
    entry: &CollectionEntry,
    dim: usize,
    config: &IndexConfig,
) -> Result<Collection, IndexError> {
    if entry.stem.contains('/') || entry.stem.contains("..") {
        return Err(bad(snap, "bad collection file name"));
    }
    let vec_path = snap.join(format!("{}.vec", entry.stem));
    let bytes = fs::read(&vec_path).map_err(|e| io(&vec_path, e))?;
    if bytes.len() != entry.rows * dim * 4 {
        return Err(bad(&vec_path, &format!("{} bytes for {} rows of {dim}", bytes.len(), entry.rows)));
    }
    let vectors: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    drop(bytes);

    let ids_path = snap.join(format!("{}.ids", entry.stem));
    let file = File::open(&ids_path).map_err(|e| io(&ids_path, e))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
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
    if r.read(&mut [0u8; 1]).map_err(|e| io(&ids_path, e))? != 0 {
        return Err(bad(&ids_path, "trailing bytes"));
    }

    let mut c = Collection { vectors, owners, rows, keys: HashMap::new(), next_key: entry.next_key, graph: None };
    if entry.graph {
        let graph_path = snap.join(format!("{}.graph", entry.stem));
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
pub fn remove(dir: &Path) -> Result<(), IndexError> {
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
