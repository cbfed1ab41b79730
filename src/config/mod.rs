//! The TOML configuration: serde structs with a default and a doc comment on every field.
//!
//! Unknown keys are refused; parse errors name the file and line. Relative paths written in a
//! config file are relative to that file's directory; the built-in default model is looked for
//! in the working directory, where a package installs it, and the source checkout (paths.rs).

mod paths;
mod validate;

pub use paths::{checkout_dirs, find_data, INSTALLED_DATA};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
pub use validate::valid_camera_id;

use serde::Deserialize;

use crate::errors::ConfigError;

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
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
}

/// `[mqtt]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host:port` (1883 by default) or `mqtts://host:port` (TLS, 8883 by default,
    /// checked against the system's certificate authorities).
    pub url: String,
    /// Every topic starts with `<topic_prefix>/<device_id>/`.
    pub topic_prefix: String,
    /// This box's name in topics and in Home Assistant; default: the host name.
    pub device_id: Option<String>,
    pub username: Option<String>,
    /// Never printed (shown as `***`).
    pub password: Option<Secret>,
    /// 0 or 1. With 1 every event message is kept in the outbox until the broker acknowledges
    /// it; with 0 it is sent once, unacknowledged.
    pub qos: u8,
    /// Home Assistant MQTT discovery: an occupancy binary_sensor and a count sensor per camera
    /// and label.
    pub ha_discovery: bool,
    pub discovery_prefix: String,
    /// The outbox of undelivered messages keeps at most this many (the oldest go first)...
    pub outbox_max_messages: u64,
    /// ...and none older than this many hours; what is given up is counted as dropped.
    pub outbox_max_age_h: u64,
    /// Seconds between `stats` messages.
    pub stats_interval_s: u64,
}

/// Where an `[mqtt]` url points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttEndpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl MqttConfig {
    /// The broker's address, from `url`.
    pub fn endpoint(&self) -> Result<MqttEndpoint, crate::errors::MqttUrlError> {
        use crate::errors::MqttUrlError;
        let (tls, rest) = if let Some(r) = self.url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = self.url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(MqttUrlError::Scheme(self.url.clone()));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h,
                p.parse::<u16>().map_err(|_| MqttUrlError::Port {
                    url: self.url.clone(),
                    port: p.to_string(),
                })?,
            ),
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') || host.contains('@') {
            return Err(MqttUrlError::Host(self.url.clone()));
        }
        Ok(MqttEndpoint {
            tls,
            host: host.to_string(),
            port,
        })
    }

    /// `device_id`, or the host name.
    pub fn device(&self) -> String {
        self.device_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| valid_camera_id(h))
                .unwrap_or_else(|| "ocellus".into())
        })
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            url: "mqtt://localhost:1883".into(),
            topic_prefix: "ocellus".into(),
            device_id: None,
            username: None,
            password: None,
            qos: 1,
            ha_discovery: true,
            discovery_prefix: "homeassistant".into(),
            outbox_max_messages: 100_000,
            outbox_max_age_h: 24 * 7,
            stats_interval_s: 60,
        }
    }
}

/// `[log]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `warn,ocellus::ws=debug`, ... The environment
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

/// A configured secret: `Debug` (what `check-config` prints, what a log would show) never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

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
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port for the dashboard, the API and `/ws`.
    pub listen: String,
    /// When set, `/ws` and `/api` need it: `Authorization: Bearer TOKEN` or `?token=TOKEN`.
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
        }
    }
}

/// `[storage]`
#[derive(Clone, Debug, Deserialize)]
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
            max_events: 1_000_000,
            max_size_mb: 2048,
            snapshot_max_side: 320,
            snapshot_quality: 80,
        }
    }
}

/// Which detector to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DetectorKind {
    /// The DNN model when its file exists, otherwise the HOG people detector (with a warning).
    #[default]
    Auto,
    /// The DNN model; a missing model file is an error.
    Dnn,
    /// OpenCV's built-in HOG people detector; needs no model file.
    Hog,
    /// No object detector: motion only, no events.
    None,
}

/// Which inference library runs a DNN model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DetectorRuntime {
    /// ONNX Runtime when its library can be loaded and takes the model, else OpenCV's DNN
    /// module (with a warning saying why).
    #[default]
    Auto,
    /// ONNX Runtime, loaded at run time; an error when its library cannot be loaded.
    Onnxruntime,
    /// OpenCV's DNN module.
    Opencv,
}

impl DetectorRuntime {
    pub fn name(self) -> &'static str {
        match self {
            DetectorRuntime::Auto => "auto",
            DetectorRuntime::Onnxruntime => "onnxruntime",
            DetectorRuntime::Opencv => "opencv",
        }
    }
}

/// An ONNX Runtime execution provider (where the network runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    /// NVIDIA TensorRT (Jetson, desktop GPUs); needs an ONNX Runtime built with it.
    Tensorrt,
    /// NVIDIA CUDA; needs an ONNX Runtime built with it.
    Cuda,
    /// The CPU; always there, and where every node another provider cannot run goes.
    Cpu,
}

impl ExecutionProvider {
    pub fn name(self) -> &'static str {
        match self {
            ExecutionProvider::Tensorrt => "tensorrt",
            ExecutionProvider::Cuda => "cuda",
            ExecutionProvider::Cpu => "cpu",
        }
    }
}

/// How a model's output tensor is laid out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelFamily {
    /// FastestDet: output [1, 85, H, W] grid, stretched input.
    #[default]
    Fastestdet,
    /// Ultralytics YOLOv8 / YOLO11 export: output [1, 4+C, N], letterboxed input.
    Yolo,
    /// YOLOv5 export: output [1, N, 5+C], letterboxed input.
    Yolov5,
    /// NanoDet (GFL head): per stride [1, N, C] class scores and [1, N, 4*B] side bins;
    /// stretched BGR input, normalised per channel.
    Nanodet,
}

impl ModelFamily {
    pub fn name(self) -> &'static str {
        match self {
            ModelFamily::Fastestdet => "fastestdet",
            ModelFamily::Yolo => "yolo",
            ModelFamily::Yolov5 => "yolov5",
            ModelFamily::Nanodet => "nanodet",
        }
    }

    /// How the family's published models take their input, unless `model.toml` (the
    /// `[detector]` table) says otherwise.
    pub fn preprocess(self) -> Preprocess {
        let unit = Preprocess {
            channels: ChannelOrder::Bgr,
            resize: ResizeMode::Stretch,
            scale: 1.0 / 255.0,
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        match self {
            ModelFamily::Fastestdet => unit,
            ModelFamily::Yolo | ModelFamily::Yolov5 => Preprocess {
                channels: ChannelOrder::Rgb,
                resize: ResizeMode::Letterbox,
                ..unit
            },
            // NanoDet's own normalisation (nanodet-g.yml), on 0..255 BGR pixels.
            ModelFamily::Nanodet => Preprocess {
                scale: 1.0,
                mean: [103.53, 116.28, 123.675],
                std: [57.375, 57.12, 58.395],
                ..unit
            },
        }
    }
}

/// The order of the colour channels a model takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// As OpenCV decodes frames.
    Bgr,
    Rgb,
}

/// How a frame is fitted to the network's input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Scaled to the input size, ignoring the aspect ratio.
    Stretch,
    /// Scaled to fit keeping the aspect ratio, centred, padded with grey (114).
    Letterbox,
}

/// How a frame becomes the network's input tensor: `(pixel * scale - mean[c]) / std[c]` per
/// channel, in `channels` order, after `resize`. Means and deviations are in the model's channel
/// order and in scaled units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preprocess {
    pub channels: ChannelOrder,
    pub resize: ResizeMode,
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// When the object detector runs on a frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectWhen {
    /// Every frame (subject to `max_fps`).
    Always,
    /// Only while there is motion or a live track (subject to `max_fps`).
    #[default]
    Motion,
}

/// `[detector]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// `auto`, `dnn`, `hog` or `none`.
    pub kind: DetectorKind,
    /// What runs a DNN model: `auto` (ONNX Runtime when its library loads, else OpenCV),
    /// `onnxruntime` or `opencv`. Both take the same input tensor and give the same boxes.
    pub runtime: DetectorRuntime,
    /// The ONNX Runtime shared library. Unset: `ORT_DYLIB_PATH`, then the system's library
    /// path (`libonnxruntime.so`, `libonnxruntime.so.1`, a distribution's
    /// `libonnxruntime.so.1.N`), then the copy scripts/setup.sh puts in `vendor/onnxruntime/`.
    pub onnxruntime_library: Option<PathBuf>,
    /// ONNX Runtime execution providers in order of preference, e.g. `["tensorrt", "cuda",
    /// "cpu"]`; one this ONNX Runtime lacks is skipped with a warning. The CPU is always the
    /// last resort.
    pub execution_providers: Vec<ExecutionProvider>,
    /// Output layout of the model: `fastestdet`, `yolo` or `yolov5`.
    pub family: ModelFamily,
    /// The ONNX model file.
    pub model: PathBuf,
    /// Class names, one a line, in the model's class order.
    pub labels: PathBuf,
    /// Network input width in pixels.
    pub input_width: u32,
    /// Network input height in pixels.
    pub input_height: u32,
    /// Channel order the model takes, `bgr` or `rgb`; unset: the family's (below).
    pub channels: Option<ChannelOrder>,
    /// `stretch` or `letterbox`; unset: the family's (fastestdet and nanodet stretch, yolo and
    /// yolov5 letterbox).
    pub resize: Option<ResizeMode>,
    /// Pixels (0..255) are multiplied by this; unset: 1/255, or 1 for nanodet.
    pub scale: Option<f32>,
    /// Subtracted per channel after scaling (model channel order); unset: the family's.
    pub mean: Option<[f32; 3]>,
    /// Divided per channel after the mean (model channel order); unset: the family's.
    pub std: Option<[f32; 3]>,
    /// Minimum score for a confident detection, one that can start a track, unless
    /// `min_score_per_label` says otherwise.
    pub min_score: f32,
    /// Weaker detections, down to this score, are handed to the tracker too, but only to keep
    /// an existing track alive through a poorly seen frame (ByteTrack's second stage); they
    /// never start a track. Set it to `min_score` or above to turn this off.
    pub keep_alive_score: f32,
    /// Per-label minimum scores, e.g. `{ person = 0.6 }`.
    pub min_score_per_label: BTreeMap<String, f32>,
    /// Only these labels are reported; empty means every label of the model. The default lists
    /// people, vehicles and animals (under both COCO spellings where they differ).
    pub labels_allow: Vec<String>,
    /// Detections smaller than this many square pixels (source frame) are dropped.
    pub min_box_area: f32,
    /// Boxes of the same class overlapping more than this IoU are merged by NMS.
    pub nms_iou: f32,
    /// `always` or `motion` (only while there is motion or a live track).
    pub when: DetectWhen,
    /// Run the detector at most this often per camera (0: no limit). Replay ignores it.
    pub max_fps: f32,
    /// Threads one inference may use: OpenCV's thread count, or ONNX Runtime's intra-op
    /// threads (0: the library's default, one a core).
    pub threads: i32,
    /// The frame is cut into this many side-by-side tiles, overlapping by a quarter of a tile,
    /// and the network runs on each at its input size: small, far objects get that many times
    /// the pixels, for that many times the detector's time. 1: the whole frame at once.
    pub tiles: u32,
}

/// More tiles than this cost more than they give: each is a full network pass.
pub const MAX_TILES: u32 = 4;

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            kind: DetectorKind::Auto,
            runtime: DetectorRuntime::Auto,
            onnxruntime_library: None,
            execution_providers: vec![ExecutionProvider::Cpu],
            family: ModelFamily::Nanodet,
            model: PathBuf::from(DEFAULT_MODEL),
            labels: PathBuf::from("models/nanodet-g/coco80.names"),
            input_width: 384,
            input_height: 288,
            channels: None,
            resize: None,
            scale: None,
            mean: None,
            std: None,
            min_score: 0.4,
            keep_alive_score: 0.15,
            min_score_per_label: BTreeMap::new(),
            labels_allow: [
                "person",
                "bicycle",
                "car",
                "motorcycle",
                "motorbike", // the Darknet name, used by FastestDet's labels
                "bus",
                "truck",
                "bird",
                "cat",
                "dog",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            min_box_area: 300.0,
            nms_iou: 0.45,
            when: DetectWhen::Motion,
            max_fps: 0.0,
            threads: 0,
            tiles: 1,
        }
    }
}

/// The default model: NanoDet-g, made by models/fetch.sh (paths relative to where the data is).
pub const DEFAULT_MODEL: &str = "models/nanodet-g/nanodet-g-384x288.onnx";
/// The smallest model, and the fallback when the default is not installed.
pub const FASTESTDET_MODEL: &str = "models/fastestdet/FastestDet.onnx";

impl DetectorConfig {
    /// FastestDet's settings in place of the model's own (family, files, input, preprocessing
    /// and score thresholds; models/fastestdet/model.toml), the rest of `self` kept.
    pub fn fastestdet(&self) -> DetectorConfig {
        DetectorConfig {
            family: ModelFamily::Fastestdet,
            model: PathBuf::from(FASTESTDET_MODEL),
            labels: PathBuf::from("models/fastestdet/coco.names"),
            input_width: 352,
            input_height: 352,
            channels: None,
            resize: None,
            scale: None,
            mean: None,
            std: None,
            min_score: 0.4,
            keep_alive_score: 0.15,
            min_score_per_label: BTreeMap::new(),
            ..self.clone()
        }
    }

    /// When the model is the default one (wherever the config says it is installed) and it is
    /// missing, FastestDet's settings if FastestDet is there (in the working directory, the
    /// installed data or the source checkout).
    pub fn fastestdet_fallback(&self) -> Option<DetectorConfig> {
        if !self.model.ends_with(DEFAULT_MODEL) || self.model.exists() {
            return None;
        }
        let mut f = self.fastestdet();
        for p in [&mut f.model, &mut f.labels] {
            if !p.exists() {
                *p = find_data(p)?;
            }
        }
        Some(f)
    }

    /// The input tensor's recipe: the family's, with what the config sets instead.
    pub fn preprocess(&self) -> Preprocess {
        let p = self.family.preprocess();
        Preprocess {
            channels: self.channels.unwrap_or(p.channels),
            resize: self.resize.unwrap_or(p.resize),
            scale: self.scale.unwrap_or(p.scale),
            mean: self.mean.unwrap_or(p.mean),
            std: self.std.unwrap_or(p.std),
        }
    }

    /// The minimum score for `label`.
    pub fn min_score_for(&self, label: &str) -> f32 {
        self.min_score_per_label
            .get(label)
            .copied()
            .unwrap_or(self.min_score)
    }
}

/// `[motion]`
#[derive(Clone, Debug, Deserialize)]
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
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerConfig {
    /// A confident detection continues a track when its IoU with the track's predicted box is at
    /// least this (weak detections need 0.5, as in ByteTrack).
    pub iou_threshold: f32,
    /// Detections a track needs before it can become an event. Until then it is young: tracks
    /// with this many detections are matched first, so a young track never takes an object
    /// from an established one.
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

/// One `[[cameras]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Short id used in events, logs and URLs: letters, digits, `-` and `_`.
    pub id: String,
    /// A video file, a V4L2 device (`/dev/video0`), an `rtsp://` or `http://` URL, or a
    /// GStreamer pipeline ending in `appsink`.
    pub source: String,
    /// Human-readable name for the dashboard; defaults to the id.
    #[serde(default)]
    pub name: Option<String>,
    /// Set to false to keep the entry but not open the camera.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// RTSP only: `tcp` (the default, as most NVRs use; passes firewalls and loses nothing)
    /// or `udp` (lower latency on a clean network; some cameras only offer it).
    #[serde(default)]
    pub rtsp_transport: RtspTransport,
    /// Network sources: how long connecting may take, until the first frame is decoded
    /// (seconds). A camera that sends a key frame only every few seconds needs that long.
    #[serde(default = "default_open_timeout_s")]
    pub open_timeout_s: u64,
    /// Network sources: a stream that delivers no frame for this long (seconds) has stalled
    /// and is reconnected.
    #[serde(default = "default_read_timeout_s")]
    pub read_timeout_s: u64,
    /// Polygons in relative coordinates (0-1 of the frame's width and height, so they survive a
    /// resolution change): a detection whose bottom-centre is inside one is dropped. For a spot
    /// that fools the detector: a statue, a poster, a tree that looks like a person.
    #[serde(default)]
    pub object_masks: Vec<Polygon>,
    /// Polygons in relative coordinates: motion inside them does not start the detector. For
    /// trees in the wind, a busy road beyond the fence, a timestamp overlay.
    #[serde(default)]
    pub motion_masks: Vec<Polygon>,
    /// Zones: named polygons (relative coordinates); an event records the zones its object
    /// entered, and the stats count the objects in each (docs/zones.md).
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    /// Counting lines: named segments (relative coordinates); an event records each crossing
    /// with its direction, and the stats count them (docs/zones.md).
    #[serde(default)]
    pub lines: Vec<LineConfig>,
}

/// A polygon of points `[x, y]`, each in 0-1 of the frame's width and height.
pub type Polygon = Vec<[f32; 2]>;

/// `[[cameras.zones]]`: checked as it is read, so a mistake is reported with its line.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "ZoneFields")]
pub struct ZoneConfig {
    /// Letters, digits, `-` and `_`; unique among the camera's zones and lines.
    pub name: String,
    /// 3 or more points `[x, y]` in 0-1. An object is in the zone when the bottom-centre of its
    /// tracked box (where it stands) is inside.
    pub points: Polygon,
    /// Only objects with these labels count (empty: every label).
    pub labels: Vec<String>,
    /// Frames an object must be inside before it has entered (and outside before it has left),
    /// so a box flickering on the edge does not enter and leave over and over.
    pub inertia: u32,
    /// Greater than 0: only an object that stays this many seconds has entered (loitering).
    pub loitering_s: f32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneFields {
    name: String,
    points: Polygon,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default = "default_inertia")]
    inertia: u32,
    #[serde(default)]
    loitering_s: f32,
}

fn default_inertia() -> u32 {
    3
}

impl TryFrom<ZoneFields> for ZoneConfig {
    type Error = String;
    fn try_from(f: ZoneFields) -> Result<Self, String> {
        check_name("zone", &f.name)?;
        if f.points.len() < 3 {
            return Err(format!(
                "zone {:?} has {} points; a zone needs at least 3",
                f.name,
                f.points.len()
            ));
        }
        check_points("zone", &f.name, &f.points)?;
        if !(1..=1000).contains(&f.inertia) {
            return Err(format!(
                "zone {:?}: inertia {} is not between 1 and 1000 frames",
                f.name, f.inertia
            ));
        }
        if !(0.0..=86_400.0).contains(&f.loitering_s) {
            return Err(format!(
                "zone {:?}: loitering_s {} is not between 0 and 86400",
                f.name, f.loitering_s
            ));
        }
        Ok(Self {
            name: f.name,
            points: f.points,
            labels: f.labels,
            inertia: f.inertia,
            loitering_s: f.loitering_s,
        })
    }
}

/// `[[cameras.lines]]`: checked as it is read, so a mistake is reported with its line.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "LineFields")]
pub struct LineConfig {
    /// Letters, digits, `-` and `_`; unique among the camera's zones and lines.
    pub name: String,
    /// Exactly 2 points `[x, y]` in 0-1: the line goes from the first to the second, which
    /// names the crossing directions (`left`: onto the left of that arrow as drawn).
    pub points: [[f32; 2]; 2],
    /// Only objects with these labels count (empty: every label).
    pub labels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineFields {
    name: String,
    points: Polygon,
    #[serde(default)]
    labels: Vec<String>,
}

impl TryFrom<LineFields> for LineConfig {
    type Error = String;
    fn try_from(f: LineFields) -> Result<Self, String> {
        check_name("line", &f.name)?;
        let [a, b] = f.points[..] else {
            return Err(format!(
                "line {:?} has {} points; a line has exactly 2",
                f.name,
                f.points.len()
            ));
        };
        check_points("line", &f.name, &f.points)?;
        if (a[0] - b[0]).abs() < 1e-3 && (a[1] - b[1]).abs() < 1e-3 {
            return Err(format!("line {:?}: its two points are the same", f.name));
        }
        Ok(Self {
            name: f.name,
            points: [a, b],
            labels: f.labels,
        })
    }
}

fn check_name(what: &str, name: &str) -> Result<(), String> {
    if valid_camera_id(name) {
        Ok(())
    } else {
        Err(format!(
            "{what} name {name:?} must be 1-64 letters, digits, '-' or '_'"
        ))
    }
}

fn check_points(what: &str, name: &str, points: &[[f32; 2]]) -> Result<(), String> {
    match points
        .iter()
        .find(|p| !p.iter().all(|v| (0.0..=1.0).contains(v)))
    {
        Some(p) => Err(format!(
            "{what} {name:?} has the point [{}, {}]; coordinates are fractions of the frame, 0 to 1",
            p[0], p[1]
        )),
        None => Ok(()),
    }
}

/// Whether `p` lies inside `poly` (even-odd rule; both in the same coordinates).
pub fn point_in_polygon(poly: &[[f32; 2]], p: (f32, f32)) -> bool {
    let mut inside = false;
    let mut j = poly.len().wrapping_sub(1);
    for i in 0..poly.len() {
        let ([xi, yi], [xj, yj]) = (poly[i], poly[j]);
        if (yi > p.1) != (yj > p.1) && p.0 < (xj - xi) * (p.1 - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

fn yes() -> bool {
    true
}

/// `open_timeout_s` when a camera does not set it.
pub fn default_open_timeout_s() -> u64 {
    15
}

/// `read_timeout_s` when a camera does not set it.
pub fn default_read_timeout_s() -> u64 {
    10
}

/// How RTP packets travel from an RTSP camera.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    /// Interleaved in the RTSP TCP connection.
    #[default]
    Tcp,
    /// Separate UDP ports.
    Udp,
}

impl RtspTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
        }
    }

    /// The transport to suggest when this one does not get media through.
    pub fn other(self) -> RtspTransport {
        match self {
            RtspTransport::Tcp => RtspTransport::Udp,
            RtspTransport::Udp => RtspTransport::Tcp,
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let config = Self::read(path)?;
        config.validate(path)?;
        Ok(config)
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
}

impl Config {
    /// The `[[cameras]]` entry for camera `id`; for any other id (a replay's), the only entry
    /// when there is exactly one, so a camera's masks can be tried on a recording.
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
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn example_config_loads_and_matches_the_defaults_it_claims() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/ocellus.example.toml"
        ));
        let c = Config::load(path).unwrap();
        assert_eq!(c.cameras.len(), 2);
        assert_eq!(c.cameras[0].id, "street");
        assert!(!c.cameras[1].enabled);
        assert_eq!(c.detector.min_score_for("person"), 0.45);
        // Everything else in the file is the default, so the file documents them truthfully.
        let d = Config::default();
        assert_eq!(c.detector.labels_allow, d.detector.labels_allow);
        assert_eq!(c.tracker.min_hits, d.tracker.min_hits);
        assert_eq!(c.tracker.unseen_timeout_ms, d.tracker.unseen_timeout_ms);
        assert_eq!(c.tracker.min_move, d.tracker.min_move);
        assert_eq!(c.tracker.score_window, d.tracker.score_window);
        assert_eq!(c.tracker.stationary_after_ms, d.tracker.stationary_after_ms);
        assert_eq!(c.detector.keep_alive_score, d.detector.keep_alive_score);
        assert_eq!(c.motion.var_threshold, d.motion.var_threshold);
        assert_eq!(c.storage.batch_max, d.storage.batch_max);
        assert_eq!(c.detector.model, d.detector.model);
        assert_eq!(c.detector.family, d.detector.family);
        assert_eq!(
            (c.detector.input_width, c.detector.input_height),
            (d.detector.input_width, d.detector.input_height)
        );
        assert_eq!(c.detector.preprocess(), d.detector.preprocess());
    }

    #[test]
    fn model_configs_load_and_name_their_files() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models"));
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path().join("model.toml");
            if !path.exists() {
                continue;
            }
            let c = Config::load(&path).unwrap();
            assert_eq!(c.detector.kind, DetectorKind::Dnn, "{}", path.display());
            // Relative to the model's own directory, wherever the daemon starts.
            let here = path.parent().unwrap();
            assert_eq!(c.detector.model.parent(), Some(here), "{}", path.display());
            assert_eq!(c.detector.labels.parent(), Some(here), "{}", path.display());
            assert!(
                c.detector.labels.exists(),
                "{}",
                c.detector.labels.display()
            );
            seen += 1;
        }
        assert!(seen >= 2);
    }

    #[test]
    fn deployed_config_loads() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/ocellus.toml"));
        let c = Config::load(path).unwrap();
        assert!(c.storage.path.is_absolute() && c.detector.model.is_absolute());
        assert_eq!(c.server.listen, "127.0.0.1:8080");
    }

    #[test]
    fn demo_config_loads() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml"));
        let c = Config::load(path).unwrap();
        // Relative to the file: the clip setup.sh puts in media/.
        assert!(c.cameras[0].source.ends_with("config/../media/vtest.avi"));
        assert!(c.storage.path.ends_with("config/../ocellus-demo.db"));
    }

    #[test]
    fn network_listen_without_a_token_is_refused_unless_allowed() {
        let err = parse("[server]\nlisten = \"0.0.0.0:8080\"\n").unwrap_err();
        assert!(err.to_string().contains("set server.token"), "{err}");
        assert!(parse("[server]\nlisten = \"0.0.0.0:8080\"\ntoken = \"0123456789\"\n").is_ok());
        assert!(parse("[server]\nlisten = \"0.0.0.0:8080\"\nallow_no_token = true\n").is_ok());
        assert!(parse("[server]\nlisten = \"[::1]:8080\"\n").is_ok());
    }

    #[test]
    fn empty_config_is_all_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.detector.kind, DetectorKind::Auto);
        assert_eq!(c.tracker.min_hits, 10);
        assert!(c.cameras.is_empty());
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let err = parse("[tracker]\nmin_hits = 2\nmin_hitz = 3\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("test.toml:3:"), "{msg}");
        assert!(msg.contains("min_hitz"), "{msg}");
    }

    #[test]
    fn runtime_and_execution_providers_are_read_and_an_unknown_provider_names_its_line() {
        let cfg = parse(
            "[detector]\nruntime = \"onnxruntime\"\nonnxruntime_library = \"/opt/ort/libonnxruntime.so\"\nexecution_providers = [\"tensorrt\", \"cuda\", \"cpu\"]\nthreads = 2\n",
        )
        .unwrap();
        assert_eq!(cfg.detector.runtime, DetectorRuntime::Onnxruntime);
        assert_eq!(
            cfg.detector.onnxruntime_library.as_deref(),
            Some(Path::new("/opt/ort/libonnxruntime.so"))
        );
        assert_eq!(
            cfg.detector.execution_providers,
            [
                ExecutionProvider::Tensorrt,
                ExecutionProvider::Cuda,
                ExecutionProvider::Cpu
            ]
        );
        let defaults = Config::default().detector;
        assert_eq!(defaults.runtime, DetectorRuntime::Auto);
        assert_eq!(defaults.execution_providers, [ExecutionProvider::Cpu]);
        let err = parse("[detector]\n\nexecution_providers = [\"cpu\", \"npu\"]\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("test.toml:3:") && msg.contains("npu"),
            "{msg}"
        );
        let err = parse("[detector]\nruntime = \"tensorflow\"\n").unwrap_err();
        assert!(err.to_string().starts_with("test.toml:2:"), "{err}");
        let err = parse("[detector]\nthreads = -1\n").unwrap_err();
        assert!(err.to_string().contains("detector.threads"), "{err}");
    }

    #[test]
    fn zones_and_lines_are_checked_and_a_mistake_names_its_line() {
        let good = "[[cameras]]\nid = \"c\"\nsource = \"x.avi\"\n\
            [[cameras.zones]]\nname = \"drive\"\npoints = [[0.1, 0.5], [0.6, 0.5], [0.0, 1.0]]\nlabels = [\"car\"]\n\
            [[cameras.lines]]\nname = \"door\"\npoints = [[0.5, 0.2], [0.5, 0.9]]\n";
        let cfg = parse(good).unwrap();
        let cam = &cfg.cameras[0];
        assert_eq!(cam.zones[0].name, "drive");
        assert_eq!((cam.zones[0].inertia, cam.zones[0].loitering_s), (3, 0.0));
        assert_eq!(cam.zones[0].labels, ["car"]);
        assert_eq!(cam.lines[0].points, [[0.5, 0.2], [0.5, 0.9]]);
        let head = "[[cameras]]\nid = \"c\"\nsource = \"x.avi\"\n";
        for (bad, line, says) in [
            ("[[cameras.zones]]\nname = \"z\"\npoints = [[0.1, 0.5], [0.6, 0.5]]\n", 4, "at least 3"),
            ("[[cameras.zones]]\nname = \"z\"\npoints = [[0.1, 0.5], [1.6, 0.5], [0.0, 1.0]]\n", 4, "0 to 1"),
            ("[[cameras.zones]]\nname = \"a zone\"\npoints = [[0.1, 0.5], [0.6, 0.5], [0.0, 1.0]]\n", 4, "letters, digits"),
            ("[[cameras.lines]]\nname = \"l\"\npoints = [[0.1, 0.5], [0.6, 0.5], [0.0, 1.0]]\n", 4, "exactly 2"),
            ("[[cameras.lines]]\nname = \"l\"\npoints = [[0.1, 0.5], [0.1, 0.5]]\n", 4, "the same"),
        ] {
            let err = parse(&format!("{head}{bad}")).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("test.toml:{line}:")) && err.contains(says),
                "{bad}: {err}"
            );
        }
        let twice = format!(
            "{head}[[cameras.zones]]\nname = \"x\"\npoints = [[0.1, 0.5], [0.6, 0.5], [0.0, 1.0]]\n\
             [[cameras.lines]]\nname = \"x\"\npoints = [[0.5, 0.2], [0.5, 0.9]]\n"
        );
        let err = parse(&twice).unwrap_err().to_string();
        assert!(
            err.contains("cameras[0].lines") && err.contains("used twice"),
            "{err}"
        );
    }

    #[test]
    fn mqtt_section_is_read_checked_and_its_password_never_printed() {
        assert!(parse("").unwrap().mqtt.is_none(), "no section, no MQTT");
        let cfg = parse(
            "[mqtt]\nurl = \"mqtts://broker.local\"\ndevice_id = \"garage-pi\"\nusername = \"u\"\npassword = \"hunter2\"\n",
        )
        .unwrap();
        let m = cfg.mqtt.unwrap();
        assert_eq!(
            m.endpoint().unwrap(),
            MqttEndpoint {
                tls: true,
                host: "broker.local".into(),
                port: 8883
            }
        );
        assert_eq!(
            (m.qos, m.ha_discovery, m.topic_prefix.as_str()),
            (1, true, "ocellus")
        );
        assert_eq!(m.device(), "garage-pi");
        assert!(!format!("{m:?}").contains("hunter2"));
        let m = parse("[mqtt]\nurl = \"mqtt://10.0.0.5:1884\"\n")
            .unwrap()
            .mqtt
            .unwrap();
        assert_eq!(m.endpoint().unwrap().port, 1884);
        for (bad, key) in [
            ("url = \"http://broker\"", "mqtt.url"),
            ("url = \"mqtt://broker:port\"", "mqtt.url"),
            ("qos = 2", "mqtt.qos"),
            ("topic_prefix = \"a/#\"", "mqtt.topic_prefix"),
            ("device_id = \"my box\"", "mqtt.device_id"),
        ] {
            let err = parse(&format!("[mqtt]\n{bad}\n")).unwrap_err().to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
        let err = parse("[mqtt]\nurl = \"mqtt://b\"\nretain = true\n").unwrap_err();
        assert!(err.to_string().starts_with("test.toml:3:"), "{err}");
    }

    #[test]
    fn wrong_type_is_refused_with_its_line() {
        let err = parse("[storage]\n\n\nbatch_ms = \"fast\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("test.toml:4:"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }

    #[test]
    fn duplicate_camera_ids_are_refused() {
        let err = parse(
            "[[cameras]]\nid = \"a\"\nsource = \"x.avi\"\n[[cameras]]\nid = \"a\"\nsource = \"y.avi\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("cameras[1].id"), "{err}");
    }

    #[test]
    fn out_of_range_score_names_the_key() {
        let err = parse("[detector]\nmin_score = 1.5\n").unwrap_err();
        assert!(err.to_string().contains("detector.min_score"), "{err}");
        for tiles in [0, MAX_TILES + 1] {
            let err = parse(&format!("[detector]\ntiles = {tiles}\n")).unwrap_err();
            assert!(err.to_string().contains("detector.tiles"), "{err}");
        }
        assert_eq!(parse("[detector]\ntiles = 2\n").unwrap().detector.tiles, 2);
    }

    #[test]
    fn masks_are_checked_and_points_fall_inside_or_outside() {
        let ok = parse(
            "[[cameras]]\nid = \"a\"\nsource = \"x.avi\"\nobject_masks = [[[0.1, 0.1], [0.5, 0.1], [0.5, 0.5], [0.1, 0.5]]]\n",
        )
        .unwrap();
        let mask = &ok.camera("a").unwrap().object_masks[0];
        assert!(point_in_polygon(mask, (0.3, 0.3)));
        assert!(!point_in_polygon(mask, (0.6, 0.3)));
        let err = parse("[[cameras]]\nid = \"a\"\nsource = \"x.avi\"\nmotion_masks = [[[0.1, 0.1], [1.5, 0.1], [0.5, 0.5]]]\n")
            .unwrap_err();
        assert!(err.to_string().contains("cameras[0].motion_masks"), "{err}");
        assert!(err.to_string().contains("0 to 1"), "{err}");
        let err = parse("[[cameras]]\nid = \"a\"\nsource = \"x.avi\"\nobject_masks = [[[0.1, 0.1], [0.5, 0.1]]]\n")
            .unwrap_err();
        assert!(err.to_string().contains("at least 3"), "{err}");
    }

    #[test]
    fn per_label_score_overrides_the_default() {
        let c =
            parse("[detector]\nmin_score = 0.3\nmin_score_per_label = { person = 0.7 }\n").unwrap();
        assert_eq!(c.detector.min_score_for("person"), 0.7);
        assert_eq!(c.detector.min_score_for("car"), 0.3);
    }
}
