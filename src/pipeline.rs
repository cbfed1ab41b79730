//! The per-camera detect stage: motion gate -> object detector -> tracker -> events, and where
//! their results go (database writer, live subscribers). Runs on its own thread, fed by capture.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use opencv::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::capture::Frame;
use crate::config::{Config, DetectWhen};
use crate::db::{DbCommand, DbHandle};
use crate::detect::ObjectDetector;
use crate::events::{EventBuilder, EventIds, EventOutput, SnapshotOptions};
use crate::metrics::{inc, CameraStats};
use crate::models::{DetectionsMsg, EventKind, EventMsg, TrackedBox};
use crate::motion::{MotionDetector, MotionResult};
use crate::tracker::Tracker;

/// Where a pipeline's results go besides the database. Implementations must not block: they run
/// on the detect thread.
pub trait Sink: Send {
    fn event(&mut self, msg: &EventMsg);
    /// Whether anyone wants per-frame detections now; building them costs allocations.
    fn wants_detections(&self) -> bool {
        false
    }
    fn detections(&mut self, _msg: DetectionsMsg) {}
}

/// A sink that drops everything (a pipeline whose only output is the database).
pub struct NullSink;

impl Sink for NullSink {
    fn event(&mut self, _msg: &EventMsg) {}
}

pub struct Pipeline {
    camera: String,
    motion: Option<MotionDetector>,
    detector: Option<Box<dyn ObjectDetector>>,
    when: DetectWhen,
    /// Minimum time between detector runs, in the frames' clock (0: none).
    min_detect_interval_ms: i64,
    last_detect_ms: Option<i64>,
    tracker: Tracker,
    events: EventBuilder,
    db: Option<DbHandle>,
    sink: Box<dyn Sink>,
    pub stats: Arc<CameraStats>,
    last_ts_ms: i64,
}

impl Pipeline {
    /// `replay` ignores `detector.max_fps`: a replay processes every frame.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        camera: &str,
        cfg: &Config,
        detector: Option<Box<dyn ObjectDetector>>,
        ids: EventIds,
        db: Option<DbHandle>,
        sink: Box<dyn Sink>,
        stats: Arc<CameraStats>,
        replay: bool,
    ) -> opencv::Result<Self> {
        let motion = if cfg.motion.enabled {
            Some(MotionDetector::new(&cfg.motion)?)
        } else {
            None
        };
        let min_detect_interval_ms = if replay || cfg.detector.max_fps <= 0.0 {
            0
        } else {
            (1000.0 / cfg.detector.max_fps as f64).round() as i64
        };
        Ok(Self {
            camera: camera.to_string(),
            motion,
            detector,
            when: cfg.detector.when,
            min_detect_interval_ms,
            last_detect_ms: None,
            tracker: Tracker::new(cfg.tracker.clone()),
            events: EventBuilder::new(
                camera,
                ids,
                cfg.tracker.update_interval_ms,
                SnapshotOptions {
                    max_side: cfg.storage.snapshot_max_side,
                    quality: cfg.storage.snapshot_quality,
                },
            ),
            db,
            sink,
            stats,
            last_ts_ms: 0,
        })
    }

    /// Processes frames until the channel closes or `cancel` fires, then ends the open events.
    /// Each frame is handed to `then` once processed.
    pub fn run(
        &mut self,
        rx: Receiver<Frame>,
        cancel: &CancellationToken,
        mut then: impl FnMut(Frame),
    ) {
        // Capture closes the channel when it stops; the timeout only bounds how long a stop
        // waits when capture itself is stuck in a blocking read.
        while !cancel.is_cancelled() {
            match rx.recv_timeout(std::time::Duration::from_millis(100)) {
                Ok(frame) => {
                    self.process(&frame);
                    then(frame);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.finish();
    }

    /// Runs one frame through every stage.
    pub fn process(&mut self, frame: &Frame) {
        let stats = self.stats.clone();
        let ts = frame.ts_ms;
        self.last_ts_ms = ts;
        let t0 = Instant::now();
        let motion = match &mut self.motion {
            Some(m) => m.process(&frame.mat).unwrap_or_else(|e| {
                tracing::warn!(camera = %self.camera, error = %e, "motion detection failed on a frame");
                MotionResult {
                    motion: true,
                    ..Default::default()
                }
            }),
            None => MotionResult {
                motion: true,
                ..Default::default()
            },
        };
        let t1 = stats.motion.since(t0);

        let gate_open = match self.when {
            DetectWhen::Always => true,
            DetectWhen::Motion => motion.motion || !self.tracker.tracks().is_empty(),
        };
        let rate_ok = self
            .last_detect_ms
            .is_none_or(|last| ts - last >= self.min_detect_interval_ms);
        let mut ran = false;
        let mut dets = Vec::new();
        if let Some(detector) = self.detector.as_mut().filter(|_| gate_open && rate_ok) {
            match detector.detect(&frame.mat) {
                Ok(d) => {
                    dets = d;
                    ran = true;
                    self.last_detect_ms = Some(ts);
                    inc(&stats.detector_runs);
                }
                Err(e) => {
                    inc(&stats.detector_errors);
                    tracing::warn!(camera = %self.camera, error = %e, "detector failed on a frame");
                }
            }
        }
        let t2 = stats.detect.since(t1);

        let (changes, assigned) = if ran {
            self.tracker.update(ts, &dets)
        } else {
            (self.tracker.tick(ts), Vec::new())
        };
        let out = self
            .events
            .apply(changes, &self.tracker, Some(&frame.mat), ts);
        stats.track.since(t2);
        self.emit(out);

        if self.sink.wants_detections() {
            let tracks = dets
                .iter()
                .zip(&assigned)
                .filter_map(|(d, &tid)| {
                    let track = self.tracker.get(tid)?;
                    Some(TrackedBox {
                        track_id: tid,
                        label: d.label.clone(),
                        score: d.score,
                        bbox: d.bbox.rounded(),
                        confirmed: track.confirmed,
                        event_id: self.events.event_id(tid),
                    })
                })
                .collect();
            self.sink.detections(DetectionsMsg {
                camera: self.camera.clone(),
                seq: frame.seq,
                ts_ms: ts,
                width: frame.mat.cols() as u32,
                height: frame.mat.rows() as u32,
                detector_ran: ran,
                motion: motion.motion,
                tracks,
            });
        }
        inc(&stats.processed);
    }

    /// Ends every open event (the source ended or the daemon is stopping); their end time is
    /// when their object was last seen.
    pub fn finish(&mut self) {
        let changes = self.tracker.finish();
        let out = self
            .events
            .apply(changes, &self.tracker, None, self.last_ts_ms);
        self.emit(out);
    }

    fn emit(&mut self, out: EventOutput) {
        for msg in &out.messages {
            match msg.kind {
                EventKind::Start => inc(&self.stats.events_started),
                EventKind::End => inc(&self.stats.events_ended),
                EventKind::Update => {}
            }
            if let Some(db) = &self.db {
                // The event goes to the database before anyone is told about it.
                if db.send(DbCommand::Event(msg.event.clone())).is_err() {
                    tracing::error!(camera = %self.camera, "database writer is gone; event not stored");
                }
            }
            tracing::debug!(camera = %self.camera, event_id = msg.event.id, kind = ?msg.kind, label = %msg.event.label, "event");
            self.sink.event(msg);
        }
        for s in out.snapshots {
            inc(&self.stats.snapshot_encodes);
            if let Some(db) = &self.db {
                let _ = db.send(DbCommand::Snapshot {
                    event_id: s.event_id,
                    jpeg: s.jpeg,
                    width: s.width,
                    height: s.height,
                });
            }
        }
    }
}
