//! Model-free biometric evaluation for facesearch.
//!
//! The service's quality claims (verification accuracy, 1:N search error rates,
//! liveness error rates) have to be measured the same way every time and the same
//! way the literature measures them, otherwise numbers from different runs or
//! different models cannot be compared. This crate holds that measurement logic on
//! its own, free of any model, image decoding or I/O, so it can be unit-tested with
//! hand-computed expectations: callers produce scores with whatever model they run,
//! and hand them here.
//!
//! * [`pairs`] and [`manifest`] parse the evaluation inputs kept in `shared/eval`.
//! * [`verification`] computes LFW-protocol 1:1 accuracy and TAR@FAR.
//! * [`identification`] computes open-set 1:N rates (NIST FRVT FPIR/FNIR) and builds
//!   the enrolled / left-out split.
//! * [`liveness`] computes presentation-attack detection rates (ISO/IEC 30107-3
//!   APCER/BPCER) with bootstrap confidence intervals.
//! * [`logistic`] fits a small deterministic logistic regression (liveness score
//!   fusion) with leave-one-group-out cross-validation.
//! * [`table`] prints results as aligned plain text.
//!
//! Every report struct derives `serde::Serialize` so the CLI can emit `--json`.
//! Rates that are undefined because their denominator is zero are `NaN`
//! (serialised by `serde_json` as `null`).

pub mod identification;
pub mod liveness;
pub mod logistic;
pub mod manifest;
pub mod pairs;
pub mod table;
pub mod verification;

mod error;
mod rates;

pub use error::ParseError;
pub use identification::{
    IdentificationReport, OpenSetProtocol, OperatingPoint, ProbeResult, build_open_set_protocol, identification_report,
};
pub use liveness::{AttackTypeResult, CurvePoint, LivenessSample, PadReport, pad_report};
pub use logistic::{Hinge, LogisticModel, fit_logistic, leave_one_group_out};
pub use manifest::{ManifestRow, attack_type_of_note, parse_csv, parse_manifest};
pub use pairs::{ImageRef, Pair, parse_pairs};
pub use verification::{VerificationReport, tar_at_far, ten_fold_accuracy, verification_report};
