//! Duplicate identities: groups of records whose faces match each other while the
//! records name different people (one face enrolled under several identities).
//!
//! Every face of the indexes is compared with every other exactly, as a blocked matrix
//! product over a snapshot of the in-memory vectors ([`facesearch_vectors::neighbours`]),
//! on the blocking pool; only the pairs above the score are kept. Matching face pairs
//! become record pairs (best image pair each), pairs of records that name the same
//! person are dropped, and the rest are grouped into connected components.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use facesearch_store::{IndexInfo, Record};
use facesearch_vectors::{checked_similarity, neighbours};
use serde::Serialize;

use crate::{Engine, EngineError, checked, round2, task_failed};

impl Engine {
    /// Groups of records of `indexes` whose faces match each other at `min_score` or
    /// above while the records differ (see [`same_identity`]). Every face is compared
    /// with every other one exactly, as a blocked matrix product over a snapshot of
    /// the vectors on the blocking pool (see [`facesearch_vectors::neighbours`]);
    /// `progress` counts the faces done.
    pub async fn find_duplicates(
        &self,
        indexes: &[IndexInfo],
        min_score: f64,
        progress: Arc<DuplicateProgress>,
    ) -> Result<DuplicateReport, EngineError> {
        // Faces of different packs cannot be compared: one pack per job.
        let pack = match self.packs_of(indexes)?.as_slice() {
            [] => self.default_pack,
            [pack] => *pack,
            _ => {
                let ids: Vec<&str> = indexes.iter().map(|i| i.id.as_str()).collect();
                return Err(EngineError::MixedPacks(ids.join(",")));
            }
        };
        let slot = self.vectors.slot(pack);
        let (vectors, rows) = self.vectors.all_of(&self.store, pack, indexes).await?;
        let mut record_numbers: HashMap<&str, u32> = HashMap::new();
        let group: Vec<u32> = rows
            .iter()
            .map(|(_, _, record)| {
                let next = u32::try_from(record_numbers.len()).unwrap_or(u32::MAX);
                *record_numbers.entry(record.as_str()).or_insert(next)
            })
            .collect();
        progress.total.store(rows.len() as u64, Ordering::Relaxed);
        let (min_similarity, dim) = (self.min_similarity_for(pack, min_score), slot.vectors.dimension());
        let counter = progress.clone();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (pairs, truncated) = tokio::task::spawn_blocking(move || {
            let tick = |n: usize| {
                counter.done.fetch_add(n as u64, Ordering::Relaxed);
            };
            neighbours(&vectors, dim, &group, min_similarity, MAX_DUPLICATE_PAIRS, threads, &tick)
        })
        .await
        .map_err(task_failed)?;

        // The best pair of images of each pair of records.
        let mut best: HashMap<(&str, &str), (f32, &str, &str)> = HashMap::new();
        for n in &pairs {
            let (a, b) = (&rows[n.a], &rows[n.b]);
            // A damaged (non-unit) vector can score anything: such a pair fails the job.
            if checked_similarity(n.similarity).is_none() {
                checked(n.similarity, &a.0, &format!("{} or {}", a.1, b.1))?;
            }
            let (first, second) = if a.2 <= b.2 { (a, b) } else { (b, a) };
            let slot = best.entry((first.2.as_str(), second.2.as_str())).or_insert((f32::NEG_INFINITY, "", ""));
            if n.similarity > slot.0 {
                *slot = (n.similarity, first.1.as_str(), second.1.as_str());
            }
        }
        let mut ids: Vec<String> = best.keys().flat_map(|(a, b)| [a.to_string(), b.to_string()]).collect();
        ids.sort_unstable();
        ids.dedup();
        let records: HashMap<String, Record> =
            self.store.get_records(&ids).await?.into_iter().map(|r| (r.record_id.clone(), r)).collect();
        let mut edges = Vec::new();
        let mut same_identity_skipped = 0;
        for ((a, b), (similarity, image_a, image_b)) in best {
            // A record deleted since the snapshot is simply left out.
            let (Some(ra), Some(rb)) = (records.get(a), records.get(b)) else { continue };
            let score = round2(slot.calibration.score(similarity));
            if score < min_score {
                continue;
            }
            if same_identity(ra, rb) {
                same_identity_skipped += 1;
                continue;
            }
            edges.push(DuplicatePair {
                record_a: a.to_string(),
                record_b: b.to_string(),
                match_score: score,
                similarity: f64::from(similarity),
                image_a: image_a.to_string(),
                image_b: image_b.to_string(),
            });
        }
        Ok(DuplicateReport {
            faces: rows.len(),
            min_score,
            groups: group_pairs(edges, &records),
            truncated,
            same_identity_skipped,
        })
    }
}

/// The most face pairs a duplicate search keeps (beyond it the report says `truncated`).
pub const MAX_DUPLICATE_PAIRS: usize = 1_000_000;

/// How far a duplicate search has got: faces compared out of all.
#[derive(Debug, Default)]
pub struct DuplicateProgress {
    pub done: AtomicU64,
    pub total: AtomicU64,
}

/// A record of a duplicate group.
#[derive(Debug, Clone, Serialize)]
pub struct DuplicateRecord {
    pub record_id: String,
    pub index_id: String,
    pub name: String,
    pub id_no: String,
    pub reference: Option<String>,
}

/// Two records of a group whose faces match, with their best-matching images.
#[derive(Debug, Clone, Serialize)]
pub struct DuplicatePair {
    pub record_a: String,
    pub record_b: String,
    pub match_score: f64,
    pub similarity: f64,
    pub image_a: String,
    pub image_b: String,
}

/// A connected group: every record matches at least one other of the group.
#[derive(Debug, Clone, Serialize)]
pub struct DuplicateGroup {
    pub records: Vec<DuplicateRecord>,
    /// Best first.
    pub pairs: Vec<DuplicatePair>,
}

/// The result of a duplicate search.
#[derive(Debug, Clone, Serialize)]
pub struct DuplicateReport {
    /// Faces compared.
    pub faces: usize,
    pub min_score: f64,
    /// Best group (highest pair score) first.
    pub groups: Vec<DuplicateGroup>,
    /// More than [`MAX_DUPLICATE_PAIRS`] face pairs matched: some are missing.
    pub truncated: bool,
    /// Matching record pairs left out because both records name the same person.
    pub same_identity_skipped: usize,
}

/// Whether two records describe the same person, so that their faces matching is no
/// fraud: the same `id_no` when both have one, else the same name (ignoring case and
/// surrounding spaces) when both have one. Records that say nothing are never the same.
pub fn same_identity(a: &Record, b: &Record) -> bool {
    let (ia, ib) = (a.fields.id_no.trim(), b.fields.id_no.trim());
    if !ia.is_empty() && !ib.is_empty() {
        return ia == ib;
    }
    let (na, nb) = (a.fields.name.trim(), b.fields.name.trim());
    !na.is_empty() && na.to_lowercase() == nb.to_lowercase()
}

/// Connected components of the records joined by `edges` (union-find).
fn group_pairs(edges: Vec<DuplicatePair>, records: &HashMap<String, Record>) -> Vec<DuplicateGroup> {
    let mut ids: Vec<&str> = edges.iter().flat_map(|e| [e.record_a.as_str(), e.record_b.as_str()]).collect();
    ids.sort_unstable();
    ids.dedup();
    let number: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut parent: Vec<usize> = (0..ids.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for e in &edges {
        let (a, b) = (root(&mut parent, number[e.record_a.as_str()]), root(&mut parent, number[e.record_b.as_str()]));
        if a != b {
            parent[a.max(b)] = a.min(b);
        }
    }
    let mut groups: HashMap<usize, DuplicateGroup> = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        let Some(r) = records.get(*id) else { continue };
        let g = root(&mut parent, i);
        groups.entry(g).or_insert_with(|| DuplicateGroup { records: Vec::new(), pairs: Vec::new() }).records.push(
            DuplicateRecord {
                record_id: r.record_id.clone(),
                index_id: r.index_id.clone(),
                name: r.fields.name.clone(),
                id_no: r.fields.id_no.clone(),
                reference: r.reference.clone(),
            },
        );
    }
    let edge_groups: Vec<usize> = edges.iter().map(|e| root(&mut parent, number[e.record_a.as_str()])).collect();
    for (e, g) in edges.into_iter().zip(edge_groups) {
        if let Some(group) = groups.get_mut(&g) {
            group.pairs.push(e);
        }
    }
    let mut groups: Vec<DuplicateGroup> = groups.into_values().collect();
    for g in &mut groups {
        g.pairs.sort_by(|x, y| y.match_score.total_cmp(&x.match_score).then_with(|| x.record_a.cmp(&y.record_a)));
    }
    let top = |g: &DuplicateGroup| g.pairs.first().map_or(0.0, |p| p.match_score);
    groups.sort_by(|x, y| top(y).total_cmp(&top(x)).then_with(|| x.records[0].record_id.cmp(&y.records[0].record_id)));
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use facesearch_store::RecordFields;

    fn record(id: &str, name: &str, id_no: &str) -> Record {
        Record {
            record_id: id.into(),
            index_id: "idx".into(),
            fields: RecordFields { name: name.into(), id_no: id_no.into(), ..RecordFields::default() },
            reference: None,
            image_ids: Vec::new(),
            images: Vec::new(),
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn same_identity_rules() {
        assert!(same_identity(&record("a", "Ann", "X1"), &record("b", "Bob", "X1")), "same id_no");
        assert!(!same_identity(&record("a", "Ann", "X1"), &record("b", "Ann", "X2")), "different id_no");
        assert!(same_identity(&record("a", " ann ", ""), &record("b", "ANN", "X2")), "no id_no: the name decides");
        assert!(!same_identity(&record("a", "Ann", ""), &record("b", "Bob", "")));
        assert!(!same_identity(&record("a", "", ""), &record("b", "", "")), "nothing to compare");
    }

    #[test]
    fn groups_are_connected_components() {
        let pair = |a: &str, b: &str, s: f64| DuplicatePair {
            record_a: a.into(),
            record_b: b.into(),
            match_score: s,
            similarity: 0.9,
            image_a: format!("{a}-img"),
            image_b: format!("{b}-img"),
        };
        let records: HashMap<String, Record> =
            ["a", "b", "c", "d", "e"].iter().map(|id| (id.to_string(), record(id, id, id))).collect();
        let groups = group_pairs(vec![pair("a", "b", 81.0), pair("d", "e", 95.0), pair("b", "c", 85.0)], &records);
        assert_eq!(groups.len(), 2);
        let ids = |g: &DuplicateGroup| g.records.iter().map(|r| r.record_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&groups[0]), ["d", "e"], "best group first");
        assert_eq!(ids(&groups[1]), ["a", "b", "c"]);
        assert_eq!(groups[1].pairs.iter().map(|p| p.match_score).collect::<Vec<_>>(), [85.0, 81.0]);
    }
}
