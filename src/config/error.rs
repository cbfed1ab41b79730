//! The config's errors: a file that cannot be used, a shape or an MQTT URL that is wrong.

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax errors, unknown keys and wrong types; `line` is 1-based.
    #[error("{path}:{line}: {message}")]
    Parse {
        path: std::path::PathBuf,
        line: usize,
        message: String,
    },
    /// A value that parses but makes no sense; `key` is the dotted path to it.
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: std::path::PathBuf,
        key: String,
        message: String,
    },
}

/// A zone or counting line that cannot be used, found as it is read.
#[derive(Debug, thiserror::Error, PartialEq)]
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

/// An `mqtt.url` that names no broker.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MqttUrlError {
    #[error("{0:?} must start with mqtt:// or mqtts://")]
    Scheme(String),
    #[error("{url:?}: {port:?} is not a port")]
    Port { url: String, port: String },
    #[error("{0:?} has no usable host")]
    Host(String),
}
