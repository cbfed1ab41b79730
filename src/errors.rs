//! Error types, one enum per area; each message says what went wrong and, where it can, what to do.

use std::path::PathBuf;

use thiserror::Error;

/// A configuration file that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax errors, unknown keys and wrong types; `line` is 1-based.
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A value that parses but makes no sense; `key` is the dotted path to it.
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// A video source that cannot be opened or read.
#[derive(Debug, Error)]
pub enum CaptureError {
    #[error("video file {0} does not exist")]
    NotFound(PathBuf),
    #[error("cannot open {source_name}: {reason}")]
    Open { source_name: String, reason: String },
    #[error("{source_name}: opened, but no frame could be decoded (not a video, or an unsupported codec)")]
    NoFrames { source_name: String },
    #[error("{source_name}: video ends early: decoded {decoded} of the {announced} frames its header announces (truncated file?)")]
    Truncated {
        source_name: String,
        decoded: u64,
        announced: u64,
    },
    #[error("{source_name}: OpenCV: {source}")]
    OpenCv {
        source_name: String,
        #[source]
        source: opencv::Error,
    },
}

/// A detector that cannot be built or run.
#[derive(Debug, Error)]
pub enum DetectError {
    #[error("model file {0} does not exist; run scripts/setup.sh to fetch the default model, or set detector.model")]
    ModelMissing(PathBuf),
    #[error("cannot load model {path}: {reason}")]
    ModelLoad { path: PathBuf, reason: String },
    #[error("labels file {path}: {reason}")]
    Labels { path: PathBuf, reason: String },
    #[error("model {path} gave output of shape {shape:?}, which is not what the `{family}` decoder expects ({expected})")]
    OutputShape {
        path: PathBuf,
        family: &'static str,
        shape: Vec<i32>,
        expected: String,
    },
    #[error("OpenCV: {0}")]
    OpenCv(#[from] opencv::Error),
}

/// Storage failures.
#[derive(Debug, Error)]
pub enum DbError {
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path} has schema version {found}, newer than the {supported} this ocellus knows; upgrade ocellus, or point storage.path (--db) at another file")]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("database {path}: upgrading the schema from version {from} failed: {source}")]
    Migrate {
        path: PathBuf,
        from: i64,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path} is not an ocellus database (no `events` table at schema version {version})")]
    Foreign { path: PathBuf, version: i64 },
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("cannot start the database writer thread: {0}")]
    Thread(std::io::Error),
}

/// Formats an error with its whole chain of causes on one line: `a: b: c`.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(cause) = cur {
        let s = cause.to_string();
        // thiserror messages often embed their source already; don't print it twice.
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = cause.source();
    }
    out
}
