//! The per-camera detect stage: motion gate -> object detector -> tracker -> events, handed as
//! typed values to a [`Sink`]. Runs on its own thread, fed by capture; knows nothing of where
//! its results go (the fan-out stage, `bus`, does).

pub(crate) mod appearance;
pub mod detect;
pub(crate) mod events;
pub(crate) mod motion;
pub(crate) mod tracker;
pub mod values;
pub(crate) mod zones;

mod feed;
mod pool;
mod schedule;
#[cfg(test)]
mod tests;

use std::borrow::Borrow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opencv::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::capture::Frame;
use crate::config::{Config, DetectWhen};
use crate::counts::{Buckets, CountsUpdate, LineTotal};
use crate::pipeline::appearance::Appearance;
use crate::pipeline::detect::regions::{self, Plan};
use crate::pipeline::detect::{DetectError, ObjectDetector};
use crate::pipeline::events::{EventBuilder, EventIds, EventOutput, Snapshot, SnapshotOptions};
use crate::pipeline::motion::{MotionDetector, MotionResult};
use crate::pipeline::tracker::Tracker;
use crate::pipeline::values::{BBox, Detection, DetectionsMsg, EventKind, EventMsg, TrackedBox};
use crate::pipeline::zones::{Direction, Zones};
use crate::telemetry::live_counts::LiveCounts;
use crate::telemetry::metrics::{inc, CameraStats};
pub(crate) use feed::{Feed, Next, Staged};
pub(crate) use pool::{motion_stage, Detected, DetectorPool};
use schedule::motion_touches;
pub(crate) use schedule::DetectRate;

/// With `detector.regions`, the whole frame is looked at at least this often (the frames'
/// clock): what stands still where nothing moves and nothing is tracked is found within it.
const FULL_FRAME_MS: i64 = 5_000;

/// Where a pipeline's results go. Implementations run on the detect thread: they may wait for
/// the database writer's bounded queue (back-pressure) but for nothing else.
pub(crate) trait Sink: Send {
    /// An event started, changed or ended.
    fn event(&mut self, msg: EventMsg);
    /// A better snapshot of an event, encoded.
    fn snapshot(&mut self, snapshot: Snapshot);
    /// Whether anyone wants per-frame detections now; building them costs allocations.
    fn wants_detections(&self) -> bool {
        false
    }
    /// One processed frame's tracked boxes; and every detection the tracker was handed (weak
    /// and unmatched ones too) with the id of the track each went to (0: none).
    fn detections(&mut self, _msg: DetectionsMsg, _raw: &[Detection], _track_ids: &[u64]) {}
    /// Additions to the counts over time, minutes that closed, and the lines' totals
    /// (src/counts/): every few seconds of the frames' clock, and at the end.
    fn counts(&mut self, _update: CountsUpdate) {}
}

/// Motion for one frame; a failure counts as motion, so the detector still runs.
fn detect_motion(motion: Option<&mut MotionDetector>, frame: &Frame, camera: &str) -> MotionResult {
    let everything = MotionResult {
        motion: true,
        ..Default::default()
    };
    match motion {
        Some(m) => m.process(&frame.mat).unwrap_or_else(|e| {
            tracing::warn!(camera = %camera, error = %e, "motion detection failed on a frame");
            everything
        }),
        None => everything,
    }
}

/// Whether the bottom-centre of `det` (where an object stands) lies in one of `masks`, given in
/// fractions of a `w` x `h` frame.
fn in_masks(masks: &[crate::config::Polygon], det: &Detection, w: f32, h: f32) -> bool {
    let (x, y) = det.bbox.foot();
    let p = (x / w, y / h);
    masks.iter().any(|m| crate::config::point_in_polygon(m, p))
}

pub(crate) struct Pipeline {
    camera: String,
    motion: Option<MotionDetector>,
    detector: Option<Box<dyn ObjectDetector>>,
    when: DetectWhen,
    /// The detector's own rate (`detector.fps`, or the camera's `detector_fps`).
    rate: DetectRate,
    /// The latest frame's time: with `rate`, whether the next is due; the end time of what is
    /// still open at a stop.
    prev_ts_ms: Option<i64>,
    /// When the detector last ran: the tracks seen then are carried on their predicted paths
    /// until it runs again.
    last_detect_ms: Option<i64>,
    /// With `detector.regions`: the network's input size, and when it last saw the whole frame.
    regions: Option<((u32, u32), Option<i64>)>,
    tracker: Tracker,
    /// The camera's object masks (relative polygons): detections whose bottom-centre is inside
    /// one are dropped before tracking.
    object_masks: Vec<crate::config::Polygon>,
    events: EventBuilder,
    /// The camera's zones and counting lines, followed per track.
    zones: Zones,
    /// The counts over time being gathered, and the zones' occupancy in the latest frame.
    buckets: Buckets,
    occupancy: Vec<u64>,
    sink: Box<dyn Sink>,
    pub stats: Arc<CameraStats>,
}

impl Pipeline {
    pub(crate) fn new(
        camera: &str,
        cfg: &Config,
        detector: Option<Box<dyn ObjectDetector>>,
        ids: EventIds,
        sink: Box<dyn Sink>,
        stats: Arc<CameraStats>,
    ) -> opencv::Result<Self> {
        let camera_cfg = cfg.camera(camera);
        let motion = if cfg.motion.enabled {
            let masks = camera_cfg
                .map(|c| c.motion_masks.clone())
                .unwrap_or_default();
            Some(MotionDetector::new(&cfg.motion, masks)?)
        } else {
            None
        };
        let zones = Zones::new(camera_cfg);
        *stats.zones.lock().unwrap_or_else(|p| p.into_inner()) =
            LiveCounts::new(zones.zone_names(), zones.line_names());
        let buckets = buckets_for(camera, &zones, &[]);
        Ok(Self {
            camera: camera.to_string(),
            motion,
            detector,
            when: cfg.detector.when,
            rate: DetectRate::new(cfg.detector_fps(camera)),
            prev_ts_ms: None,
            last_detect_ms: None,
            regions: cfg
                .detector
                .regions
                .then_some(((cfg.detector.input_width, cfg.detector.input_height), None)),
            tracker: Tracker::new(cfg.tracker.clone()),
            object_masks: camera_cfg
                .map(|c| c.object_masks.clone())
                .unwrap_or_default(),
            events: EventBuilder::new(
                camera,
                ids,
                cfg.tracker.update_interval_ms,
                SnapshotOptions {
                    max_side: cfg.storage.snapshot_max_side,
                    quality: cfg.storage.snapshot_quality,
                },
            ),
            zones,
            buckets,
            occupancy: Vec::new(),
            sink,
            stats,
        })
    }

    /// Continues the lines' crossing totals from `totals` (the database's, so that counters
    /// survive a restart) instead of 0.
    pub(crate) fn continue_totals(&mut self, totals: &[LineTotal]) {
        self.buckets = buckets_for(&self.camera, &self.zones, totals);
        let mut counts = self.stats.zones.lock().unwrap_or_else(|p| p.into_inner());
        for t in totals {
            counts.continue_totals(&t.line, t.left, t.right);
        }
    }

    /// Processes what `feed` delivers until it closes or `cancel` fires, then ends the open
    /// events. Each frame is handed to `then` once processed. The one way to run a pipeline:
    /// the daemon feeds it from a newest-wins slot of captured frames, replay from an in-order
    /// channel of frames whose motion (and, with a detector pool, detections) are already found.
    pub(crate) fn run<F: Borrow<Frame>, T: Into<Staged<F>>>(
        &mut self,
        feed: &impl Feed<Item = T>,
        cancel: &CancellationToken,
        mut then: impl FnMut(F),
    ) {
        // The feed's timeout only bounds how long a stop waits when its producer is stuck in a
        // blocking read.
        while !cancel.is_cancelled() {
            match feed.next(Duration::from_millis(100)) {
                Next::Item(item) => {
                    let frame = self.step(item.into());
                    then(frame);
                }
                Next::Idle => {}
                Next::Closed => break,
            }
        }
        self.finish();
    }

    /// Runs one item through the stages it has not been through yet.
    fn step<F: Borrow<Frame>>(&mut self, item: Staged<F>) -> F {
        match item {
            Staged::Captured(frame) => {
                let t0 = Instant::now();
                let motion = detect_motion(self.motion.as_mut(), frame.borrow(), &self.camera);
                self.stats.motion.since(t0);
                self.after_motion(frame.borrow(), motion);
                frame
            }
            Staged::Moved(frame, motion) => {
                self.after_motion(frame.borrow(), motion);
                frame
            }
            Staged::Detected(frame, motion, result) => {
                // The pool leaves frames without motion to us: the tracker's state decides.
                let result = match result {
                    Some(result) => Some(result),
                    None => self.detect_if_due(frame.borrow(), &motion),
                };
                self.track(frame.borrow(), motion, result);
                frame
            }
        }
    }

    /// Takes the motion detector out, for a caller that runs motion on its own thread (see
    /// [`motion_stage`]) and feeds the results to [`Pipeline::run`] in frame order.
    pub(crate) fn take_motion(&mut self) -> Option<MotionDetector> {
        self.motion.take()
    }

    /// Runs one frame through the stages after motion, given its motion result.
    fn after_motion(&mut self, frame: &Frame, motion: MotionResult) {
        let result = self.detect_if_due(frame, &motion);
        self.track(frame, motion, result);
    }

    /// Runs the detector when the frame is due at `detector.fps` and `detector.when` says so:
    /// always, or while there is motion or a track that moves (an object that stays put is
    /// not looked for again until motion touches it). `None`: it did not run.
    fn detect_if_due(
        &mut self,
        frame: &Frame,
        motion: &MotionResult,
    ) -> Option<Result<Vec<Detection>, DetectError>> {
        let gate_open = match self.when {
            DetectWhen::Always => true,
            DetectWhen::Motion => {
                motion.motion || self.tracker.tracks().iter().any(|t| !t.stationary)
            }
        };
        if !gate_open || self.detector.is_none() {
            return None;
        }
        let due = self.rate.due(self.prev_ts_ms, frame.ts_ms) || {
            let ts = frame.ts_ms;
            let tracks: Vec<(BBox, bool)> = self
                .tracker
                .tracks()
                .iter()
                .map(|t| (t.predict(ts), !self.tracker.established(t)))
                .collect();
            schedule::needs_detection(&tracks, motion)
        };
        if !due {
            return None;
        }
        let plan = self.plan(frame, motion);
        let detector = self.detector.as_mut()?;
        let t0 = Instant::now();
        let result = match plan {
            Plan::Frame => detector.detect(&frame.mat),
            Plan::Crops(crops) => {
                self.stats
                    .detector_crops
                    .fetch_add(crops.len() as u64, std::sync::atomic::Ordering::Relaxed);
                detector.detect_crops(&frame.mat, &crops)
            }
        };
        self.stats.detect.since(t0);
        Some(result)
    }

    /// Where the detector looks in `frame` (`detector.regions`): crops around its moving blobs
    /// and its tracks' predicted boxes; the whole frame when regions are off, when motion does
    /// not say where (a light change, motion off), when crops would cover most of it, and at
    /// least every `FULL_FRAME_MS`.
    fn plan(&mut self, frame: &Frame, motion: &MotionResult) -> Plan {
        let Some((model, last_full)) = self.regions.as_mut() else {
            return Plan::Frame;
        };
        let ts = frame.ts_ms;
        let unknown = motion.light_change || (motion.motion && motion.regions.is_empty());
        let plan = if unknown || last_full.is_none_or(|t| ts - t >= FULL_FRAME_MS) {
            Plan::Frame
        } else {
            let boxes: Vec<BBox> = motion
                .regions
                .iter()
                .copied()
                .chain(self.tracker.tracks().iter().map(|t| t.predict(ts)))
                .collect();
            let size = (frame.mat.cols() as u32, frame.mat.rows() as u32);
            regions::plan(size, *model, &boxes)
        };
        if plan == Plan::Frame {
            *last_full = Some(ts);
        }
        plan
    }

    /// Runs one frame through tracking and events, given its motion result and what the
    /// detector found on it (`None`: the detector did not run).
    fn track(
        &mut self,
        frame: &Frame,
        motion: MotionResult,
        result: Option<Result<Vec<Detection>, DetectError>>,
    ) {
        let stats = self.stats.clone();
        let ts = frame.ts_ms;
        self.prev_ts_ms = Some(ts);
        let (ran, mut dets) = match self.detections_of(frame, result) {
            Some(d) => (true, d),
            None => (false, Vec::new()),
        };
        let t2 = Instant::now();
        // Colour signatures for the confident boxes, which start and continue tracks across
        // crossings; weak boxes only continue a track they overlap by half, on geometry alone,
        // and there are many of them. A box whose signature cannot be taken is tracked on
        // geometry alone too.
        for d in dets.iter_mut().filter(|d| !d.weak) {
            d.appearance = Appearance::of(&frame.mat, d.bbox).ok().flatten();
        }

        // Objects that stay put where nothing moves are not expected to be seen again.
        self.tracker.hold(ts, |t| !motion_touches(&motion, &t.bbox));
        let (changes, assigned) = if ran {
            let size = (frame.mat.cols() as f32, frame.mat.rows() as f32);
            self.tracker.update(ts, size, &dets)
        } else {
            (self.tracker.tick(ts), Vec::new())
        };
        // The tracks in this frame, each once: those the detections went to, on their smoothed
        // boxes; between detector runs, those seen at the last run, on their predicted paths.
        let seen = self.seen(ts, ran, &assigned);
        let mut out = self
            .events
            .apply(changes, &self.tracker, Some(&frame.mat), ts);
        if !self.zones.is_empty() {
            self.follow_zones(frame, &seen, &mut out);
        }
        let counts_due = self.buckets.frame(ts, &self.occupancy);
        stats.track.since(t2);
        self.emit(out);
        if counts_due {
            if let Some(update) = self.buckets.take(ts, false) {
                self.sink.counts(update);
            }
        }

        if self.sink.wants_detections() {
            let msg = self.detections_msg(frame, ran, motion.motion, &seen);
            self.sink.detections(msg, &dets, &assigned);
        }
        inc(&stats.processed);
    }

    /// The detector's boxes for `frame`, outside the object masks (`None`: it did not run, or
    /// failed, which is counted and logged).
    fn detections_of(
        &mut self,
        frame: &Frame,
        result: Option<Result<Vec<Detection>, DetectError>>,
    ) -> Option<Vec<Detection>> {
        match result? {
            Ok(mut d) => {
                if !self.object_masks.is_empty() {
                    let (w, h) = (frame.mat.cols() as f32, frame.mat.rows() as f32);
                    d.retain(|det| !in_masks(&self.object_masks, det, w, h));
                }
                self.last_detect_ms = Some(frame.ts_ms);
                inc(&self.stats.detector_runs);
                Some(d)
            }
            Err(e) => {
                inc(&self.stats.detector_errors);
                tracing::warn!(camera = %self.camera, error = %e, "detector failed on a frame");
                None
            }
        }
    }

    /// What clients draw over `frame`: the tracks `seen` in it (on their smoothed boxes, or
    /// predicted when the detector did not run), with their events and zones.
    fn detections_msg(
        &self,
        frame: &Frame,
        ran: bool,
        motion: bool,
        seen: &[(u64, BBox)],
    ) -> DetectionsMsg {
        let tracks = seen
            .iter()
            .filter_map(|&(tid, bbox)| {
                let track = self.tracker.get(tid)?;
                Some(TrackedBox {
                    track_id: tid,
                    label: track.label.clone(),
                    score: track.score,
                    bbox: bbox.rounded(),
                    confirmed: track.confirmed,
                    event_id: self.events.event_id(tid),
                    stationary: track.stationary,
                    predicted: !ran,
                    zones: self.zones.current(tid),
                })
            })
            .collect();
        DetectionsMsg {
            camera: self.camera.clone(),
            seq: frame.seq,
            ts_ms: frame.ts_ms,
            width: frame.mat.cols() as u32,
            height: frame.mat.rows() as u32,
            detector_ran: ran,
            motion,
            tracks,
        }
    }

    /// The tracks in the frame at `ts` with their boxes, in track order. With the detector run
    /// (`ran`): those its detections were assigned to (`assigned`), on the filtered box. Without:
    /// those seen when it last ran, where their motion takes them now (a stationary object
    /// stays where it is), so live boxes and zones follow objects between detector runs.
    fn seen(&self, ts: i64, ran: bool, assigned: &[u64]) -> Vec<(u64, BBox)> {
        let mut seen: Vec<(u64, BBox)> = if ran {
            assigned
                .iter()
                .filter_map(|&t| self.tracker.get(t).map(|tr| (t, tr.bbox)))
                .collect()
        } else {
            self.tracker
                .tracks()
                .iter()
                .filter(|t| self.last_detect_ms == Some(t.last_seen_ms))
                .map(|t| {
                    let bbox = if t.stationary { t.bbox } else { t.predict(ts) };
                    (t.id, bbox)
                })
                .collect()
        };
        seen.sort_by_key(|(t, _)| *t);
        seen.dedup_by_key(|(t, _)| *t);
        seen
    }

    /// Zones and lines for the tracks in this frame (`seen`, from [`Pipeline::seen`]): events
    /// get what their objects did, the counts are brought up to date.
    fn follow_zones(&mut self, frame: &Frame, seen: &[(u64, BBox)], out: &mut EventOutput) {
        let (w, h) = (frame.mat.cols() as f32, frame.mat.rows() as f32);
        let tracker = &self.tracker;
        let happened = self.zones.update(
            frame.ts_ms,
            w,
            h,
            seen.iter()
                .filter_map(|&(t, b)| tracker.get(t).map(|tr| (t, tr.label.as_str(), b))),
        );
        self.zones.retain(|t| tracker.get(t).is_some());
        let mut changed: Vec<u64> = happened.iter().map(|(t, _)| *t).collect();
        changed.dedup();
        let news = self.events.sync_zones(&self.zones, &changed, out);
        // Objects in a zone: those with an event (confirmed), inside now.
        let events = &self.events;
        self.occupancy = self.zones.occupancy(|t| events.event_id(t).is_some());
        let mut counts = self.stats.zones.lock().unwrap_or_else(|p| p.into_inner());
        for c in &news.crossings {
            counts.crossed(&c.line, c.direction == Direction::Right, c.ms);
            self.buckets
                .crossed(&c.line, c.direction == Direction::Right, c.ms);
        }
        for z in &news.entered {
            self.buckets.entered(z, frame.ts_ms);
        }
        counts.refresh(frame.ts_ms, &self.occupancy);
    }

    /// Ends every open event (the source ended or the daemon is stopping); their end time is
    /// when their object was last seen.
    pub(crate) fn finish(&mut self) {
        let changes = self.tracker.finish();
        let end_ms = self.prev_ts_ms.unwrap_or(0);
        let out = self.events.apply(changes, &self.tracker, None, end_ms);
        self.emit(out);
        if let Some(update) = self.buckets.take(end_ms, true) {
            self.sink.counts(update);
        }
    }

    fn emit(&mut self, out: EventOutput) {
        for msg in out.messages {
            match msg.kind {
                EventKind::Start => {
                    inc(&self.stats.events_started);
                    self.buckets
                        .event_started(&msg.event.label, msg.event.start_ms);
                }
                EventKind::End => inc(&self.stats.events_ended),
                EventKind::Update => {}
            }
            self.sink.event(msg);
        }
        for s in out.snapshots {
            inc(&self.stats.snapshot_encodes);
            self.sink.snapshot(s);
        }
    }
}

/// The count buckets of a camera's `zones` and lines, its lines' totals continuing `totals`.
fn buckets_for(camera: &str, zones: &Zones, totals: &[LineTotal]) -> Buckets {
    let zone_names: Vec<String> = zones.zone_names().map(str::to_string).collect();
    let line_names: Vec<String> = zones.line_names().map(str::to_string).collect();
    Buckets::new(camera, &zone_names, &line_names, totals)
}
