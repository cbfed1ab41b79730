//! `ocellus replay`: runs the live pipeline's stages on a recorded video, every frame, on the
//! video's own clock, so the same input and config always give the same events.

pub mod expect;
mod outputs;
mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::capture::{CaptureError, Frame, ReplayReader};
use crate::config::{Config, DetectWhen};
use crate::db::{self, DbError, WriterOptions};
use crate::encoder::EncoderHandle;
use crate::pipeline::detect::{self, DetectError, ObjectDetector};
use crate::pipeline::events::EventIds;
use crate::pipeline::motion::MotionResult;
use crate::pipeline::values::EventMsg;
use crate::pipeline::{DetectRate, Detected, DetectorPool, Pipeline};
pub use crate::record::replay::{RecordReplayError, ReplayRecording};
use crate::record::replay::{ReplayEvent, ReplayRecorder};
use crate::telemetry::metrics::{get, CameraStats};
use outputs::{Outputs, Trace};
pub use report::ReplayReport;

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("cannot write {path}: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("OpenCV: {0}")]
    OpenCv(#[from] opencv::Error),
    #[error(transparent)]
    Record(#[from] RecordReplayError),
    #[error("a pipeline thread panicked")]
    Panicked,
}

pub struct ReplayOptions {
    pub video: PathBuf,
    /// Where to store events; `None` uses a temporary database removed afterwards.
    pub db: Option<PathBuf>,
    /// Pace frames at the file's fps instead of as fast as possible.
    pub realtime: bool,
    /// Camera id recorded in the events.
    pub camera: String,
    /// Also JPEG-encode every processed frame (on its own thread), as serving a live viewer
    /// would; for benchmarks.
    pub encode_frames: bool,
    /// Write a per-frame trace (pixel hash, motion, raw detections) as JSON lines to this file.
    pub trace: Option<PathBuf>,
    /// Write the tracks of events (of `tracks_labels`, or every label when empty) to this file
    /// in MOTChallenge format.
    pub tracks: Option<PathBuf>,
    pub tracks_labels: Vec<String>,
    /// Write the counts over time (per-minute buckets of lines, zones and labels) to this
    /// file as CSV.
    pub counts: Option<PathBuf>,
    /// Detectors working on consecutive frames at once when the detector runs on every frame
    /// (`detector.when = "always"`); the results are the same for any number.
    pub detect_workers: usize,
    /// Record the video's own packets into this (new or empty) directory as its camera would
    /// (the camera's `[cameras.record]` settings, events mode unless it says continuous), and
    /// write each event's clip: `segments/`, `clips/<event id>.mp4`.
    pub record: Option<PathBuf>,
}

/// The detectors of a replay: with several workers, a pool detects frames ahead of the tracker:
/// every frame (`when = "always"`), or the frames with motion (`when = "motion"`; the pipeline
/// keeps a detector of its own for the frames without motion where a track is still followed).
/// Built at once, so the model is loaded and checked once and its weights shared.
struct Detectors {
    /// The pipeline's own.
    own: Option<Box<dyn ObjectDetector>>,
    pool: Vec<Box<dyn ObjectDetector>>,
    /// What the summary says ran.
    name: String,
}

impl Detectors {
    fn build(cfg: &Config, workers: usize) -> Result<Self, DetectError> {
        let own_too = usize::from(cfg.detector.when == DetectWhen::Motion);
        let mut pool = if workers > 1 {
            detect::build_many(&cfg.detector, workers + own_too)?
        } else {
            Vec::new()
        };
        let own = match (workers, own_too) {
            (1, _) => detect::build(&cfg.detector)?,
            (_, 1) => pool.pop(),
            _ => None,
        };
        let name = match (&own, pool.first()) {
            (_, Some(d)) => format!("{} x{} workers", d.describe(), pool.len()),
            (Some(d), None) => d.describe(),
            (None, None) => "none (motion only)".into(),
        };
        Ok(Self { own, pool, name })
    }
}

/// What the detect thread is fed: frames with their motion, or with their detections too.
enum Fed {
    Motion(Receiver<(Frame, MotionResult)>),
    Detected(Receiver<Detected>),
}

/// The encoder thread of `encode_frames` and the receiver that stands for its viewer.
struct Encoding {
    handle: EncoderHandle,
    join: JoinHandle<()>,
    viewer: tokio::sync::broadcast::Receiver<bytes::Bytes>,
}

/// The threads of a running replay, in pipeline order.
struct Stages {
    capture: JoinHandle<Result<u64, CaptureError>>,
    motion: JoinHandle<()>,
    pool: Option<DetectorPool>,
    detect: JoinHandle<()>,
    encoder: Option<JoinHandle<()>>,
    /// Stands for a viewer of the encoded frames (`encode_frames`): the encoder encodes only
    /// while one is there. Never read.
    _viewer: Option<tokio::sync::broadcast::Receiver<bytes::Bytes>>,
}

impl Stages {
    /// Starts capture -> motion -> (pool) -> detect (-> encoder). Each stage waits for the next
    /// (bounded channels of 2: the next frame is decoded while this one is worked on); nothing
    /// is dropped, and the detect stage sees every frame in order, so replay stays
    /// deterministic.
    fn start(
        reader: ReplayReader,
        mut pipeline: Pipeline,
        pool: Vec<Box<dyn ObjectDetector>>,
        cfg: &Config,
        opts: &ReplayOptions,
        stats: &Arc<CameraStats>,
        mut trace: Option<Trace>,
    ) -> Result<Self, ReplayError> {
        let cam = &opts.camera;
        let cancel = CancellationToken::new();
        let (tx, rx) = bounded(2);
        let capture = {
            let (stats, cancel, realtime) = (stats.clone(), cancel.clone(), opts.realtime);
            std::thread::Builder::new()
                .name(format!("cam-{cam}"))
                .spawn(move || reader.run(tx, realtime, &cancel, &stats))?
        };
        // Motion on its own thread, in frame order, overlapping the detector's work on the
        // previous frame.
        let (mtx, mrx) = bounded(2);
        let motion = {
            let (motion, stats, camera) = (pipeline.take_motion(), stats.clone(), cam.clone());
            std::thread::Builder::new()
                .name(format!("motion-{cam}"))
                .spawn(move || crate::pipeline::motion_stage(motion, &camera, &stats, rx, mtx))?
        };
        let (pool, fed) = if pool.is_empty() {
            (None, Fed::Motion(mrx))
        } else {
            let (dtx, drx) = bounded(2);
            let pool = DetectorPool::start(
                pool,
                (cfg.detector.when, DetectRate::new(cfg.detector_fps(cam))),
                cam,
                stats.clone(),
                mrx,
                dtx,
            )?;
            (Some(pool), Fed::Detected(drx))
        };
        let (encoder, encoder_join, viewer) = match Self::encoder(cfg, opts, stats)? {
            Some(e) => (Some(e.handle), Some(e.join), Some(e.viewer)),
            None => (None, None, None),
        };
        let detect = std::thread::Builder::new()
            .name(format!("detect-{cam}"))
            .spawn(move || {
                let then = |frame: Frame| {
                    if trace.as_mut().is_some_and(|t| !t.frame(&frame)) {
                        trace = None;
                    }
                    // Replay never drops: wait for the encoder like capture waits for us.
                    if let Some(enc) = &encoder {
                        enc.send(Arc::new(frame));
                    }
                };
                match fed {
                    Fed::Detected(rx) => pipeline.run(&rx, &cancel, then),
                    Fed::Motion(rx) => pipeline.run(&rx, &cancel, then),
                }
                if let Some(t) = trace {
                    t.flush();
                }
            })?;
        Ok(Self {
            capture,
            motion,
            pool,
            detect,
            encoder: encoder_join,
            _viewer: viewer,
        })
    }

    /// With `encode_frames`: the daemon's encoder thread, encoding every frame as for a
    /// viewer who watches full size.
    fn encoder(
        cfg: &Config,
        opts: &ReplayOptions,
        stats: &Arc<CameraStats>,
    ) -> Result<Option<Encoding>, ReplayError> {
        if !opts.encode_frames {
            return Ok(None);
        }
        let (viewer, watching) = tokio::sync::broadcast::channel(1);
        let (handle, join) = crate::encoder::spawn(
            &opts.camera,
            vec![(0, viewer)],
            stats.clone(),
            cfg.server.stream_quality,
        )?;
        Ok(Some(Encoding {
            handle,
            join,
            viewer: watching,
        }))
    }

    /// Waits for every stage (calling `progress` while the detect stage works); the frames
    /// read.
    fn join(self, mut progress: impl FnMut()) -> Result<u64, ReplayError> {
        while !self.detect.is_finished() {
            progress();
            std::thread::sleep(Duration::from_millis(100));
        }
        let detect_ok = self.detect.join().is_ok();
        let pool_ok = self.pool.is_none_or(|p| p.join());
        let motion_ok = self.motion.join().is_ok();
        let capture = self.capture.join();
        // The detect thread dropped the encoder's handle when it ended.
        let encoder_ok = self.encoder.is_none_or(|j| j.join().is_ok());
        if !(detect_ok && pool_ok && motion_ok && encoder_ok) {
            return Err(ReplayError::Panicked);
        }
        Ok(capture.map_err(|_| ReplayError::Panicked)??)
    }
}

/// Everything that can fail because of the inputs (video, model) is checked before the database
/// is created, so a bad input leaves no half-made database behind.
pub fn run(
    cfg: &Config,
    opts: &ReplayOptions,
    on_event: impl FnMut(&EventMsg) + Send + 'static,
    on_progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<ReplayReport, ReplayError> {
    let reader = ReplayReader::open(&opts.video)?;
    // Crops follow the tracks, which only the detect thread knows: no pool with regions.
    let workers = if cfg.detector.regions {
        1
    } else {
        opts.detect_workers.max(1)
    };
    let detectors = Detectors::build(cfg, workers)?;
    let recorder = opts
        .record
        .as_ref()
        .map(|dir| ReplayRecorder::prepare(cfg, &opts.camera, &opts.video, dir))
        .transpose()?;

    let temp_dir;
    let db_path: PathBuf = match &opts.db {
        Some(p) => p.clone(),
        None => {
            temp_dir = tempfile::tempdir()?;
            temp_dir.path().join("replay.db")
        }
    };
    let mut outputs = Outputs::create(
        opts.trace.as_ref(),
        opts.tracks.as_ref(),
        opts.counts.as_ref(),
    )?;
    let storage = db::start(&db_path, WriterOptions::from_config(&cfg.storage, false))?;
    let ids = EventIds::after(storage.max_event_id);
    let (db_handle, writer, writer_stats) = (storage.handle, storage.thread, storage.stats);

    let stats = Arc::new(CameraStats::default());
    let bus = Bus::new(&opts.camera)
        .database(db_handle.clone(), None)
        .local(Box::new(outputs.sink(on_event)));
    let pipeline = Pipeline::new(
        &opts.camera,
        cfg,
        detectors.own,
        ids,
        Box::new(bus),
        stats.clone(),
    )?;

    let (width, height, fps, announced) = (
        reader.width,
        reader.height,
        reader.fps,
        reader.announced_frames,
    );
    let name = reader.name().to_string();
    let started = Instant::now();
    let trace = outputs.trace();
    let stages = Stages::start(reader, pipeline, detectors.pool, cfg, opts, &stats, trace)?;
    let frames = stages.join(|| on_progress(get(&stats.processed), announced));
    let events = match &frames {
        Ok(_) => outputs.finish(&opts.tracks_labels, &opts.camera),
        Err(_) => Ok(Vec::new()),
    };
    let elapsed = started.elapsed();
    // The recording follows the replay: it knows every event, and writes its index through
    // the same database writer.
    let recording = match (recorder, &frames, &events) {
        (Some(recorder), Ok(_), Ok(events)) => {
            let events: Vec<ReplayEvent> = events
                .iter()
                .map(|e| ReplayEvent {
                    id: e.id,
                    start_ms: e.start_ms,
                    end_ms: e.end_ms.unwrap_or(e.start_ms),
                })
                .collect();
            Some(recorder.record(&events, &db_handle, &db_path))
        }
        _ => None,
    };
    let flushed = db_handle.flush();
    drop(db_handle);
    let writer_ok = writer.join().is_ok();
    let frames = frames?;
    if !writer_ok {
        return Err(ReplayError::Panicked);
    }
    flushed?;
    let events = events?;
    let recording = recording.transpose()?;
    on_progress(get(&stats.processed), announced);

    Ok(ReplayReport {
        frames,
        width,
        height,
        fps,
        elapsed,
        events,
        recording,
        detector: detectors.name,
        stats,
        writer: writer_stats,
        truncated: ReplayReader::check_complete(&name, frames, announced).err(),
    })
}
