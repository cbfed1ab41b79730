//! `[cameras.record]` and `[recordings]`: what each camera records, and where and for how long
//! the recordings are kept (docs/recording.md).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// When a camera records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordMode {
    /// `events` where the stream can be recorded (a file or an RTSP camera, or a
    /// `record_source`), `off` where it cannot (a raw V4L2 device, a decoding GStreamer pipeline).
    #[default]
    Auto,
    Off,
    /// The pre-roll, each event and its post-roll; overlapping events share one recording.
    Events,
    /// Everything, all the time.
    Continuous,
}

/// `[cameras.record]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordConfig {
    /// `"off"`, `"events"` or `"continuous"`; unset: `events` where the camera's stream can be
    /// recorded.
    pub mode: RecordMode,
    /// Seconds kept before an event starts (the pre-roll, from a RAM ring of packets).
    pub pre_s: f32,
    /// Seconds kept after an event ends.
    pub post_s: f32,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            mode: RecordMode::Auto,
            pre_s: 5.0,
            post_s: 5.0,
        }
    }
}

/// `[recordings]`: the one place every camera's recordings go, and the limits that keep a small
/// box's disk from filling. The oldest recordings go first, whichever limit is reached.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingsConfig {
    /// Directory of the segment files (one folder per camera); unset: `recordings` beside the
    /// database.
    pub path: Option<PathBuf>,
    /// The recordings take at most this many bytes in all (0: no limit but the others).
    pub max_bytes: u64,
    /// Recordings older than this many days are deleted (0: kept while there is room).
    pub max_age_days: u32,
    /// Keep at least this many bytes free on the recordings' file system: the oldest recordings
    /// are deleted to keep it, and recording pauses when deleting cannot.
    pub min_free_bytes: u64,
}

impl Default for RecordingsConfig {
    fn default() -> Self {
        Self {
            path: None,
            max_bytes: 0,
            max_age_days: 30,
            min_free_bytes: 1 << 30,
        }
    }
}
