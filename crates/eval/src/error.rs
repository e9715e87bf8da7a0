//! The one error type of the crate's parsers.
//!
//! Evaluation inputs are hand-maintained text files; when one is malformed the
//! person fixing it needs the line number, so every error that concerns a line
//! carries it. Kept as a small hand-written enum to avoid a dependency.

use std::fmt;

/// Why an evaluation input could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// A specific line (1-based) is malformed.
    Line {
        /// 1-based line number in the input text.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The CSV header lacks a column the parser needs.
    MissingColumn {
        /// The column name that was looked for.
        column: String,
    },
    /// The input has no header line at all.
    Empty,
}

impl ParseError {
    pub(crate) fn at(line: usize, message: impl Into<String>) -> Self {
        ParseError::Line { line, message: message.into() }
    }

    /// The 1-based line number the error refers to, if it refers to one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ParseError::Line { line, .. } => Some(*line),
            _ => None,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Line { line, message } => write!(f, "line {line}: {message}"),
            ParseError::MissingColumn { column } => {
                write!(f, "header has no `{column}` column")
            }
            ParseError::Empty => write!(f, "input is empty (no header line)"),
        }
    }
}

impl std::error::Error for ParseError {}
