//! Recording: each camera's own compressed stream written to fragmented-MP4 segment files
//! (never decoded, never re-encoded), indexed in SQLite, kept within the disk's limits, and cut
//! into clips on request. docs/recording.md is the user's side of it.
//!
//! `recorder.rs` is the thread per camera, `ring.rs` its pre-roll, `segment.rs` one file being
//! written (and its repair after a crash), `store.rs` every camera's segments and retention,
//! `mp4.rs` the boxes, `clip.rs` a clip made from the segments.

mod clip;
pub(crate) mod mp4;
mod recorder;
pub(crate) mod replay;
mod ring;
mod segment;
mod store;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::capture::packets::{PacketClock, PacketOptions};
use crate::capture::Source;
use crate::config::{CameraConfig, Config, RecordMode};

pub(crate) use clip::{build_range_clip, ClipError};
pub(crate) use recorder::{spawn_recorder, Input, RecorderSettings, PACKET_CHANNEL};
pub(crate) use store::{Limits, Recordings};

/// What the server needs to cut clips: where the segments are, and each recording camera's
/// pre- and post-roll (ms).
pub(crate) struct ClipSettings {
    pub(crate) dir: PathBuf,
    pub(crate) cameras: std::collections::HashMap<String, ClipCamera>,
}

/// A recording camera, as its clips need it.
pub(crate) struct ClipCamera {
    pub(crate) pre_ms: i64,
    pub(crate) post_ms: i64,
    pub(crate) trigger: std::sync::Arc<Trigger>,
}

/// The URL path of an event's clip.
pub(crate) fn clip_path(event_id: i64) -> String {
    format!("/api/events/{event_id}/clip.mp4")
}

/// Where the recordings go: `[recordings] path`, or `recordings` beside the database.
pub(crate) fn recordings_dir(cfg: &Config) -> PathBuf {
    cfg.recordings.path.clone().unwrap_or_else(|| {
        let db = &cfg.storage.path;
        db.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("recordings")
    })
}

impl RecorderSettings {
    /// What `cam` records, or `None` when it does not: `off`, or `auto` on a source with no
    /// compressed stream to keep (a raw V4L2 device, a GStreamer pipeline that decodes).
    pub(crate) fn for_camera(cam: &CameraConfig) -> Option<RecorderSettings> {
        let source = Source::parse(cam.record_source.as_deref().unwrap_or(&cam.source));
        let recordable = source.carries_packets();
        let continuous = match cam.record.mode {
            RecordMode::Off => return None,
            RecordMode::Auto if !recordable => return None,
            RecordMode::Auto | RecordMode::Events => false,
            RecordMode::Continuous => true,
        };
        Some(RecorderSettings {
            camera: cam.id.clone(),
            own_source: cam.record_source.as_ref().map(|_| source),
            options: PacketOptions {
                rtsp_transport: cam.rtsp_transport,
                realtime: true,
                clock: PacketClock::Wall,
            },
            explicit: cam.record.mode != RecordMode::Auto,
            continuous,
            pre_ms: (cam.record.pre_s * 1000.0) as i64,
            post_ms: (cam.record.post_s * 1000.0) as i64,
            open_timeout: Duration::from_secs(cam.open_timeout_s),
            read_timeout: Duration::from_secs(cam.read_timeout_s),
        })
    }
}

/// What a camera's events tell its recorder: which are open, and when the last one ended.
/// Written by the camera's fan-out (the bus), read by its recorder.
#[derive(Default)]
pub(crate) struct Trigger {
    inner: Mutex<TriggerState>,
    /// Set when the stream turned out not to be recordable: its events link no clip.
    unrecordable: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct TriggerState {
    open: BTreeSet<i64>,
    /// The latest end of an ended event (Unix ms).
    ended_ms: Option<i64>,
}

impl Trigger {
    /// An event started, changed (`end_ms` None) or ended.
    pub(crate) fn event(&self, id: i64, end_ms: Option<i64>) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match end_ms {
            None => {
                s.open.insert(id);
            }
            Some(end) => {
                s.open.remove(&id);
                s.ended_ms = Some(s.ended_ms.map_or(end, |e| e.max(end)));
            }
        }
    }

    /// Whether the camera's events have clips (false once its stream proved unrecordable).
    pub(crate) fn records(&self) -> bool {
        !self.unrecordable.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn set_unrecordable(&self) {
        self.unrecordable
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a packet at `t_ms` belongs in a recording: an event is open, or the last one
    /// ended at most `post_ms` before.
    pub(crate) fn wants(&self, t_ms: i64, post_ms: i64) -> bool {
        let s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        !s.open.is_empty() || s.ended_ms.is_some_and(|end| t_ms <= end + post_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_events_keep_recording_until_the_last_post_roll() {
        let t = Trigger::default();
        assert!(!t.wants(0, 5000));
        t.event(1, None);
        t.event(2, None);
        t.event(1, Some(10_000));
        assert!(t.wants(100_000, 5000), "event 2 is still open");
        t.event(2, Some(20_000));
        assert!(t.wants(25_000, 5000));
        assert!(!t.wants(25_001, 5000));
    }
}
