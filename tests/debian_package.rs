//! The Debian package (packaging/deb/build.sh, with the binary under test): its files and
//! modes, a unit file that `systemd-analyze verify` accepts, a binary that starts from
//! the unpacked package with the packaged config and answers `/readyz`, and dpkg's own
//! install → upgrade → remove → purge cycle in a private root: upgrades keep data and
//! config, removal keeps data, purging deletes it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn run(cmd: &mut Command) -> Output {
    let output = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn build_package(out: &Path) -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/deb/build.sh");
    let output = run(Command::new("bash")
        .arg(script)
        .args(["--fast", "--binary", env!("CARGO_BIN_EXE_facesearch"), "--out"])
        .arg(out));
    let path = String::from_utf8_lossy(&output.stdout).lines().last().expect("the package's path").to_string();
    PathBuf::from(path)
}

/// `dpkg-deb --contents`: each path with its mode string (`-rw-r-----`).
fn contents(deb: &Path) -> Vec<(String, String)> {
    let output = run(Command::new("dpkg-deb").arg("--contents").arg(deb));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.last().unwrap().trim_start_matches('.').to_string(), fields[0].to_string())
        })
        .collect()
}

#[test]
fn the_debian_package_installs_a_hardened_service_that_starts() {
    let work = tempfile::tempdir().unwrap();
    let deb = build_package(work.path());

    // Files and modes.
    let files = contents(&deb);
    let mode = |path: &str| {
        files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("{path} not in {files:?}"))
    };
    assert_eq!(mode("/usr/bin/facesearch"), "-rwxr-xr-x");
    assert_eq!(mode("/lib/systemd/system/facesearch.service"), "-rw-r--r--");
    assert_eq!(mode("/etc/facesearch/"), "drwxr-x---");
    assert_eq!(mode("/etc/facesearch/config.toml"), "-rw-r-----");
    assert_eq!(mode("/usr/share/doc/facesearch/copyright"), "-rw-r--r--");
    assert_eq!(mode("/usr/share/doc/facesearch/MODELS.md"), "-rw-r--r--");
    assert!(!files.iter().any(|(p, _)| p.starts_with("/var/")), "data is made by postinst, never shipped: {files:?}");
    let control = run(Command::new("dpkg-deb").arg("--info").arg(&deb).arg("conffiles"));
    assert_eq!(String::from_utf8_lossy(&control.stdout).trim(), "/etc/facesearch/config.toml");

    // The unit, with its sandbox, as systemd reads it.
    let root = work.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/facesearch.service")).unwrap();
    for setting in [
        "User=facesearch",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "ReadWritePaths=/var/lib/facesearch",
        "CapabilityBoundingSet=\n",
        "StateDirectoryMode=0700",
        "LoadCredential=admin-password:/etc/facesearch/admin-password",
        "ExecStart=/usr/bin/facesearch serve --config /etc/facesearch/config.toml\n",
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting:?}");
    }
    assert!(
        !unit.contains("--admin-password") && !unit.contains("FACESEARCH_ADMIN_PASSWORD="),
        "no password on a command line"
    );
    // systemd-analyze checks that ExecStart exists: point it at the unpacked binary.
    let checked = work.path().join("facesearch.service");
    let binary = root.join("usr/bin/facesearch");
    std::fs::write(&checked, unit.replace("/usr/bin/facesearch", binary.to_str().unwrap())).unwrap();
    let verify = run(Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&checked));
    assert!(verify.stderr.is_empty(), "systemd-analyze verify: {}", String::from_utf8_lossy(&verify.stderr));

    // The unpacked binary with the packaged config (data and models redirected by the
    // environment, which overrides the file) and the password from a file.
    let data = work.path().join("data");
    let password_file = work.path().join("admin-password");
    std::fs::write(&password_file, "package-Admin-Secret-7\n").unwrap();
    let models = facesearch_models::ModelCache::resolve(None).expect("models cache").dir().to_path_buf();
    let mut server = Command::new(&binary)
        .args(["serve", "--exit-on-stdin-close", "--config"])
        .arg(root.join("etc/facesearch/config.toml"))
        .env("FACESEARCH_DATA_DIR", &data)
        .env("FACESEARCH_MODELS_DIR", &models)
        .env("FACESEARCH_BIND", "127.0.0.1:0")
        .env("FACESEARCH_ADMIN_PASSWORD_FILE", &password_file)
        .env_remove("FACESEARCH_ADMIN_PASSWORD")
        .env_remove("FACESEARCH_CONFIG")
        .env_remove("FACESEARCH_DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = server.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut base = None;
    loop {
        let line = rx.recv_timeout(Duration::from_secs(180)).expect("the packaged server becomes ready");
        if let Some(rest) = line.strip_prefix("facesearch listening on ") {
            base = rest.split_whitespace().next().map(str::to_string);
        }
        if line.starts_with("facesearch ready") {
            break;
        }
    }
    let base = base.expect("listening line");
    let ready = reqwest::blocking::get(format!("{base}/readyz")).unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let me = reqwest::blocking::Client::new()
        .get(format!("{base}/users/me"))
        .basic_auth("admin", Some("package-Admin-Secret-7"))
        .send()
        .unwrap();
    assert_eq!(me.status().as_u16(), 200, "the first admin has the password from the file");
    drop(server.stdin.take());
    let _ = server.wait();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    }

    // dpkg's own install, upgrade, remove and purge, in a private root.
    let dpkg_root = work.path().join("dpkg-root");
    for dir in ["var/lib/dpkg/updates", "var/lib/dpkg/info", "etc"] {
        std::fs::create_dir_all(dpkg_root.join(dir)).unwrap();
    }
    std::fs::write(dpkg_root.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(dpkg_root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(dpkg_root.join("etc/group"), "root:x:0:\n").unwrap();
    for f in ["etc/shadow", "etc/gshadow"] {
        std::fs::write(dpkg_root.join(f), "").unwrap();
    }
    let dpkg = |args: &[&str]| {
        run(Command::new("dpkg")
            .arg(format!("--root={}", dpkg_root.display()))
            .args(["--force-script-chrootless", "--force-depends", "--log=/dev/null"])
            .args(args))
    };
    let deb_arg = deb.to_str().unwrap();
    dpkg(&["-i", deb_arg]);
    let state = dpkg_root.join("var/lib/facesearch");
    let config = dpkg_root.join("etc/facesearch/config.toml");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
        let secret = dpkg_root.join("etc/facesearch/admin-password");
        assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(std::fs::read_to_string(&secret).unwrap().trim().len() >= 24, "a generated password");
    }
    let passwd = std::fs::read_to_string(dpkg_root.join("etc/passwd")).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("facesearch:") && l.ends_with(":/usr/sbin/nologin")), "{passwd}");
    std::fs::write(state.join("facesearch.db"), "the operator's data").unwrap();
    let edited = std::fs::read_to_string(&config).unwrap() + "max_in_flight = 32\n";
    std::fs::write(&config, &edited).unwrap();

    dpkg(&["-i", deb_arg]); // an upgrade (same version: a reinstall goes through the same steps)
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited, "the upgrade kept the edited config");
    assert_eq!(std::fs::read_to_string(state.join("facesearch.db")).unwrap(), "the operator's data");

    dpkg(&["-r", "facesearch"]);
    assert!(!dpkg_root.join("usr/bin/facesearch").exists());
    assert!(state.join("facesearch.db").exists(), "removal keeps the data");
    assert!(config.exists(), "removal keeps the config");

    dpkg(&["-P", "facesearch"]);
    assert!(!state.exists(), "purging deletes the data");
    assert!(!config.exists(), "purging deletes the config");
}
