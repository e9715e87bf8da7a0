//! Aligned plain-text tables for evaluation output.
//!
//! Evaluation results are read by people in a terminal or pasted into reports;
//! columns that line up make them readable without pulling in a formatting crate.

/// Whether a cell reads as a number, optionally with a trailing `%`
/// (`0.91-0.97` does not): numeric columns are right-aligned.
fn is_numeric(cell: &str) -> bool {
    let t = cell.trim();
    let t = t.strip_suffix('%').unwrap_or(t);
    !t.is_empty() && t.parse::<f64>().is_ok()
}

/// Cell `c` of `row`, blank when the row is short.
fn cell(row: &[String], c: usize) -> &str {
    row.get(c).map(String::as_str).unwrap_or("")
}

/// Renders `headers` and `rows` as a table: columns separated by two spaces, a
/// dashed rule under the header, text left-aligned and columns whose non-empty
/// cells are all numeric right-aligned. Rows may be shorter or longer than the
/// header (missing cells are blank). Widths count characters, not bytes. Lines have
/// no trailing spaces and each ends in `\n`.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).chain(std::iter::once(headers.len())).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    let mut right = vec![true; columns];
    for (c, width) in widths.iter_mut().enumerate() {
        *width = headers.get(c).map_or(0, |h| h.chars().count());
        let mut any = false;
        for row in rows {
            let text = cell(row, c);
            *width = (*width).max(text.chars().count());
            if !text.is_empty() {
                any = true;
                right[c] &= is_numeric(text);
            }
        }
        right[c] &= any;
    }
    let mut out = String::new();
    let mut push_line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut line = String::new();
        for (c, text) in cells.enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let pad = widths[c].saturating_sub(text.chars().count());
            if right[c] {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(text);
            } else {
                line.push_str(text);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_line(&mut (0..columns).map(|c| headers.get(c).copied().unwrap_or("")));
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    push_line(&mut rule.iter().map(String::as_str));
    for row in rows {
        push_line(&mut (0..columns).map(|c| cell(row, c)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_text_left_and_numbers_right() {
        let rows = vec![vec!["lfw".to_string(), "99.5%".to_string()], vec!["att-orl".to_string(), "7".to_string()]];
        let out = render(&["set", "accuracy"], &rows);
        let expected = "\
set      accuracy
-------  --------
lfw         99.5%
att-orl         7
";
        assert_eq!(out, expected);
    }

    #[test]
    fn ragged_rows_and_unicode() {
        let rows = vec![vec!["é".to_string()], vec!["ab".into(), "x".into(), "y".into()]];
        let out = render(&["h"], &rows);
        assert_eq!(out, "h\n--  -  -\né\nab  x  y\n");
        assert_eq!(render(&[], &[]), "\n\n");
    }
}
