//! The one error type of topology loading, and the positions it names.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why a topology file could not be loaded.
///
/// `Display` is always one line: `FILE: cannot read ...` for I/O errors and
/// `FILE:LINE:COL: MESSAGE` for everything else, where the message says what
/// was found and what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The file could not be read.
    #[error("{}: cannot read topology file: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid topology.
    #[error("{}:{line}:{col}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column (in characters) of the offending value.
        col: usize,
        message: String,
    },
}

impl TopologyError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            TopologyError::Io { path, .. } | TopologyError::Invalid { path, .. } => path,
        }
    }

    /// 1-based line of the offending value; `None` for I/O errors.
    pub fn line(&self) -> Option<usize> {
        match self {
            TopologyError::Io { .. } => None,
            TopologyError::Invalid { line, .. } => Some(*line),
        }
    }

    /// 1-based column (in characters) of the offending value; `None` for I/O
    /// errors.
    pub fn col(&self) -> Option<usize> {
        match self {
            TopologyError::Io { .. } => None,
            TopologyError::Invalid { col, .. } => Some(*col),
        }
    }

    /// The message without file and position.
    pub fn message(&self) -> String {
        match self {
            TopologyError::Io { source, .. } => format!("cannot read topology file: {source}"),
            TopologyError::Invalid { message, .. } => message.clone(),
        }
    }
}

/// A validation failure at a byte span of the source text, before it is
/// turned into a [`TopologyError`] with file, line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    pub span: Range<usize>,
    pub message: String,
}

impl Issue {
    pub fn new(span: Range<usize>, message: impl Into<String>) -> Issue {
        Issue {
            span,
            message: message.into(),
        }
    }
}

/// Shorthand for results of the validation steps.
pub(crate) type Checked<T> = Result<T, Issue>;

/// The text being parsed, for turning byte offsets into lines and columns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    pub text: &'a str,
    pub path: &'a Path,
}

impl Source<'_> {
    /// 1-based line and column (in characters) of a byte offset. Offsets past
    /// the end or inside a character are clamped to a valid position.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    /// 1-based line of a byte offset.
    pub fn line(&self, offset: usize) -> usize {
        self.line_col(offset).0
    }

    /// The public error for an issue in this source, as one line.
    pub fn error(&self, issue: Issue) -> TopologyError {
        let (line, col) = self.line_col(issue.span.start);
        TopologyError::Invalid {
            path: self.path.to_path_buf(),
            line,
            col,
            message: one_line(&issue.message),
        }
    }
}

/// Collapses line breaks so that an error always prints as one line.
fn one_line(message: &str) -> String {
    message.replace("\r\n", " ").replace(['\n', '\r'], " ")
}
