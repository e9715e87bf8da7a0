//! Sideways and upside-down photos: a phone photo turned 90° without an EXIF tag, or
//! a scan fed in the wrong way round. The detectors and embedders were trained on
//! upright faces, and on a turned face the detector either misses it or still finds
//! it, less surely, with landmarks the aligner turns into a crop that matches nobody.
//! SCRFD's landmarks follow the face (a sideways face reads as tilted about 90°), but
//! YuNet lays them out as on an upright face (eyes level above the mouth) whatever the
//! photo shows, so the tilt of the landmarks alone cannot tell a turned face; the
//! detector's confidence can: measured on ../shared/eval, the upright turn of a face
//! is the one either detector is surest of (EVALUATION.md, "Sideways photos").
//!
//! This module turns an image by quarter turns, maps a face found in the turned image
//! back to the photo's own pixels, and decides which turn to use ([`needs_turning`],
//! [`pick`]).

use std::borrow::Cow;

use image::{RgbImage, imageops};

use crate::detect::{BBox, Detection};
use crate::quality::pose;

/// The largest tilt of the eye line (degrees) of a face counted as upright. Half a
/// quarter turn: any face is within it in exactly one of the four quarter turns.
pub const MAX_UPRIGHT_ROLL: f32 = 45.0;

/// A turn replaces the photo as sent only when the detector is surer of its upright
/// face by at least this much than of the face as sent (upright; a face tilted beyond
/// [`MAX_UPRIGHT_ROLL`] or none at all counts as nothing): near-ties keep the photo.
pub const TURN_MARGIN: f32 = 0.05;

/// Where one detector's confidence (its own scale: YuNet scores a clear frontal face
/// about 0.95, SCRFD about 0.75–0.85) decides about turning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Confidence {
    /// A face upright in the photo as sent that the detector is at least this sure of
    /// is used as sent: no turn is tried (the common case costs one detection).
    pub sure: f32,
    /// A turn's upright face must score at least this, whatever the photo as sent
    /// showed: a photo without a face can show a face-like pattern in some turn.
    pub min_turned: f32,
}

impl Confidence {
    /// YuNet: clear upright faces score 0.94–0.96, the same faces turned a quarter or
    /// half turn 0.62–0.91 (its landmarks stay level, so the score is the only cue);
    /// a cat's face upside down scored 0.62.
    pub const YUNET: Confidence = Confidence { sure: 0.9, min_turned: 0.8 };
    /// SCRFD: clear upright faces score 0.71–0.86 and turned ones read as tilted
    /// (roll about ±90°), except upside down (0.63, level landmarks).
    pub const SCRFD: Confidence = Confidence { sure: 0.7, min_turned: 0.65 };
}

/// A quarter turn clockwise applied to a photo to make its face upright.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rotation {
    /// The photo as sent.
    #[default]
    None,
    Cw90,
    Cw180,
    Cw270,
}

impl Rotation {
    /// The turns tried after the photo as sent, in order.
    pub const TURNS: [Rotation; 3] = [Rotation::Cw90, Rotation::Cw180, Rotation::Cw270];

    /// Degrees clockwise: 0, 90, 180 or 270.
    pub fn degrees(self) -> u16 {
        match self {
            Rotation::None => 0,
            Rotation::Cw90 => 90,
            Rotation::Cw180 => 180,
            Rotation::Cw270 => 270,
        }
    }

    /// The rotation of `degrees` clockwise (a multiple of 90 after reduction modulo
    /// 360), `None` for any other angle.
    pub fn from_degrees(degrees: i64) -> Option<Rotation> {
        match degrees.rem_euclid(360) {
            0 => Some(Rotation::None),
            90 => Some(Rotation::Cw90),
            180 => Some(Rotation::Cw180),
            270 => Some(Rotation::Cw270),
            _ => None,
        }
    }

    /// `image` turned clockwise by this rotation; the photo itself, not a copy, when
    /// there is nothing to turn (the common case costs nothing).
    pub fn apply(self, image: &RgbImage) -> Cow<'_, RgbImage> {
        match self {
            Rotation::None => Cow::Borrowed(image),
            Rotation::Cw90 => Cow::Owned(imageops::rotate90(image)),
            Rotation::Cw180 => Cow::Owned(imageops::rotate180(image)),
            Rotation::Cw270 => Cow::Owned(imageops::rotate270(image)),
        }
    }

    /// A point of the turned image in the pixels of the photo as sent, whose size is
    /// `(width, height)`. Coordinates are continuous (a pixel's corners, not its
    /// index), so a box keeps its exact extent.
    pub fn to_original(self, [u, v]: [f32; 2], (width, height): (u32, u32)) -> [f32; 2] {
        let (w, h) = (width as f32, height as f32);
        match self {
            Rotation::None => [u, v],
            // Turning clockwise sends (x, y) to (h − y, x).
            Rotation::Cw90 => [v, h - u],
            Rotation::Cw180 => [w - u, h - v],
            // Turning anticlockwise sends (x, y) to (y, w − x).
            Rotation::Cw270 => [w - v, u],
        }
    }

    /// A face found in the turned image, in the pixels of the photo as sent (of size
    /// `original`). The landmarks keep their meaning (right eye first); the box is the
    /// turned box's extent.
    pub fn detection_to_original(self, face: &Detection, original: (u32, u32)) -> Detection {
        if self == Rotation::None {
            return face.clone();
        }
        let a = self.to_original([face.bbox.x1, face.bbox.y1], original);
        let b = self.to_original([face.bbox.x2, face.bbox.y2], original);
        Detection {
            bbox: BBox { x1: a[0].min(b[0]), y1: a[1].min(b[1]), x2: a[0].max(b[0]), y2: a[1].max(b[1]) },
            landmarks: face.landmarks.map(|p| self.to_original(p, original)),
            score: face.score,
        }
    }
}

/// The tilt of a face's eye line from level, degrees (−180 to 180).
pub fn roll(face: &Detection) -> f32 {
    pose(&face.landmarks).2
}

/// Whether a face is upright: its eye line within [`MAX_UPRIGHT_ROLL`] of level, the
/// right eye (as seen) on the left.
pub fn is_upright(face: &Detection) -> bool {
    roll(face).abs() <= MAX_UPRIGHT_ROLL
}

/// Whether to try the turns of a photo whose face (the one a request is about) is
/// `sent`: when there is none, when it is tilted beyond [`MAX_UPRIGHT_ROLL`], or when
/// the detector is less than [`Confidence::sure`] of it.
pub fn needs_turning(sent: Option<&Detection>, confidence: Confidence) -> bool {
    sent.is_none_or(|face| !is_upright(face) || face.score < confidence.sure)
}

/// Which turn of a photo to use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pick {
    /// The photo as sent (whatever its face, or none).
    AsSent,
    /// This turn shows the face upright.
    Turn(Rotation),
    /// No turn shows the face clearly upright: the photo as sent has a face tilted by
    /// `roll` degrees (or a turn found only a tilted one) and no turn shows an upright
    /// face surely enough, or the detector is about as sure of an upright face in
    /// another turn as in the photo as sent (within [`TURN_MARGIN`]: a face tilted
    /// near 45° or 135°, which no quarter turn makes upright). Enrolment refuses it.
    NotUpright { roll: f32 },
}

/// What one turn of a photo showed: the face a request is about (if any) and how
/// many faces there were.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub face: Option<&'a Detection>,
    pub faces: usize,
}

/// The turn to use, from what the photo as sent and each turn tried showed: the turn
/// whose face is upright and most surely detected, if the detector is at least
/// [`Confidence::min_turned`] sure of it and surer by [`TURN_MARGIN`] than of an upright
/// face as sent (near-ties keep the photo as sent), and the turn shows at least as
/// many faces as the photo as sent (in a group photo the largest face of a wrong turn
/// can be another face, more surely detected; the right turn loses none).
pub fn pick(sent: Seen<'_>, turns: &[(Rotation, Seen<'_>)], confidence: Confidence) -> Pick {
    let sent_upright = sent.face.filter(|f| is_upright(f));
    let bar = sent_upright.map_or(confidence.min_turned, |f| (f.score + TURN_MARGIN).max(confidence.min_turned));
    let best = turns
        .iter()
        .filter(|(_, seen)| seen.faces >= sent.faces)
        .filter_map(|(rotation, seen)| seen.face.filter(|f| is_upright(f)).map(|f| (*rotation, f.score)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((rotation, score)) = best
        && score >= bar
    {
        return Pick::Turn(rotation);
    }
    if let Some(face) = sent_upright {
        if best.is_some_and(|(_, score)| score >= face.score) {
            return Pick::NotUpright { roll: roll(face) };
        }
        return Pick::AsSent;
    }
    let tilted = sent.face.into_iter().chain(turns.iter().filter_map(|(_, seen)| seen.face)).find(|f| !is_upright(f));
    match tilted {
        Some(face) => Pick::NotUpright { roll: roll(face) },
        None => Pick::AsSent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::ARCFACE_TEMPLATE;
    use image::Rgb;

    fn upright_face() -> Detection {
        Detection { bbox: BBox { x1: 30.0, y1: 40.0, x2: 90.0, y2: 110.0 }, landmarks: ARCFACE_TEMPLATE, score: 0.9 }
    }

    /// A face turned by `rotation` inside a photo of `size`: where an upright face
    /// (in a photo of the turned size) came from.
    fn turned_face(rotation: Rotation, upright: &Detection, photo: (u32, u32)) -> Detection {
        rotation.detection_to_original(upright, photo)
    }

    #[test]
    fn degrees_round_trip() {
        for r in [Rotation::None, Rotation::Cw90, Rotation::Cw180, Rotation::Cw270] {
            assert_eq!(Rotation::from_degrees(i64::from(r.degrees())), Some(r));
        }
        assert_eq!(Rotation::from_degrees(-90), Some(Rotation::Cw270));
        assert_eq!(Rotation::from_degrees(45), None);
    }

    /// A pixel's centre maps to the same pixel's centre that `imageops` moved it to.
    #[test]
    fn points_map_back_to_the_pixels_the_turn_moved() {
        let (w, h) = (7u32, 4u32);
        let photo = RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, 0]));
        for r in [Rotation::None, Rotation::Cw90, Rotation::Cw180, Rotation::Cw270] {
            let turned = r.apply(&photo);
            for (u, v, p) in turned.enumerate_pixels() {
                let [x, y] = r.to_original([u as f32 + 0.5, v as f32 + 0.5], (w, h));
                assert_eq!([x - 0.5, y - 0.5], [f32::from(p.0[0]), f32::from(p.0[1])], "{r:?} at ({u}, {v})");
            }
        }
    }

    #[test]
    fn only_the_right_quarter_turn_is_upright() {
        let face = upright_face();
        assert!(is_upright(&face));
        assert!(roll(&face).abs() < 1.0);
        // A face that became upright after a turn was sideways or upside down in the photo.
        for r in Rotation::TURNS {
            let sideways = turned_face(r, &face, (160, 200));
            assert!(!is_upright(&sideways), "{r:?}: roll {}", roll(&sideways));
            let expected = match r {
                Rotation::Cw90 => 90.0,
                Rotation::Cw180 => 180.0,
                _ => -90.0,
            };
            assert!((roll(&sideways).abs() - f32::abs(expected)).abs() < 1.0, "{r:?}: roll {}", roll(&sideways));
        }
    }

    fn scored(mut face: Detection, score: f32) -> Detection {
        face.score = score;
        face
    }

    #[test]
    fn a_confident_upright_face_is_used_as_sent() {
        assert!(!needs_turning(Some(&scored(upright_face(), 0.95)), Y));
        assert!(needs_turning(Some(&scored(upright_face(), 0.85)), Y), "a less sure face is checked");
        assert!(needs_turning(None, Y));
        let tilted = turned_face(Rotation::Cw90, &scored(upright_face(), 0.99), (160, 200));
        assert!(needs_turning(Some(&tilted), Y), "a sure but tilted face is checked");
    }

    fn one(face: &Detection) -> Seen<'_> {
        Seen { face: Some(face), faces: 1 }
    }

    const NONE: Seen<'static> = Seen { face: None, faces: 0 };
    const Y: Confidence = Confidence::YUNET;

    #[test]
    fn the_surest_upright_turn_wins_by_a_margin() {
        let sent = scored(upright_face(), 0.82);
        let (a, b) = (scored(upright_face(), 0.96), scored(upright_face(), 0.91));
        let turns = [(Rotation::Cw90, one(&a)), (Rotation::Cw180, NONE), (Rotation::Cw270, one(&b))];
        assert_eq!(pick(one(&sent), &turns, Y), Pick::Turn(Rotation::Cw90));
        // A turn less sure than the photo as sent keeps it; a near-tie in the turn's
        // favour leaves it unclear which way is up.
        let less = scored(upright_face(), 0.80);
        assert_eq!(pick(one(&sent), &[(Rotation::Cw180, one(&less))], Y), Pick::AsSent);
        let close = scored(upright_face(), 0.85);
        assert!(matches!(pick(one(&sent), &[(Rotation::Cw180, one(&close))], Y), Pick::NotUpright { .. }));
        // A turn must be sure of its face even when the photo as sent shows none.
        let faint = scored(upright_face(), 0.62);
        assert_eq!(pick(NONE, &[(Rotation::Cw180, one(&faint))], Y), Pick::AsSent);
        assert_eq!(pick(NONE, &[(Rotation::Cw180, one(&b))], Y), Pick::Turn(Rotation::Cw180));
        assert_eq!(pick(NONE, &[(Rotation::Cw90, NONE)], Y), Pick::AsSent);
    }

    #[test]
    fn a_turn_that_loses_faces_is_not_the_upright_one() {
        let sent = scored(upright_face(), 0.66);
        let sure = scored(upright_face(), 0.83);
        let group = Seen { face: Some(&sent), faces: 6 };
        assert_eq!(pick(group, &[(Rotation::Cw90, Seen { face: Some(&sure), faces: 4 })], Y), Pick::AsSent);
        assert_eq!(
            pick(group, &[(Rotation::Cw90, Seen { face: Some(&sure), faces: 6 })], Y),
            Pick::Turn(Rotation::Cw90)
        );
    }

    #[test]
    fn a_face_no_turn_makes_upright_is_reported_with_its_tilt() {
        let tilted = turned_face(Rotation::Cw90, &scored(upright_face(), 0.9), (160, 200));
        let Pick::NotUpright { roll } = pick(one(&tilted), &[(Rotation::Cw90, NONE)], Y) else {
            panic!("a tilted face with no upright turn")
        };
        assert!((roll.abs() - 90.0).abs() < 1.0, "{roll}");
        // An upright turn the detector is sure of wins over the tilted face.
        let upright = scored(upright_face(), 0.9);
        assert_eq!(pick(one(&tilted), &[(Rotation::Cw270, one(&upright))], Y), Pick::Turn(Rotation::Cw270));
        // Only tilted faces in the turns either.
        assert!(matches!(pick(NONE, &[(Rotation::Cw180, one(&tilted))], Y), Pick::NotUpright { .. }));
    }

    #[test]
    fn boxes_keep_their_size_when_mapped_back() {
        let face = upright_face();
        for r in Rotation::TURNS {
            let back = r.detection_to_original(&face, (160, 200));
            assert_eq!(back.bbox.area(), face.bbox.area(), "{r:?}");
            assert_eq!(back.score, face.score);
        }
        assert_eq!(Rotation::None.detection_to_original(&face, (160, 200)), face);
    }
}
