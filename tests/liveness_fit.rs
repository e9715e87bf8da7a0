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

/// The table of ways to judge close-ups (docs/liveness-candidates.md), with the shipped
/// way's threshold curve and rates per capture kind, regenerates bit for bit from the
/// command it records, and marks the shipped configuration.
#[test]
fn liveness_candidates_table_regenerates_bit_for_bit() {
    const TABLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/liveness-candidates.md");
    let shipped = std::fs::read(TABLE).expect("candidates table");
    let text = String::from_utf8(shipped.clone()).expect("UTF-8");
    let command =
        "facesearch eval liveness-candidates --manifest ../shared/eval/manifest.csv --out docs/liveness-candidates.md";
    assert!(text.contains(&format!("`{command}`")), "the file records its command");
    let dir = tempfile::tempdir().expect("temp dir");
    let out: PathBuf = dir.path().join("candidates.md");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facesearch"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["eval", "liveness-candidates", "--manifest", "../shared/eval/manifest.csv", "--out"])
        .arg(&out);
    for var in ["FACESEARCH_PACK", "FACESEARCH_INTRA_THREADS", "FACESEARCH_LOG_JSON"] {
        cmd.env_remove(var);
    }
    let output = cmd.output().expect("run facesearch");
    assert!(output.status.success(), "liveness-candidates failed: {}", String::from_utf8_lossy(&output.stderr));
    let regenerated = std::fs::read(&out).expect("candidates output");
    assert!(
        regenerated == shipped,
        "the table differs from docs/liveness-candidates.md:\n{}",
        String::from_utf8_lossy(&regenerated)
    );
    assert_eq!(text.matches("**(shipped)**").count(), 1, "exactly one candidate is the shipped one");
    for kind in ["live: phone selfie", "live: webcam selfie", "attack: print", "attack: replay", "attack: mask"] {
        assert!(text.contains(&format!("| {kind} |")), "rates for {kind}");
    }
}

fn liveness_fit(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facesearch"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["eval", "liveness-fit", "--manifest", "../shared/eval/manifest.csv"])
        .args(args);
    for var in ["FACESEARCH_PACK", "FACESEARCH_INTRA_THREADS", "FACESEARCH_LOG_JSON"] {
        cmd.env_remove(var);
    }
    cmd.output().expect("run facesearch")
}

/// A candidate feature computed outside facesearch is joined to the judged faces by
/// manifest path and measured out of fold; a fusion using it is never written as the
/// shipped file, and a malformed candidate file is refused with a message saying why.
#[test]
fn extra_features_are_measured_out_of_fold_and_never_shipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let features = dir.path().join("features.csv");
    let output = liveness_fit(&["--features-csv", features.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = std::fs::read_to_string(&features).expect("features csv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    for column in ["path", "kind", "face_x1", "face_y2", "model_logit_4_0_flipavg"] {
        assert!(header.contains(&column), "{column} in {header:?}");
    }
    // An oracle column (1 for live, 0 for an attack) separates perfectly: the out-of-fold
    // EER is 0, which it can only be if every row got its own value.
    let kind = header.iter().position(|c| *c == "kind").unwrap();
    let mut oracle = String::from("path,oracle\n");
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        oracle += &format!("{},{}\n", fields[0], u8::from(fields[kind] == "live"));
    }
    let extra = dir.path().join("extra.csv");
    std::fs::write(&extra, &oracle).unwrap();
    let output = liveness_fit(&["--json", "--extra-features", extra.to_str().unwrap(), "--features", "oracle"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["out_of_fold"]["eer"], 0.0, "{}", report["out_of_fold"]);
    assert!(report["fusion"]["command"].as_str().unwrap().contains("--extra-features"));

    let refused = |extra_text: &str, features: &str, out: bool, message: &str| {
        std::fs::write(&extra, extra_text).unwrap();
        let mut args = vec!["--extra-features", extra.to_str().unwrap(), "--features", features];
        let target = dir.path().join("fusion.json");
        if out {
            args.extend(["--out", target.to_str().unwrap()]);
        }
        let output = liveness_fit(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(message), "expected {message:?}: {stderr}");
        assert!(!target.exists(), "nothing written");
    };
    refused(&oracle, "oracle", true, "cannot be written with --out");
    refused(&oracle.replacen("path,", "file,", 1), "oracle", false, "first column must be `path`");
    refused("path,oracle\nx.jpg,NaN\n", "oracle", false, "is not a finite number");
    refused("path,saturation\nx.jpg,1\n", "saturation", false, "name of a feature facesearch computes");
    refused("", "oracle", false, "is empty");
    refused("path,oracle\nx.jpg,1,2\n", "oracle", false, "3 fields, the header has 2");
    refused("path,oracle\nx.jpg,1\nx.jpg,0\n", "oracle", false, "x.jpg is listed twice");
    let first_row_only: String = oracle.lines().take(2).map(|l| format!("{l}\n")).collect();
    refused(&first_row_only, "oracle", false, "--extra-features has no row for");
}
