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

/// A zone or counting line that cannot be used, found as it is read.
#[derive(Debug, Error, PartialEq)]
pub enum ShapeError {
    #[error("{what} name {name:?} must be 1-64 letters, digits, '-' or '_'")]
    Name { what: &'static str, name: String },
    #[error("zone {name:?} has {points} points; a zone needs at least 3")]
    ZonePoints { name: String, points: usize },
    #[error("line {name:?} has {points} points; a line has exactly 2")]
    LinePoints { name: String, points: usize },
    #[error(
        "{what} {name:?} has the point [{x}, {y}]; coordinates are fractions of the frame, 0 to 1"
    )]
    Point {
        what: &'static str,
        name: String,
        x: f32,
        y: f32,
    },
    #[error("zone {name:?}: inertia {inertia} is not between 1 and 1000 frames")]
    Inertia { name: String, inertia: u32 },
    #[error("zone {name:?}: loitering_s {seconds} is not between 0 and 86400")]
    Loitering { name: String, seconds: f32 },
    #[error("line {name:?}: its two points are the same")]
    SamePoints { name: String },
}

/// Why a file is not an ONNX Runtime this build can use.
#[derive(Debug, Error, PartialEq)]
pub enum OrtLibraryError {
    #[error("not found")]
    NotFound,
    #[error("cannot load it as a shared library ({0})")]
    NotALibrary(String),
    #[error("not on the system's library path")]
    NotOnPath,
    #[error("it is not ONNX Runtime (it has no OrtGetApiBase)")]
    NotOnnxRuntime,
    #[error("its OrtGetApiBase returned nothing")]
    NoApiBase,
    #[error("it reports no version")]
    NoVersion,
    #[error("it reports a version this build cannot read ({0:?})")]
    UnreadableVersion(String),
    #[error("it is ONNX Runtime {found}; this build needs 1.{needs} or newer")]
    TooOld { found: String, needs: u32 },
}

/// An `mqtt.url` that names no broker.
#[derive(Debug, Error, PartialEq)]
pub enum MqttUrlError {
    #[error("{0:?} must start with mqtt:// or mqtts://")]
    Scheme(String),
    #[error("{url:?}: {port:?} is not a port")]
    Port { url: String, port: String },
    #[error("{0:?} has no usable host")]
    Host(String),
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
    /// An RTSP camera that did not open, told apart by the pre-flight (src/capture/rtsp.rs).
    #[error(transparent)]
    Rtsp(#[from] RtspError),
}

/// Why an RTSP camera could not be opened. Messages never contain the password.
#[derive(Debug, Error, PartialEq)]
pub enum RtspError {
    #[error("{0} is not an rtsp:// URL with a host")]
    BadUrl(String),
    #[error("connection refused by {0}: is the camera on, and is RTSP enabled on that port?")]
    Refused(String),
    #[error("no answer from {0} within {1} s: wrong address, or a firewall in between")]
    NoAnswer(String, u64),
    #[error("cannot reach {0}: {1}")]
    Network(String, String),
    #[error("the camera has no stream at {0} (404 Not Found): check the path in the URL; the camera's manual gives its stream paths")]
    NotFound(String),
    #[error("the camera refused the user name or password (401 Unauthorized)")]
    WrongCredentials,
    #[error("the camera needs a user name and password (401 Unauthorized): put them in the URL, rtsp://user:password@host/path")]
    NeedsCredentials,
    #[error("the camera answered {0} {1}")]
    Status(u16, String),
    #[error("{0} does not speak RTSP: {1}")]
    NotRtsp(String, String),
    #[error("connected, but no stream could be opened within {timeout_s} s over {transport}: {detail}; try rtsp_transport = \"{other}\"")]
    Open {
        timeout_s: u64,
        transport: &'static str,
        other: &'static str,
        detail: String,
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
    #[error("ONNX Runtime: {0}")]
    Onnxruntime(String),
    #[error("detector.runtime = \"onnxruntime\", but no ONNX Runtime library could be loaded ({tried}); install libonnxruntime, run scripts/setup.sh (it fetches one into vendor/onnxruntime/), set detector.onnxruntime_library or ORT_DYLIB_PATH, or set detector.runtime = \"opencv\"")]
    NoOnnxruntime { tried: String },
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
    #[error("database {path} is not an ocellus fleet database (a box's database, or another program's?); point storage.path (--db) of `ocellus fleet` at a file of its own")]
    NotFleet { path: PathBuf },
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

/// A certificate or key file that TLS cannot use (the daemon's HTTPS, the MQTT client's).
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key in it (-----BEGIN PRIVATE KEY-----, RSA or EC)")]
    NoKey { path: PathBuf },
    #[error("{path}: not usable PEM: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{path}: the certificate cannot be used: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{path}: the private key cannot be used: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("the key {key} does not belong to the certificate {cert} (their public keys differ)")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("no system certificate authorities found to check the broker with; set mqtt.ca_file")]
    NoSystemRoots,
}
