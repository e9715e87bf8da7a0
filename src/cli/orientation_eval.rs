//! `facesearch eval orientation`: how the pipeline treats the orientation of real
//! photos. For every `face` and `multiface` row of a manifest it reports whether the
//! photo's quarter turns were tried (the extra cost: three more detections) and which
//! turn was used, separately for the rows whose note says they were turned on purpose
//! (pixel-rotated copies, which should be turned back) and the ordinary photos (which
//! should not be turned: any turn there is a false rotation, listed by path), and how
//! many an enrolment would refuse as `FACE_NOT_UPRIGHT` (listed by path).

use std::collections::BTreeMap;
use std::path::Path;

use facesearch_eval::{ManifestRow, table};
use facesearch_face::{FaceChoice, FacePipeline, PipelineError};
use serde::Serialize;

/// What the pipeline did with one photo.
#[derive(Debug, Clone, Serialize)]
struct Outcome {
    path: String,
    /// The manifest's note says the photo was turned on purpose.
    turned_on_purpose: bool,
    /// A face was found (in some turn).
    face: bool,
    /// The turns were tried.
    tried: bool,
    /// Degrees clockwise applied (0: used as sent).
    rotation: u16,
    /// An enrolment would refuse it as not upright.
    not_upright: bool,
}

/// The counts of one group of rows.
#[derive(Debug, Default, Serialize)]
struct Group {
    rows: usize,
    unreadable: usize,
    faces_found: usize,
    turns_tried: usize,
    /// Photos per rotation applied (degrees clockwise).
    rotation: BTreeMap<u16, usize>,
    /// The photos that were turned.
    turned: Vec<String>,
    /// Photos an enrolment would refuse as not upright (`FACE_NOT_UPRIGHT`).
    not_upright: Vec<String>,
}

#[derive(Serialize)]
struct Report {
    pack: String,
    /// Photos turned on purpose (their note says "rotated").
    turned_on_purpose: Group,
    /// Every other face photo.
    ordinary: Group,
}

/// Whether a manifest row is a copy turned on purpose, by its note.
fn turned_on_purpose(row: &ManifestRow) -> bool {
    let note = row.note.to_lowercase();
    note.contains("rotated") && !note.contains("exif orientation")
}

pub fn run(pipeline: &FacePipeline, jobs: usize, json: bool, base: &Path, rows: &[ManifestRow]) -> anyhow::Result<()> {
    let rows: Vec<&ManifestRow> = rows.iter().filter(|r| r.kind == "face" || r.kind == "multiface").collect();
    let outcomes: Vec<Option<Outcome>> = super::parallel_map(rows.len(), jobs, |i| {
        let row = rows[i];
        let bytes = std::fs::read(base.join(&row.path)).ok()?;
        let decoded = pipeline.decode(&bytes).ok()?;
        // As an enrolment decides, then (where it refuses) as a search does.
        let (upright, not_upright) = match pipeline.detect_upright(&decoded.rgb, FaceChoice::Largest, true) {
            Err(PipelineError::NotUpright { .. }) => {
                (pipeline.detect_upright(&decoded.rgb, FaceChoice::Largest, false).ok()?, true)
            }
            other => (other.ok()?, false),
        };
        Some(Outcome {
            path: row.path.clone(),
            turned_on_purpose: turned_on_purpose(row),
            face: !upright.faces.is_empty(),
            tried: upright.tried,
            rotation: upright.rotation.degrees(),
            not_upright,
        })
    });
    let mut report = Report {
        pack: pipeline.pack().name().to_string(),
        turned_on_purpose: Group::default(),
        ordinary: Group::default(),
    };
    for (row, outcome) in rows.iter().zip(&outcomes) {
        let group = if turned_on_purpose(row) { &mut report.turned_on_purpose } else { &mut report.ordinary };
        group.rows += 1;
        let Some(o) = outcome else {
            group.unreadable += 1;
            continue;
        };
        group.faces_found += usize::from(o.face);
        group.turns_tried += usize::from(o.tried);
        *group.rotation.entry(o.rotation).or_default() += 1;
        if o.rotation != 0 {
            group.turned.push(format!("{} ({}°)", o.path, o.rotation));
        }
        if o.not_upright {
            group.not_upright.push(o.path.clone());
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let line = |name: &str, g: &Group| {
        let turned = g.rotation.iter().filter(|(r, _)| **r != 0).map(|(_, n)| n).sum::<usize>();
        vec![
            name.to_string(),
            g.rows.to_string(),
            g.faces_found.to_string(),
            format!("{} ({:.2} %)", g.turns_tried, share(g.turns_tried, g.faces_found)),
            format!("{turned} ({:.2} %)", share(turned, g.faces_found)),
            format!("{} ({:.2} %)", g.not_upright.len(), share(g.not_upright.len(), g.faces_found)),
        ]
    };
    println!("pack: {}", report.pack);
    println!(
        "{}",
        table::render(
            &["photos", "rows", "faces found", "turns tried", "turned", "enrolment: FACE_NOT_UPRIGHT"],
            &[line("turned on purpose", &report.turned_on_purpose), line("ordinary", &report.ordinary)],
        )
    );
    for (name, g) in [("turned on purpose", &report.turned_on_purpose), ("ordinary", &report.ordinary)] {
        for path in &g.turned {
            println!("{name}, turned: {path}");
        }
        for path in &g.not_upright {
            println!("{name}, enrolment refused as not upright: {path}");
        }
    }
    Ok(())
}

fn share(n: usize, of: usize) -> f64 {
    if of == 0 { 0.0 } else { 100.0 * n as f64 / of as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(note: &str) -> ManifestRow {
        ManifestRow {
            path: "p".into(),
            identity: String::new(),
            source: "s".into(),
            kind: "face".into(),
            note: note.into(),
        }
    }

    #[test]
    fn rows_turned_on_purpose_are_told_by_their_note() {
        assert!(turned_on_purpose(&row("pixels rotated 90 deg CCW, no EXIF (face genuinely sideways)")));
        assert!(turned_on_purpose(&row("pixel-rotated copy (no EXIF)")));
        assert!(!turned_on_purpose(&row("250x250 deep-funneled")));
        assert!(!turned_on_purpose(&row("EXIF orientation 6 (rotated on load)")));
    }
}
