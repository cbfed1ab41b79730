//! One camera as the server sees it: its source state, counters and detector, what clients draw
//! over its picture, and the broadcast channels its detections and live frames (one per stream
//! width) reach clients through.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use tokio::sync::broadcast;

use crate::capture::live::SourceState;
use crate::config::{CameraConfig, Polygon};
use crate::server::protocol::{CameraInfo, Shape, STREAM_WIDTHS};
use crate::telemetry::metrics::CameraStats;

/// Live frames are replaceable: a client that falls behind skips to the newest. Two slots let a
/// client that is just a frame behind catch up without a `lagged` message.
const FRAME_CAPACITY: usize = 2;
/// Detections and events are small and clients want all of them; a client this far behind is
/// told how many it missed. The typed event bus to in-process consumers (MQTT) has the same room.
pub(crate) const MESSAGE_CAPACITY: usize = 256;

/// What clients draw over a camera's picture: its masks, zones and lines as configured.
#[derive(Clone, Debug, Default)]
pub struct Overlay {
    pub object_masks: Vec<Polygon>,
    pub motion_masks: Vec<Polygon>,
    pub zones: Vec<Shape>,
    pub lines: Vec<Shape>,
}

impl Overlay {
    /// The overlay of `camera`'s config.
    pub fn of(camera: &CameraConfig) -> Self {
        let (zones, lines) = Shape::of(camera);
        Self {
            object_masks: camera.object_masks.clone(),
            motion_masks: camera.motion_masks.clone(),
            zones,
            lines,
        }
    }
}

/// One camera as the server sees it.
pub struct CameraHub {
    pub id: String,
    pub state: Arc<SourceState>,
    pub overlay: Overlay,
    pub stats: Arc<CameraStats>,
    /// The camera's object detector (`None`: motion only), as `/api/stats` reports it.
    pub detector: Option<crate::pipeline::detect::DetectorInfo>,
    pub detections: broadcast::Sender<Utf8Bytes>,
    /// One channel per entry of [`STREAM_WIDTHS`].
    pub frames: Vec<(u32, broadcast::Sender<Bytes>)>,
    /// The camera's own compressed stream, when its source has one (a file or RTSP camera);
    /// `None` for a source of decoded pictures (V4L2, a GStreamer pipeline).
    pub(crate) video: Option<Arc<crate::server::video::LiveVideo>>,
}

impl CameraHub {
    pub fn new(
        id: &str,
        state: Arc<SourceState>,
        overlay: Overlay,
        stats: Arc<CameraStats>,
        detector: Option<crate::pipeline::detect::DetectorInfo>,
    ) -> Self {
        Self {
            id: id.to_string(),
            state,
            overlay,
            stats,
            detector,
            detections: broadcast::channel(MESSAGE_CAPACITY).0,
            frames: STREAM_WIDTHS
                .iter()
                .map(|&w| (w, broadcast::channel(FRAME_CAPACITY).0))
                .collect(),
            video: None,
        }
    }

    /// The camera's live video.
    pub(crate) fn with_video(
        mut self,
        video: Option<Arc<crate::server::video::LiveVideo>>,
    ) -> Self {
        self.video = video;
        self
    }

    /// As announced to clients: the source's state with the overlay.
    pub fn info(&self) -> CameraInfo {
        let o = &self.overlay;
        CameraInfo {
            status: self.state.current(),
            object_masks: o.object_masks.clone(),
            motion_masks: o.motion_masks.clone(),
            zones: o.zones.clone(),
            lines: o.lines.clone(),
        }
    }

    pub fn frames_for(&self, width: u32) -> &broadcast::Sender<Bytes> {
        &self
            .frames
            .iter()
            .find(|(w, _)| *w == width)
            .unwrap_or(&self.frames[0])
            .1
    }
}
