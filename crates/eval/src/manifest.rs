//! Parsing of the evaluation photo manifest (`shared/eval/manifest.csv`).
//!
//! The evaluation photos come from many public sources; the manifest is the single
//! place that says who each photo shows and what it is (`face`, `multiface`,
//! `noface`, `live`, `spoof`, `other`). Every evaluation (1:N search, liveness,
//! detection) selects its photos from it, so it is parsed here once, driven by the
//! header so that added or reordered columns do not break it.
//!
//! The file is RFC 4180 CSV: fields may be quoted, quoted fields may contain
//! commas, doubled quotes (`""`) and line breaks, and lines may end in CRLF. A small
//! hand-written splitter handles that; no CSV dependency is needed.

use serde::Serialize;

use crate::ParseError;

/// One manifest row, reduced to the columns evaluations use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestRow {
    /// Image path relative to the folder holding the manifest.
    pub path: String,
    /// Person shown; LFW form `First_Last` for public figures, `source:id` for
    /// anonymous groups, empty where unknown or not a face.
    pub identity: String,
    /// Which public collection the photo came from.
    pub source: String,
    /// `face`, `multiface`, `noface`, `live`, `spoof` or `other`.
    pub kind: String,
    /// Free-text note; for liveness sets it starts with the attack type.
    pub note: String,
}

/// Attack types the manifest's notes name for presentation attacks.
const ATTACK_TYPES: [&str; 4] = ["print", "replay", "mask", "other"];

/// Words that identify an attack type when the note does not start with its name,
/// tried in this order (a "photo of a screen" is a replay, not a print).
const ATTACK_KEYWORDS: [(&str, &[&str]); 3] = [
    ("replay", &["replay", "screen", "monitor", "display", "tablet"]),
    ("mask", &["mask", "silicone", "latex"]),
    ("print", &["print", "paper", "cut-out", "cutout"]),
];

/// The attack type (PAI species) a manifest note names: the text before the first
/// `;` when it is one of `print`, `replay`, `mask`, `other` (any case); otherwise the
/// first type whose keywords the note contains (`screen`, `monitor` → replay;
/// `silicone` → mask; `paper`, `printed` → print); otherwise `unspecified`.
pub fn attack_type_of_note(note: &str) -> &'static str {
    let head = note.split(';').next().unwrap_or("").trim();
    if let Some(t) = ATTACK_TYPES.iter().copied().find(|t| head.eq_ignore_ascii_case(t)) {
        return t;
    }
    let lower = note.to_ascii_lowercase();
    ATTACK_KEYWORDS.iter().find(|(_, words)| words.iter().any(|w| lower.contains(w))).map_or("unspecified", |(t, _)| t)
}

impl ManifestRow {
    /// For a `spoof` row, the attack type its note names ([`attack_type_of_note`]).
    /// `None` for rows that are not presentation attacks.
    pub fn attack_type(&self) -> Option<&'static str> {
        if self.kind != "spoof" {
            return None;
        }
        Some(attack_type_of_note(&self.note))
    }
}

/// One CSV record and the 1-based line it starts on.
struct Record {
    line: usize,
    fields: Vec<String>,
}

/// Parses CSV text (RFC 4180: quoted fields, doubled quotes, line breaks inside quotes,
/// CRLF or LF, a leading BOM) into records of fields; errors name the line.
pub fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, ParseError> {
    Ok(split_records(text)?.into_iter().map(|r| r.fields).collect())
}

/// Splits CSV text into records (RFC 4180 with CRLF or LF line ends). Blank lines
/// are skipped. A quote inside an unquoted field, text after a closing quote, or an
/// unterminated quoted field is an error naming the line.
fn split_records(text: &str) -> Result<Vec<Record>, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1usize;
    loop {
        // Start of a record.
        if chars.peek().is_none() {
            break;
        }
        let record_line = line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut end_of_record = false;
        let mut any_quoted = false;
        while !end_of_record {
            // Start of a field.
            if chars.peek() == Some(&'"') {
                any_quoted = true;
                chars.next();
                let quote_line = line;
                loop {
                    match chars.next() {
                        None => {
                            return Err(ParseError::at(quote_line, "unterminated quoted field"));
                        }
                        Some('"') => {
                            if chars.peek() == Some(&'"') {
                                chars.next();
                                field.push('"');
                            } else {
                                break;
                            }
                        }
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            field.push(c);
                        }
                    }
                }
                // After a closing quote: separator, line end or end of input.
                match chars.next() {
                    None => end_of_record = true,
                    Some(',') => {}
                    Some('\n') => {
                        line += 1;
                        end_of_record = true;
                    }
                    Some('\r') => {
                        if chars.peek() == Some(&'\n') {
                            chars.next();
                        }
                        line += 1;
                        end_of_record = true;
                    }
                    Some(c) => {
                        return Err(ParseError::at(line, format!("unexpected `{c}` after a closing quote")));
                    }
                }
            } else {
                loop {
                    match chars.next() {
                        None => {
                            end_of_record = true;
                            break;
                        }
                        Some(',') => break,
                        Some('\n') => {
                            line += 1;
                            end_of_record = true;
                            break;
                        }
                        Some('\r') => {
                            if chars.peek() == Some(&'\n') {
                                chars.next();
                            }
                            line += 1;
                            end_of_record = true;
                            break;
                        }
                        Some('"') => {
                            return Err(ParseError::at(
                                line,
                                "quote inside an unquoted field (quote the whole field and double the quote)",
                            ));
                        }
                        Some(c) => field.push(c),
                    }
                }
            }
            fields.push(std::mem::take(&mut field));
        }
        // A blank line is no record; a line holding `""` is one empty field.
        let blank = fields.len() == 1 && fields[0].is_empty() && !any_quoted;
        if !blank {
            records.push(Record { line: record_line, fields });
        }
    }
    Ok(records)
}

/// Parses the manifest. Columns are found by header name: `path`, `identity` and
/// `kind` are required, `source` and `note` read as empty when absent; other columns
/// are ignored. Every row must have as many fields as the header and a non-empty
/// `path`. Errors name the 1-based line the offending record starts on.
pub fn parse_manifest(text: &str) -> Result<Vec<ManifestRow>, ParseError> {
    let records = split_records(text)?;
    let Some((header, rows)) = records.split_first() else {
        return Err(ParseError::Empty);
    };
    let find = |name: &str| header.fields.iter().position(|h| h.trim() == name);
    let require = |name: &str| find(name).ok_or_else(|| ParseError::MissingColumn { column: name.to_string() });
    let path_col = require("path")?;
    let identity_col = require("identity")?;
    let kind_col = require("kind")?;
    let source_col = find("source");
    let note_col = find("note");
    let width = header.fields.len();

    let mut out = Vec::with_capacity(rows.len());
    for record in rows {
        if record.fields.len() != width {
            return Err(ParseError::at(
                record.line,
                format!("expected {width} fields as in the header, found {}", record.fields.len()),
            ));
        }
        let get = |col: Option<usize>| col.and_then(|c| record.fields.get(c)).cloned().unwrap_or_default();
        let row = ManifestRow {
            path: get(Some(path_col)),
            identity: get(Some(identity_col)),
            source: get(source_col),
            kind: get(Some(kind_col)),
            note: get(note_col),
        };
        if row.path.is_empty() {
            return Err(ParseError::at(record.line, "empty `path`"));
        }
        out.push(row);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_line_breaks() {
        let text = "a,b,c\r\n\"x, y\",\"say \"\"hi\"\"\",\"two\nlines\"\n\n1,,3";
        let r = parse_csv(text).expect("valid CSV");
        assert_eq!(r, vec![vec!["a", "b", "c"], vec!["x, y", "say \"hi\"", "two\nlines"], vec!["1", "", "3"]]);
        assert!(parse_csv("a,\"b").is_err());
        assert!(parse_csv("a,b\"c").is_err());
        assert_eq!(parse_csv("\"\"").expect("one empty field"), vec![vec![""]]);
    }

    #[test]
    fn handles_quotes_commas_doubled_quotes_and_crlf() {
        let text = "path,identity,source,kind,note,width\r\n\
                    a.jpg,A_B,src,face,\"x, y [shrunk]\",10\r\n\
                    b.png,Mayim_Bialik,src,face,\"actor of \"\"amy\"\"\",\r\n\
                    \r\n\
                    c.jpg,,src,spoof,\"replay; two\nlines\",3";
        let rows = parse_manifest(text).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].note, "x, y [shrunk]");
        assert_eq!(rows[0].identity, "A_B");
        assert_eq!(rows[1].note, "actor of \"amy\"");
        assert_eq!(rows[2].note, "replay; two\nlines");
        assert_eq!(rows[2].identity, "");
        assert_eq!(rows[2].attack_type(), Some("replay"));
        assert_eq!(rows[0].attack_type(), None);
    }

    #[test]
    fn attack_type_from_the_note() {
        assert_eq!(attack_type_of_note("replay; webcam frame; face on phone/monitor screen"), "replay");
        assert_eq!(attack_type_of_note("Print ; laminated"), "print");
        assert_eq!(attack_type_of_note("mask; hyper-realistic silicone mask"), "mask");
        assert_eq!(attack_type_of_note("other; GAN/synthetic face, NOT a physical attack"), "other");
        // No type name in front: keywords decide, a screen before paper.
        assert_eq!(attack_type_of_note("photo of a screen showing a printed portrait"), "replay");
        assert_eq!(attack_type_of_note("a printed photo held up"), "print");
        assert_eq!(attack_type_of_note("3D silicone face"), "mask");
        assert_eq!(attack_type_of_note("EXIF orientation=6; F=fake, T=true"), "unspecified");
        assert_eq!(attack_type_of_note(""), "unspecified");
    }

    #[test]
    fn header_driven_columns() {
        let text = "kind,path,identity\nface,p.jpg,X\n";
        let rows = parse_manifest(text).unwrap();
        assert_eq!(rows[0].path, "p.jpg");
        assert_eq!(rows[0].kind, "face");
        assert_eq!(rows[0].source, "");
        assert_eq!(parse_manifest("path,kind\n").unwrap_err(), ParseError::MissingColumn { column: "identity".into() });
        assert_eq!(parse_manifest("").unwrap_err(), ParseError::Empty);
    }

    #[test]
    fn errors_name_the_line() {
        let bad_count = "path,identity,kind\na,b,c\na,b\n";
        assert_eq!(parse_manifest(bad_count).unwrap_err().line(), Some(3));
        let stray_quote = "path,identity,kind\na,b\"c,d\n";
        assert_eq!(parse_manifest(stray_quote).unwrap_err().line(), Some(2));
        let after_quote = "path,identity,kind\n\"a\"x,b,c\n";
        assert_eq!(parse_manifest(after_quote).unwrap_err().line(), Some(2));
        let unterminated = "path,identity,kind\na,b,c\na,b,\"c\n\n";
        let err = parse_manifest(unterminated).unwrap_err();
        assert_eq!(err.line(), Some(3));
        assert!(err.to_string().contains("unterminated"), "{err}");
        // A record spanning lines reports where it starts; the next one is counted right.
        let multi = "path,identity,kind\na,\"b\nb\",c\nx,y\n";
        assert_eq!(parse_manifest(multi).unwrap_err().line(), Some(4));
        let empty_path = "path,identity,kind\n,b,c\n";
        assert_eq!(parse_manifest(empty_path).unwrap_err().line(), Some(2));
    }

    #[test]
    fn parses_real_manifest() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/eval/manifest.csv");
        let Ok(text) = std::fs::read_to_string(path) else {
            eprintln!("skipping: {path} not present");
            return;
        };
        let rows = parse_manifest(&text).unwrap();
        assert!(rows.len() > 3000, "{} rows", rows.len());
        for kind in ["face", "live", "spoof"] {
            assert!(rows.iter().any(|r| r.kind == kind), "no {kind} rows");
        }
        assert!(rows.iter().any(|r| r.note.contains('"')));
        assert!(rows.iter().filter(|r| r.kind == "spoof").any(|r| r.attack_type() == Some("replay")));
    }
}
