//! The replay reader: a video file read frame by frame, stamped with the video's own clock.

use std::path::Path;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use opencv::core::Mat;
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture};
use tokio_util::sync::CancellationToken;

use super::{sleep_unless_cancelled, Frame, Source, SourceOptions};
use crate::capture::CaptureError;
use crate::telemetry::metrics::CameraStats;

/// A video file opened for replay, with its first frame already decoded (which proves it is a
/// video before anything else is set up).
pub(crate) struct ReplayReader {
    name: String,
    cap: VideoCapture,
    first: Option<Mat>,
    pub fps: f64,
    /// Frame count from the container header, when it has one.
    pub announced_frames: Option<u64>,
    pub width: u32,
    pub height: u32,
}

impl ReplayReader {
    pub(crate) fn open(path: &Path) -> Result<Self, CaptureError> {
        let source = Source::File(path.to_owned());
        let name = source.display_name();
        let mut cap = source.open(&SourceOptions::default())?;
        let ocv = |source| CaptureError::OpenCv {
            source_name: name.clone(),
            source,
        };
        let mut first = Mat::default();
        let got = cap.read(&mut first).unwrap_or(false);
        if !got || first.empty() {
            return Err(CaptureError::NoFrames { source_name: name });
        }
        let fps = cap.get(videoio::CAP_PROP_FPS).map_err(ocv)?;
        let count = cap.get(videoio::CAP_PROP_FRAME_COUNT).map_err(ocv)?;
        Ok(Self {
            width: first.cols() as u32,
            height: first.rows() as u32,
            first: Some(first),
            fps: if fps.is_finite() && fps > 0.0 {
                fps
            } else {
                25.0
            },
            announced_frames: (count.is_finite() && count >= 1.0).then_some(count as u64),
            cap,
            name,
        })
    }

    /// Milliseconds since the start of the clip for frame `seq`: the frame's position on the
    /// video's own clock.
    pub(crate) fn timestamp_ms(&self, seq: u64) -> i64 {
        (seq as f64 * 1000.0 / self.fps).round() as i64
    }

    /// Reads every frame into `tx` (blocking when the detector is behind: replay never drops),
    /// paced at the file's fps when `realtime`. Returns the number of frames read. Stops early,
    /// without error, when `cancel` fires or the receiver is gone.
    pub(crate) fn run(
        mut self,
        tx: Sender<Frame>,
        realtime: bool,
        cancel: &CancellationToken,
        stats: &CameraStats,
    ) -> Result<u64, CaptureError> {
        let started = Instant::now();
        let mut seq = 0u64;
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let t0 = Instant::now();
            let mat = match self.first.take() {
                Some(m) => m,
                None => {
                    let mut m = Mat::default();
                    // A decode error mid-file ends the clip like EOF does; the caller compares
                    // the count with the header to report truncation.
                    match self.cap.read(&mut m) {
                        Ok(true) if !m.empty() => m,
                        _ => break,
                    }
                }
            };
            stats.decode.add(t0.elapsed());
            crate::telemetry::metrics::inc(&stats.captured);
            let ts_ms = self.timestamp_ms(seq);
            if realtime {
                let due = started + Duration::from_millis(ts_ms as u64);
                let wait = due.saturating_duration_since(Instant::now());
                if !sleep_unless_cancelled(wait, cancel) {
                    return Ok(seq);
                }
            }
            if tx.send(Frame { seq, ts_ms, mat }).is_err() {
                break;
            }
            seq += 1;
        }
        Ok(seq)
    }

    /// An error when fewer frames decoded than the header announced (by more than a small
    /// margin, since headers of some containers round).
    pub(crate) fn check_complete(
        name: &str,
        decoded: u64,
        announced: Option<u64>,
    ) -> Result<(), CaptureError> {
        match announced {
            Some(n) if decoded + 2 < n && decoded * 100 < n * 98 => Err(CaptureError::Truncated {
                source_name: name.to_string(),
                decoded,
                announced: n,
            }),
            _ => Ok(()),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}
