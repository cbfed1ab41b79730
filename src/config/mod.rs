//! The TOML configuration: serde structs with a default and a doc comment on every field.
//!
//! Unknown keys are refused; parse errors name the file and line. Relative paths written in a
//! config file are relative to that file's directory; the built-in default model is looked for
//! in the working directory, where a package installs it, and the source checkout (paths.rs).

mod error;

pub use error::{ConfigError, MqttUrlError, ShapeError};
mod camera;
mod detector;
mod mqtt;
mod paths;
mod record;
mod validate;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use camera::{
    default_open_timeout_s, default_read_timeout_s, point_in_polygon, redact_url, CameraConfig,
    LineConfig, Polygon, RtspTransport, ZoneConfig,
};
pub use detector::{
    ChannelOrder, DetectWhen, DetectorConfig, DetectorKind, DetectorRuntime, ExecutionProvider,
    ModelFamily, Preprocess, ResizeMode, DEFAULT_MODEL, FASTESTDET_MODEL, MAX_TILES,
};
pub use mqtt::{MqttConfig, MqttEndpoint};
pub use paths::{checkout_dirs, find_data, INSTALLED_DATA};
pub use record::{RecordConfig, RecordMode, RecordingsConfig};
pub use validate::valid_camera_id;

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Logging.
    pub log: LogConfig,
    /// The HTTP/WebSocket server.
    pub server: ServerConfig,
    /// Where and how events are stored.
    pub storage: StorageConfig,
    /// The object detector shared by all cameras.
    pub detector: DetectorConfig,
    /// Motion detection, which gates the object detector.
    pub motion: MotionConfig,
    /// How detections become tracks and tracks become events.
    pub tracker: TrackerConfig,
    /// The cameras to watch (`[[cameras]]` tables).
    pub cameras: Vec<CameraConfig>,
    /// Publishing to an MQTT broker (none without an `[mqtt]` section; docs/mqtt.md).
    pub mqtt: Option<MqttConfig>,
    /// Where recordings go and how long they stay (docs/recording.md).
    pub recordings: RecordingsConfig,
}

/// `[log]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `warn,ocellus::server::ws=debug`, ... The environment
    /// variable `OCELLUS_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

/// A configured secret: neither `Debug` (what a log would show) nor `Serialize` (what
/// `check-config` prints) shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

/// What a [`Secret`] serialises to; [`Config::to_toml`] turns its line into a comment.
const SECRET_SHOWN_AS: &str = "***";

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(SECRET_SHOWN_AS)
    }
}

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The value itself, for comparing with what a client presents.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// `[server]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port for the dashboard, the API and `/ws`.
    pub listen: String,
    /// When set, `/ws`, `/api` and `/metrics` need it: `Authorization: Bearer TOKEN` or `?token=TOKEN`.
    pub token: Option<Secret>,
    /// Origins (`http://host:port`) allowed to open `/ws` besides the daemon's own.
    pub allowed_origins: Vec<String>,
    /// WebSocket clients served at once; more are refused with 503.
    pub max_clients: usize,
    /// Largest message a client may send, in bytes.
    pub max_message_bytes: usize,
    /// Idle clients are pinged this often (seconds) and dropped after two missed answers.
    pub ping_interval_s: u64,
    /// A client whose socket accepts nothing for this long (seconds) is dropped.
    pub send_timeout_s: u64,
    /// Most events one query may return.
    pub query_max_limit: u32,
    /// Queries a WebSocket client may make per second (per connection). REST queries are
    /// bounded by the read pool instead (4 at once).
    pub queries_per_second: u32,
    /// JPEG quality of live frames (1-100).
    pub stream_quality: u8,
    /// Allow listening beyond loopback without a token (anyone on the network then sees the
    /// cameras). Off by default: such a config is refused.
    pub allow_no_token: bool,
    /// Serve HTTPS and WSS (no plain HTTP) with this PEM certificate chain, the server's
    /// certificate first; with `tls_key`. Re-read on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key (PKCS#8, RSA or SEC1) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            token: None,
            allowed_origins: Vec::new(),
            max_clients: 64,
            max_message_bytes: 64 * 1024,
            ping_interval_s: 20,
            send_timeout_s: 10,
            query_max_limit: 500,
            queries_per_second: 20,
            stream_quality: 75,
            allow_no_token: false,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[storage]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// SQLite database file; created with its schema if missing.
    pub path: PathBuf,
    /// The writer commits at most this long after the first write of a batch.
    pub batch_ms: u64,
    /// The writer commits when a batch reaches this many writes.
    pub batch_max: usize,
    /// Events that ended longer ago than this many days are deleted (0 keeps them forever).
    pub retention_days: u32,
    /// Counts over time (docs/counts.md) older than this many days are deleted (0 keeps them
    /// forever). Apart from the events' retention: a year of counts is small, a year of events
    /// with snapshots is not.
    pub counts_retention_days: u32,
    /// Per-minute count buckets older than this many days are rolled up into hourly ones
    /// (0: never).
    pub counts_minutes_days: u32,
    /// At most this many events are kept; the oldest go first (0 for no limit).
    pub max_events: u64,
    /// The oldest ended events (and their snapshots) are deleted while the database holds more
    /// than this many MiB of data, checked every minute and whenever the disk is full
    /// (0 for no limit). The file stays at about this size: freed pages are reused.
    pub max_size_mb: u64,
    /// Longest side of the event snapshot thumbnails, in pixels.
    pub snapshot_max_side: u32,
    /// JPEG quality of the snapshots (1-100).
    pub snapshot_quality: u8,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("ocellus.db"),
            batch_ms: 50,
            batch_max: 4096,
            retention_days: 30,
            counts_retention_days: 400,
            counts_minutes_days: 7,
            max_events: 1_000_000,
            max_size_mb: 2048,
            snapshot_max_side: 320,
            snapshot_quality: 80,
        }
    }
}

/// `[motion]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MotionConfig {
    /// Run motion detection at all; when off every frame counts as motion.
    pub enabled: bool,
    /// Frames are scaled down to this width before background subtraction.
    pub width: u32,
    /// MOG2 history, in frames.
    pub history: i32,
    /// MOG2 variance threshold; higher is less sensitive.
    pub var_threshold: f64,
    /// Smallest moving blob that counts, in square pixels of the scaled-down frame.
    pub min_area: f64,
    /// When more than this fraction of the frame changes at once it is a light change (or the
    /// camera moved), not motion: the background is relearned and the frame is not motion.
    pub light_change_fraction: f64,
}

impl Default for MotionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            width: 320,
            history: 300,
            var_threshold: 25.0,
            min_area: 40.0,
            light_change_fraction: 0.6,
        }
    }
}

/// `[tracker]`: how detections become tracks, and tracks become events. docs/events.md explains
/// each knob and the defaults.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerConfig {
    /// A confident detection continues a track when its IoU with the track's predicted box is at
    /// least this (weak detections need 0.5, as in ByteTrack).
    pub iou_threshold: f32,
    /// Detections a track needs before it can become an event, counted at 10 frames a second:
    /// the tracker scales it to the frame rate it sees (10 is 5 detections at 5 fps, 20 at
    /// 20 fps), so it always means the same time of walking. Until then a track is young:
    /// tracks with this many detections are matched first, so a young track never takes an
    /// object from an established one.
    pub min_hits: u32,
    /// A track becomes an event only when the median score of its last `score_window`
    /// detections reaches this: one lucky frame does not make a cone a person.
    pub min_score: f32,
    /// How many of a track's latest detection scores the median is taken over.
    pub score_window: u32,
    /// A track becomes an event only once it has moved this far from where it was first seen,
    /// in units of its box's height (its larger side): a thing that never moves is scenery.
    pub min_move: f32,
    /// An event whose object stays within `min_move` of one spot this long (milliseconds) is
    /// marked stationary (a parked car); it is not announced again while it stays.
    pub stationary_after_ms: i64,
    /// A track unseen this long ends, and so does its event (milliseconds). Until then a missed
    /// object keeps its track: a short occlusion is not a new event.
    pub unseen_timeout_ms: i64,
    /// A young track (fewer than `min_hits` detections) is dropped when unseen this long
    /// (milliseconds).
    pub tentative_timeout_ms: i64,
    /// At most one `update` message per event per this many milliseconds.
    pub update_interval_ms: i64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            iou_threshold: 0.35,
            min_hits: 10,
            min_score: 0.6,
            score_window: 10,
            min_move: 1.0,
            stationary_after_ms: 10_000,
            unseen_timeout_ms: 2000,
            tentative_timeout_ms: 500,
            update_interval_ms: 1000,
        }
    }
}

impl Config {
    /// Reads a config file as `ocellus run` does: relative paths resolved against its
    /// directory, the default model located (installed data, the source checkout), validated.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with(path, |_| {})
    }

    /// [`Config::load`] with `overrides` (a command line's) applied before the default model
    /// is located and the whole validated, once, on what will run.
    pub fn load_with(
        path: &Path,
        overrides: impl FnOnce(&mut Config),
    ) -> Result<Config, ConfigError> {
        Self::read(path)?.settle(path, overrides)
    }

    /// What every command does last, whether the settings came from a file (`path`) or are the
    /// defaults: `overrides` applied, the default model located, the whole validated.
    pub fn settle(
        mut self,
        path: &Path,
        overrides: impl FnOnce(&mut Config),
    ) -> Result<Config, ConfigError> {
        overrides(&mut self);
        self.locate_defaults();
        self.validate(path)?;
        Ok(self)
    }

    /// The effective configuration as TOML, every default filled in, as it could be pasted
    /// back into a file; secrets are commented out and not shown.
    pub fn to_toml(&self) -> String {
        let text = match toml::to_string(self) {
            Ok(t) => t,
            // Every field is a plain value with string keys; nothing here can fail.
            Err(e) => return format!("# cannot print the configuration: {e}\n"),
        };
        let secret = format!("= \"{SECRET_SHOWN_AS}\"");
        let url_password = format!("://{SECRET_SHOWN_AS}@");
        text.lines()
            .map(|l| {
                if l.trim_end().ends_with(&secret) {
                    format!("# {l}  (set; not shown)\n")
                } else if l.starts_with("source = ") && l.contains(&url_password) {
                    format!("# {l}  (the URL's user and password are not shown)\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect()
    }

    /// Reads a config file without validating it, for a caller that overrides settings from
    /// its command line first: it then calls `validate` once, on what will run.
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse_unchecked(&text, path)?;
        config.resolve_relative_to(path, &text);
        Ok(config)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config = Self::parse_unchecked(text, path)?;
        config.validate(path)?;
        Ok(config)
    }

    fn parse_unchecked(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1);
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                message: e.message().trim().replace('\n', " "),
            }
        })?;
        Ok(config)
    }

    /// The `[[cameras]]` entry for camera `id`; for any other id (a replay's), the only entry
    /// when there is exactly one, so a camera's masks can be tried on a recording.
    /// Detector runs a second for camera `id`: its `detector_fps`, else `detector.fps`.
    pub fn detector_fps(&self, id: &str) -> f32 {
        self.camera(id)
            .and_then(|c| c.detector_fps)
            .unwrap_or(self.detector.fps)
    }

    pub fn camera(&self, id: &str) -> Option<&CameraConfig> {
        self.cameras
            .iter()
            .find(|c| c.id == id)
            .or(match self.cameras.as_slice() {
                [only] => Some(only),
                _ => None,
            })
    }
}

/// Warns when a config file that holds a token can be read by other users.
#[cfg(unix)]
pub fn warn_if_readable_by_others(path: &Path, cfg: &Config) {
    use std::os::unix::fs::PermissionsExt;
    let secret = if cfg.server.token.is_some() {
        "server.token"
    } else if cfg.mqtt.as_ref().is_some_and(|m| m.password.is_some()) {
        "mqtt.password"
    } else {
        return;
    };
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(config = %path.display(), "the config holds {secret} and is readable by every user; chmod o-r it");
        }
    }
}

#[cfg(test)]
mod tests;
