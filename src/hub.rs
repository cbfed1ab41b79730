//! Fan-out of one camera's results to any number of clients: broadcast channels for detections
//! and for live frames at each stream width, and the encoder thread that JPEG-encodes a frame once
//! per watched width, and not at all when nobody watches.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use opencv::core::{Mat, Size};
use opencv::imgproc;
use opencv::prelude::*;
use tokio::sync::broadcast;

use crate::capture::live::SourceState;
use crate::capture::Frame;
use crate::jpeg::JpegEncoder;
use crate::metrics::{inc, CameraStats};
use crate::models::{Detection, DetectionsMsg, EventKind, EventMsg};
use crate::pipeline::Sink;
use crate::protocol::{frame_message, ServerMsg, STREAM_WIDTHS};

/// Live frames are replaceable: a client that falls behind skips to the newest. Two slots let a
/// client that is just a frame behind catch up without a `lagged` message.
const FRAME_CAPACITY: usize = 2;
/// Detections and events are small and clients want all of them; a client this far behind is
/// told how many it missed.
pub const MESSAGE_CAPACITY: usize = 256;

/// One camera as the server sees it.
pub struct CameraHub {
    pub id: String,
    pub state: Arc<SourceState>,
    pub stats: Arc<CameraStats>,
    /// The camera's object detector (`None`: motion only), as `/api/stats` reports it.
    pub detector: Option<crate::detect::DetectorInfo>,
    pub detections: broadcast::Sender<Utf8Bytes>,
    /// One channel per entry of [`STREAM_WIDTHS`].
    pub frames: Vec<(u32, broadcast::Sender<Bytes>)>,
}

impl CameraHub {
    pub fn new(
        id: &str,
        state: Arc<SourceState>,
        stats: Arc<CameraStats>,
        detector: Option<crate::detect::DetectorInfo>,
    ) -> Self {
        Self {
            id: id.to_string(),
            state,
            stats,
            detector,
            detections: broadcast::channel(MESSAGE_CAPACITY).0,
            frames: STREAM_WIDTHS
                .iter()
                .map(|&w| (w, broadcast::channel(FRAME_CAPACITY).0))
                .collect(),
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

    /// Whether any client watches live frames of this camera.
    pub fn frames_watched(&self) -> bool {
        self.frames.iter().any(|(_, tx)| tx.receiver_count() > 0)
    }
}

/// The detect thread's sink in the daemon: events to the events channel (and the journal),
/// detections to the camera's channel when anyone listens.
pub struct LiveSink {
    pub hub: Arc<CameraHub>,
    pub events: broadcast::Sender<Utf8Bytes>,
}

impl Sink for LiveSink {
    fn event(&mut self, msg: &EventMsg) {
        let e = &msg.event;
        let line = crate::events::describe(msg);
        // Starts, ends and stationary changes are what a person reads in the journal; a better
        // score on a running event is detail.
        if msg.kind == EventKind::Update && !line.important {
            tracing::debug!(
                camera = %e.camera, event_id = e.id, label = %e.label, kind = msg.kind.as_str(),
                score = e.top_score, track_id = e.track_id, "{}", line.text
            );
        } else {
            tracing::info!(
                camera = %e.camera, event_id = e.id, label = %e.label, kind = msg.kind.as_str(),
                score = e.top_score, track_id = e.track_id, "{}", line.text
            );
        }
        let json = ServerMsg::Event {
            kind: msg.kind,
            event: e,
        }
        .to_json();
        // No receivers is not an error: nobody is connected.
        let _ = self.events.send(Utf8Bytes::from(json));
    }

    fn wants_detections(&self) -> bool {
        self.hub.detections.receiver_count() > 0
    }

    fn detections(&mut self, msg: DetectionsMsg, _raw: &[Detection], _track_ids: &[u64]) {
        let json = ServerMsg::Detections(&msg).to_json();
        let _ = self.hub.detections.send(Utf8Bytes::from(json));
    }
}

/// Hands captured frames to the encoder without ever waiting: when it is still busy with the
/// previous frame this one is skipped (and counted). Frames go to the stream straight from
/// capture, in parallel with detection: a viewer sees a frame about one encode after capture,
/// and its `detections` message follows when the detector is done with it.
pub struct EncoderHandle {
    tx: Sender<Arc<Frame>>,
    hub: Arc<CameraHub>,
}

impl EncoderHandle {
    pub fn offer(&self, frame: &Arc<Frame>) {
        if !self.hub.frames_watched() {
            return;
        }
        match self.tx.try_send(frame.clone()) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => inc(&self.hub.stats.stream_skipped),
        }
    }
}

/// Starts the encoder thread `enc-<camera>`; it ends when the handle is dropped.
pub fn spawn_encoder(
    hub: Arc<CameraHub>,
    quality: u8,
) -> std::io::Result<(EncoderHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let h = hub.clone();
    let join = std::thread::Builder::new()
        .name(format!("enc-{}", hub.id))
        .spawn(move || encode_loop(h, rx, quality))?;
    Ok((EncoderHandle { tx, hub }, join))
}

fn encode_loop(hub: Arc<CameraHub>, rx: Receiver<Arc<Frame>>, quality: u8) {
    let mut jpeg = JpegEncoder::new(quality);
    let mut scaled = Mat::default();
    for frame in rx {
        let (fw, fh) = (frame.mat.cols(), frame.mat.rows());
        for (width, tx) in &hub.frames {
            if tx.receiver_count() == 0 {
                continue;
            }
            let t0 = Instant::now();
            let (img, w, h) = if *width == 0 || *width as i32 >= fw {
                (&frame.mat, fw, fh)
            } else {
                let w = *width as i32;
                let h = ((fh as i64 * w as i64) / fw.max(1) as i64).max(1) as i32;
                if let Err(e) = imgproc::resize(
                    &frame.mat,
                    &mut scaled,
                    Size::new(w, h),
                    0.0,
                    0.0,
                    imgproc::INTER_AREA,
                ) {
                    tracing::warn!(camera = %hub.id, error = %e, "scaling a live frame failed");
                    continue;
                }
                (&scaled, w, h)
            };
            let bytes = match jpeg.encode(img) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(camera = %hub.id, error = %e, "encoding a live frame failed");
                    continue;
                }
            };
            let msg = frame_message(&hub.id, frame.seq, frame.ts_ms, w as u32, h as u32, bytes);
            hub.stats.encode.add(t0.elapsed());
            inc(&hub.stats.stream_encodes);
            let _ = tx.send(msg);
        }
    }
}
