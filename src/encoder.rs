//! The live-frame encoder thread: JPEG-encodes a frame once per watched stream width (libjpeg-turbo
//! through OpenCV) and broadcasts it, and encodes nothing when nobody watches. One loop for the
//! daemon, which offers frames and skips them while the encoder is busy, and for replay, which
//! waits for it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use opencv::core::{Mat, Size};
use opencv::imgproc;
use opencv::prelude::*;
use tokio::sync::broadcast;

use crate::base::jpeg::JpegEncoder;
use crate::capture::Frame;
use crate::server::protocol::frame_message;
use crate::telemetry::metrics::{inc, CameraStats};

/// Where encoded frames go: per stream width (0: the frame's own), a broadcast channel.
pub(crate) type Outputs = Vec<(u32, broadcast::Sender<Bytes>)>;

/// Hands frames to the encoder thread; the thread ends when the handle is dropped.
pub(crate) struct EncoderHandle {
    tx: Sender<Arc<Frame>>,
    outputs: Outputs,
    stats: Arc<CameraStats>,
}

impl EncoderHandle {
    /// Whether any output has a receiver.
    fn watched(&self) -> bool {
        self.outputs.iter().any(|(_, tx)| tx.receiver_count() > 0)
    }

    /// Offers a frame without ever waiting: when the encoder is still busy with the previous
    /// frame this one is skipped (and counted). The daemon offers frames straight from capture,
    /// in parallel with detection: a viewer sees a frame about one encode after capture, and its
    /// `detections` message follows when the detector is done with it.
    pub(crate) fn offer(&self, frame: &Arc<Frame>) {
        if !self.watched() {
            return;
        }
        match self.tx.try_send(frame.clone()) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => inc(&self.stats.stream_skipped),
        }
    }

    /// Hands a frame over, waiting while the encoder is busy (replay never drops).
    pub(crate) fn send(&self, frame: Arc<Frame>) {
        if self.watched() {
            let _ = self.tx.send(frame);
        }
    }
}

/// Starts the encoder thread `enc-<camera>`.
pub(crate) fn spawn(
    camera: &str,
    outputs: Outputs,
    stats: Arc<CameraStats>,
    quality: u8,
) -> std::io::Result<(EncoderHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (id, out, st) = (camera.to_string(), outputs.clone(), stats.clone());
    let join = std::thread::Builder::new()
        .name(format!("enc-{camera}"))
        .spawn(move || encode_loop(&id, &out, &st, rx, quality))?;
    Ok((EncoderHandle { tx, outputs, stats }, join))
}

fn encode_loop(
    camera: &str,
    outputs: &Outputs,
    stats: &CameraStats,
    rx: Receiver<Arc<Frame>>,
    quality: u8,
) {
    let mut jpeg = JpegEncoder::new(quality);
    let mut scaled = Mat::default();
    for frame in rx {
        let (fw, fh) = (frame.mat.cols(), frame.mat.rows());
        for (width, tx) in outputs {
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
                    tracing::warn!(camera = %camera, error = %e, "scaling a live frame failed");
                    continue;
                }
                (&scaled, w, h)
            };
            let bytes = match jpeg.encode(img) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(camera = %camera, error = %e, "encoding a live frame failed");
                    continue;
                }
            };
            let msg = frame_message(camera, frame.seq, frame.ts_ms, w as u32, h as u32, bytes);
            stats.encode.add(t0.elapsed());
            inc(&stats.stream_encodes);
            let _ = tx.send(msg);
        }
    }
}
