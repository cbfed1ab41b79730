//! Replay's stages ahead of the pipeline, for throughput on a recording that must not drop a
//! frame: motion on its own thread, and a pool of detectors working on consecutive frames,
//! put back in order. The live daemon uses neither (its frames come through a newest-wins slot).

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;

use crate::capture::Frame;
use crate::config::DetectWhen;
use crate::pipeline::detect::{DetectError, ObjectDetector};
use crate::pipeline::motion::{MotionDetector, MotionResult};
use crate::pipeline::values::Detection;
use crate::telemetry::metrics::CameraStats;

use super::{detect_motion, DetectRate};

/// Runs motion detection on its own thread, in frame order, so that it overlaps the object
/// detector working on the previous frame. Ends when `rx` closes or `tx`'s receiver is gone.
pub(crate) fn motion_stage(
    mut motion: Option<MotionDetector>,
    camera: &str,
    stats: &CameraStats,
    rx: Receiver<Frame>,
    tx: crossbeam_channel::Sender<(Frame, MotionResult)>,
) {
    for frame in rx {
        let t0 = Instant::now();
        let m = detect_motion(motion.as_mut(), &frame, camera);
        stats.motion.since(t0);
        if tx.send((frame, m)).is_err() {
            break;
        }
    }
}

/// A frame with its motion result and, once a worker has been at it, its detections.
pub(crate) type Detected = (
    Frame,
    MotionResult,
    Option<Result<Vec<Detection>, DetectError>>,
);

/// Several detectors (one per worker thread, each its own network state) working on
/// consecutive frames at once, with the results put back in frame order. On a 2-core box two
/// single-stream DNN inferences in parallel get ~35% more frames through than one inference
/// using both cores, whose layers do not all parallelise.
///
/// The workers detect the frames due at `detector.fps` and (with `detector.when = "motion"`)
/// with motion, both known before the tracker sees the frame; any other frame comes back
/// undetected, and the pipeline detects it itself if its tracker needs it (a track to follow,
/// a young or crowded track between the rate's slots; see [`Pipeline::run`]). The detector
/// thus runs on exactly the frames it would run on without the pool, and the events are the
/// same.
pub(crate) struct DetectorPool {
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl DetectorPool {
    /// Starts one worker per detector. Frames come from `rx` in order; `tx` gets them back in
    /// the same order with their detections. Stops when `rx` closes or `tx`'s receiver is gone.
    pub(crate) fn start(
        detectors: Vec<Box<dyn ObjectDetector>>,
        (when, rate): (DetectWhen, DetectRate),
        camera: &str,
        stats: Arc<CameraStats>,
        rx: Receiver<(Frame, MotionResult)>,
        tx: crossbeam_channel::Sender<Detected>,
    ) -> std::io::Result<Self> {
        let n = detectors.len().max(1);
        // Frames go to the workers round-robin by arrival; results come back on one channel and
        // are reordered by sequence number.
        let (done_tx, done_rx) = crossbeam_channel::bounded::<(u64, Detected)>(2 * n);
        let mut inputs = Vec::new();
        let mut workers = Vec::new();
        for (i, mut det) in detectors.into_iter().enumerate() {
            let (in_tx, in_rx) = crossbeam_channel::bounded::<(u64, bool, Frame, MotionResult)>(1);
            inputs.push(in_tx);
            let (done_tx, stats) = (done_tx.clone(), stats.clone());
            workers.push(
                std::thread::Builder::new()
                    .name(format!("dnn{i}-{camera}"))
                    .spawn(move || {
                        for (order, due, frame, motion) in in_rx {
                            let wanted = when == DetectWhen::Always || motion.motion;
                            let result = (due && wanted).then(|| {
                                let t0 = Instant::now();
                                let result = det.detect(&frame.mat);
                                stats.detect.since(t0);
                                result
                            });
                            if done_tx.send((order, (frame, motion, result))).is_err() {
                                break;
                            }
                        }
                    })?,
            );
        }
        drop(done_tx);
        workers.push(
            std::thread::Builder::new()
                .name(format!("dnn-feed-{camera}"))
                .spawn(move || {
                    // Whether a frame is due depends on its time and the previous frame's only,
                    // so this thread decides as the pipeline would.
                    let mut prev = None;
                    for (order, (frame, motion)) in (0u64..).zip(rx) {
                        let due = rate.due(prev, frame.ts_ms);
                        prev = Some(frame.ts_ms);
                        if inputs[order as usize % inputs.len()]
                            .send((order, due, frame, motion))
                            .is_err()
                        {
                            break;
                        }
                    }
                })?,
        );
        workers.push(
            std::thread::Builder::new()
                .name(format!("dnn-order-{camera}"))
                .spawn(move || {
                    let mut next = 0u64;
                    let mut waiting = std::collections::BTreeMap::new();
                    for (order, item) in done_rx {
                        waiting.insert(order, item);
                        while let Some(item) = waiting.remove(&next) {
                            if tx.send(item).is_err() {
                                return;
                            }
                            next += 1;
                        }
                    }
                })?,
        );
        Ok(Self { workers })
    }

    /// Waits for every worker; false if one panicked.
    pub(crate) fn join(self) -> bool {
        let mut ok = true;
        for w in self.workers {
            ok &= w.join().is_ok();
        }
        ok
    }
}
