//! The liveness fusion shipped in `crates/face/liveness/fusion.json` regenerates bit
//! for bit from the command recorded in it, run on `../shared/eval` with the real models.

use std::path::PathBuf;
use std::process::Command;

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/face/liveness/fusion.json");

#[test]
fn shipped_fusion_regenerates_bit_for_bit() {
    let shipped = std::fs::read(SHIPPED).expect("shipped fusion");
    let text = String::from_utf8(shipped.clone()).expect("UTF-8");
    let command = "facesearch eval liveness-fit --manifest ../shared/eval/manifest.csv \
                   --out crates/face/liveness/fusion.json";
    assert!(text.contains(&format!("\"command\": \"{command}\"")), "the file records its command");

    let dir = tempfile::tempdir().expect("temp dir");
    let out: PathBuf = dir.path().join("fusion.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facesearch"));
    // The recorded command, writing elsewhere; settings that would change the fit are cleared.
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["eval", "liveness-fit", "--manifest", "../shared/eval/manifest.csv", "--out"])
        .arg(&out);
    for var in ["FACESEARCH_PACK", "FACESEARCH_INTRA_THREADS", "FACESEARCH_LOG_JSON"] {
        cmd.env_remove(var);
    }
    let output = cmd.output().expect("run facesearch");
    assert!(output.status.success(), "liveness-fit failed: {}", String::from_utf8_lossy(&output.stderr));
    let regenerated = std::fs::read(&out).expect("fit output");
    assert!(
        regenerated == shipped,
        "the fit differs from the shipped file:\n{}",
        String::from_utf8_lossy(&regenerated)
    );
    // The report names the cross-validation it ran.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("out-of-fold"), "{stderr}");
}
