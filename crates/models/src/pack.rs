//! The model pack: which detector and embedder belong together. It lives here, beside
//! the catalog of files it names, so that the store can hold a pack as a typed value
//! without depending on the ONNX pipeline (facesearch-face re-exports it).

use serde::Serialize;

use crate::{EditedModel, ModelFile, catalog};

/// A model pack: a detector and an embedder that belong together. Vectors of one pack
/// are meaningless to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pack {
    /// YuNet + SFace (MIT + Apache-2.0; usable commercially). The default.
    Open,
    /// SCRFD-500M + ArcFace w600k_mbf (InsightFace: non-commercial research only).
    Insightface,
}

impl Pack {
    /// Every pack this build can run.
    pub const ALL: [Pack; 2] = [Pack::Open, Pack::Insightface];

    /// The pack's name in settings, the API and the database (`open`, `insightface`).
    pub fn name(self) -> &'static str {
        match self {
            Pack::Open => "open",
            Pack::Insightface => "insightface",
        }
    }

    /// The length of the pack's embeddings (facesearch-face checks it against its embedders).
    pub fn dimension(self) -> usize {
        match self {
            Pack::Open => 128,
            Pack::Insightface => 512,
        }
    }

    /// The detector's model file.
    pub fn detector_file(self) -> ModelFile {
        match self {
            Pack::Open => catalog::YUNET,
            Pack::Insightface => catalog::SCRFD,
        }
    }

    /// The embedder's model file.
    pub fn embedder_file(self) -> ModelFile {
        match self {
            Pack::Open => catalog::SFACE,
            Pack::Insightface => catalog::W600K_MBF,
        }
    }

    /// The embedder as it is loaded: its file, edited ([`crate::onnx_edit::prelu_elementwise`]).
    pub fn embedder_model(self) -> EditedModel {
        match self {
            Pack::Open => catalog::SFACE_ELEMENTWISE,
            Pack::Insightface => catalog::W600K_MBF_ELEMENTWISE,
        }
    }

    /// Every file this pack needs, the liveness model and the runtime included.
    pub fn files(self) -> Vec<ModelFile> {
        let mut files = vec![self.detector_file(), self.embedder_file(), catalog::LIVENESS];
        files.extend(catalog::onnxruntime());
        files
    }

    /// Whether the pack's licence forbids commercial use.
    pub fn non_commercial(self) -> bool {
        self == Pack::Insightface
    }
}

impl std::str::FromStr for Pack {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "open" => Ok(Pack::Open),
            "insightface" => Ok(Pack::Insightface),
            other => Err(format!("unknown model pack {other:?} (expected open or insightface)")),
        }
    }
}

impl std::fmt::Display for Pack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_names_round_trip() {
        for pack in Pack::ALL {
            assert_eq!(pack.name().parse::<Pack>().unwrap(), pack);
        }
        assert!("nope".parse::<Pack>().is_err());
    }
}
