//! Parsing of LFW verification pair lists.
//!
//! Face verification accuracy is conventionally reported on LFW's pair lists
//! (`pairsDevTest.txt`, `pairs.txt`); reading them exactly as LFW defines them lets
//! our numbers be compared with published ones. The format is one pair per line,
//! whitespace (tab) separated:
//!
//! * `name i j`: two photos of the same person, image numbers `i` and `j`;
//! * `name1 i name2 j`: photos of two different people;
//!
//! optionally preceded by a count line (`500` in View 1, `10 300` = folds and pairs
//! per fold in View 2). Image `name i` is the file `name/name_000i.jpg`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::ParseError;

/// One photo in the LFW layout: a person's name and the 1-based image number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ImageRef {
    /// Person name in LFW form, e.g. `Abdullah_Gul`.
    pub name: String,
    /// 1-based image number within that person's folder.
    pub number: u32,
}

impl ImageRef {
    /// Path of the image inside an LFW images directory:
    /// `images_dir/NAME/NAME_000N.jpg` (number zero-padded to 4 digits).
    pub fn lfw_path(&self, images_dir: &Path) -> PathBuf {
        images_dir.join(&self.name).join(format!("{}_{:04}.jpg", self.name, self.number))
    }
}

/// One verification trial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pair {
    /// First photo.
    pub a: ImageRef,
    /// Second photo.
    pub b: ImageRef,
    /// Whether both photos show the same person (genuine pair).
    pub same: bool,
}

fn parse_number(token: &str, line: usize) -> Result<u32, ParseError> {
    match token.parse::<u32>() {
        Ok(0) => Err(ParseError::at(line, "image numbers start at 1, found 0")),
        Ok(n) => Ok(n),
        Err(_) => Err(ParseError::at(line, format!("expected an image number, found `{token}`"))),
    }
}

fn is_count_line(tokens: &[&str]) -> bool {
    matches!(tokens.len(), 1 | 2) && tokens.iter().all(|t| t.parse::<u64>().is_ok())
}

/// Parses an LFW pair list.
///
/// Blank lines are skipped; a first non-blank line made of one or two integers is
/// taken as LFW's count header and ignored (the pairs present are what counts; the
/// files in `shared/eval` are subsets without headers). A four-field line whose two
/// names are equal is a same-person pair. Pairs are returned in file order, which
/// LFW uses to encode folds (see [`crate::verification::assign_folds`]).
///
/// Errors name the 1-based line number.
pub fn parse_pairs(text: &str) -> Result<Vec<Pair>, ParseError> {
    let mut pairs = Vec::new();
    let mut seen_content = false;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let tokens: Vec<&str> = raw.split_whitespace().collect();
        if tokens.is_empty() {
            continue;
        }
        let first = !seen_content;
        seen_content = true;
        if first && is_count_line(&tokens) {
            continue;
        }
        let pair = match tokens.as_slice() {
            [name, i, j] => Pair {
                a: ImageRef { name: (*name).to_string(), number: parse_number(i, line)? },
                b: ImageRef { name: (*name).to_string(), number: parse_number(j, line)? },
                same: true,
            },
            [name1, i, name2, j] => Pair {
                a: ImageRef { name: (*name1).to_string(), number: parse_number(i, line)? },
                b: ImageRef { name: (*name2).to_string(), number: parse_number(j, line)? },
                same: name1 == name2,
            },
            _ => {
                return Err(ParseError::at(
                    line,
                    format!("expected `name i j` or `name1 i name2 j`, found {} fields", tokens.len()),
                ));
            }
        };
        pairs.push(pair);
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_same_and_different_with_header() {
        let text = "10 300\nAbdullah_Gul\t13\t14\n\nAJ_Lamas\t1\tZach_Safrin\t1\n";
        let pairs = parse_pairs(text).unwrap();
        assert_eq!(pairs.len(), 2);
        assert!(pairs[0].same);
        assert_eq!(pairs[0].a.name, "Abdullah_Gul");
        assert_eq!(pairs[0].a.number, 13);
        assert_eq!(pairs[0].b.number, 14);
        assert!(!pairs[1].same);
        assert_eq!(pairs[1].b.name, "Zach_Safrin");
        // A single count header works too.
        assert_eq!(parse_pairs("500\nA 1 2\n").unwrap().len(), 1);
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse_pairs("A 1 2\nB 1\n").unwrap_err();
        assert_eq!(err.line(), Some(2));
        assert!(err.to_string().starts_with("line 2:"), "{err}");
        let err = parse_pairs("A 1 2\n\nA 1 x\n").unwrap_err();
        assert_eq!(err.line(), Some(3));
        assert!(err.to_string().contains("`x`"));
        // A count line is only accepted first.
        assert_eq!(parse_pairs("A 1 2\n10 300\n").unwrap_err().line(), Some(2));
        assert_eq!(parse_pairs("A 0 2\n").unwrap_err().line(), Some(1));
    }

    #[test]
    fn lfw_path_is_zero_padded() {
        let r = ImageRef { name: "Al_Pacino".into(), number: 2 };
        assert_eq!(r.lfw_path(Path::new("/x/images")), PathBuf::from("/x/images/Al_Pacino/Al_Pacino_0002.jpg"));
    }

    #[test]
    fn parses_real_dev_test_file() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/eval/lfw-pairsDevTest.txt");
        let Ok(text) = std::fs::read_to_string(path) else {
            eprintln!("skipping: {path} not present");
            return;
        };
        let pairs = parse_pairs(&text).unwrap();
        assert_eq!(pairs.iter().filter(|p| p.same).count(), 500);
        assert_eq!(pairs.iter().filter(|p| !p.same).count(), 500);
    }
}
