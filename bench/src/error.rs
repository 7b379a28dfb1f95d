//! The bench's error type.

use std::fmt;

#[derive(Debug)]
pub enum BenchError {
    /// Bad command line.
    Usage(String),
    /// An engine refused or failed an operation.
    Engine {
        engine: &'static str,
        what: String,
        err: String,
    },
    Io {
        what: String,
        err: std::io::Error,
    },
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;

impl BenchError {
    pub fn io(what: impl Into<String>, err: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            err,
        }
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(m) => write!(f, "usage: {m}"),
            Self::Engine { engine, what, err } => write!(f, "{engine}: {what}: {err}"),
            Self::Io { what, err } => write!(f, "{what}: {err}"),
        }
    }
}

impl std::error::Error for BenchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { err, .. } => Some(err),
            _ => None,
        }
    }
}
