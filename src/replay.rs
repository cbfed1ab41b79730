//! `ocellus replay`: runs the live pipeline's stages on a recorded video, every frame, on the
//! video's own clock, so the same input and config always give the same events.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::capture::ReplayReader;
use crate::config::Config;
use crate::db::{self, WriterOptions, WriterStats};
use crate::detect;
use crate::errors::{CaptureError, DbError, DetectError};
use crate::events::EventIds;
use crate::metrics::{get, CameraStats};
use crate::models::{Detection, DetectionsMsg, Event, EventKind, EventMsg};
use crate::pipeline::{Pipeline, Sink};

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
    /// Detectors working on consecutive frames at once when the detector runs on every frame
    /// (`detector.when = "always"`); the results are the same for any number.
    pub detect_workers: usize,
}

/// What a replay did.
pub struct ReplayReport {
    pub frames: u64,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub elapsed: Duration,
    /// Finished events in the order they ended.
    pub events: Vec<Event>,
    pub detector: String,
    pub stats: Arc<CameraStats>,
    pub writer: Arc<WriterStats>,
    /// Set when the file decoded fewer frames than its header announced.
    pub truncated: Option<CaptureError>,
}

/// Collects finished events and passes every message to a callback.
struct ReplaySink<F> {
    finished: Arc<Mutex<Vec<Event>>>,
    on_event: F,
    /// With a trace: where the frame's detections wait for the frame's pixel hash.
    trace: Option<Arc<Mutex<Option<FrameTrace>>>>,
    /// With `--tracks`: every tracked box so far, kept until the end, when the tracks that
    /// became events are known.
    tracks: Option<Arc<Mutex<Vec<TrackRow>>>>,
}

/// What the trace records of one processed frame besides its pixels.
struct FrameTrace {
    motion: bool,
    detector_ran: bool,
    detections: Vec<TraceDetection>,
}

/// One tracked box of one frame.
struct TrackRow {
    seq: u64,
    track_id: u64,
    bbox: crate::models::BBox,
    score: f32,
}

impl<F: FnMut(&EventMsg) + Send> Sink for ReplaySink<F> {
    fn event(&mut self, msg: EventMsg) {
        (self.on_event)(&msg);
        if msg.kind == EventKind::End {
            self.finished
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(msg.event);
        }
    }

    fn snapshot(&mut self, _: crate::events::Snapshot) {}

    fn wants_detections(&self) -> bool {
        self.trace.is_some() || self.tracks.is_some()
    }

    fn detections(&mut self, msg: DetectionsMsg, raw: &[Detection], track_ids: &[u64]) {
        if let Some(rows) = &self.tracks {
            rows.lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(msg.tracks.iter().map(|t| TrackRow {
                    seq: msg.seq,
                    track_id: t.track_id,
                    bbox: t.bbox,
                    score: t.score,
                }));
        }
        if let Some(slot) = &self.trace {
            let detections = raw
                .iter()
                .zip(track_ids)
                .map(|(d, &track_id)| TraceDetection {
                    label: d.label.clone(),
                    score: d.score,
                    track_id,
                    bbox: d.bbox,
                })
                .collect();
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(FrameTrace {
                motion: msg.motion,
                detector_ran: msg.detector_ran,
                detections,
            });
        }
    }
}

/// Writes the rows of the tracks that became events (of `labels`, or all), in MOTChallenge
/// format, frame by frame.
fn write_tracks(
    file: std::fs::File,
    mut rows: Vec<TrackRow>,
    events: &[Event],
    labels: &[String],
) -> std::io::Result<()> {
    use std::io::Write;
    let wanted: std::collections::HashSet<u64> = events
        .iter()
        .filter(|e| labels.is_empty() || labels.contains(&e.label))
        .map(|e| e.track_id)
        .collect();
    rows.retain(|r| wanted.contains(&r.track_id));
    rows.sort_by_key(|r| (r.seq, r.track_id));
    let mut out = std::io::BufWriter::new(file);
    for r in rows {
        let b = r.bbox;
        writeln!(
            out,
            "{},{},{:.1},{:.1},{:.1},{:.1},{:.3},-1,-1,-1",
            r.seq + 1,
            r.track_id,
            b.x,
            b.y,
            b.w,
            b.h,
            r.score
        )?;
    }
    out.flush()
}

/// One line of `--trace`.
#[derive(serde::Serialize)]
struct TraceLine {
    seq: u64,
    ts_ms: i64,
    /// FNV-1a 64 of the decoded BGR pixels, row by row.
    pixels: String,
    motion: bool,
    detector_ran: bool,
    detections: Vec<TraceDetection>,
}

/// A detection the tracker was handed: `track_id` 0 when it continued no track (a weak box
/// with no track under it, or a candidate past the track limit).
#[derive(serde::Serialize)]
struct TraceDetection {
    label: String,
    score: f32,
    track_id: u64,
    #[serde(rename = "box")]
    bbox: crate::models::BBox,
}

fn pixel_hash(mat: &opencv::core::Mat) -> opencv::Result<u64> {
    use opencv::prelude::*;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for row in 0..mat.rows() {
        let r = mat.row(row)?;
        for &b in r.data_bytes()? {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    Ok(h)
}

fn write_trace(
    out: &mut impl std::io::Write,
    frame: &crate::capture::Frame,
    dets: Option<FrameTrace>,
) -> std::io::Result<()> {
    let pixels = pixel_hash(&frame.mat).map_err(std::io::Error::other)?;
    let line = TraceLine {
        seq: frame.seq,
        ts_ms: frame.ts_ms,
        pixels: format!("{pixels:016x}"),
        motion: dets.as_ref().is_some_and(|d| d.motion),
        detector_ran: dets.as_ref().is_some_and(|d| d.detector_ran),
        detections: dets.map(|d| d.detections).unwrap_or_default(),
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
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
    // With several workers, a pool detects frames ahead of the tracker: every frame
    // (`when = "always"`), or the frames with motion (`when = "motion"`; the pipeline keeps
    // a detector of its own for the frames without motion where a track is still followed).
    // Built at once, so the model is loaded and checked once and its weights shared.
    let workers = opts.detect_workers.max(1);
    let own = usize::from(cfg.detector.when == crate::config::DetectWhen::Motion);
    let mut pool_detectors = if workers > 1 {
        detect::build_many(&cfg.detector, workers + own)?
    } else {
        Vec::new()
    };
    let detector = match (workers, own) {
        (1, _) => detect::build(&cfg.detector)?,
        (_, 1) => pool_detectors.pop(),
        _ => None,
    };
    let detector_name = match (&detector, pool_detectors.first()) {
        (_, Some(d)) => format!("{} x{} workers", d.describe(), pool_detectors.len()),
        (Some(d), None) => d.describe(),
        (None, None) => "none (motion only)".into(),
    };

    let temp_dir;
    let db_path: PathBuf = match &opts.db {
        Some(p) => p.clone(),
        None => {
            temp_dir = tempfile::tempdir()?;
            temp_dir.path().join("replay.db")
        }
    };
    let storage = db::start(&db_path, WriterOptions::from_config(&cfg.storage, false))?;
    let ids = EventIds::after(storage.max_event_id);
    let (db_handle, writer, writer_stats) = (storage.handle, storage.thread, storage.stats);

    let stats = Arc::new(CameraStats::default());
    let finished = Arc::new(Mutex::new(Vec::new()));
    let mut trace_out = match &opts.trace {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p).map_err(
            |source| ReplayError::Output {
                path: p.clone(),
                source,
            },
        )?)),
        None => None,
    };
    let trace_slot = trace_out.as_ref().map(|_| Arc::new(Mutex::new(None)));
    // Created now, so that a bad path fails before the replay, not after it.
    let tracks_file = match &opts.tracks {
        Some(path) => Some(
            std::fs::File::create(path).map_err(|source| ReplayError::Output {
                path: path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let track_rows = tracks_file
        .as_ref()
        .map(|_| Arc::new(Mutex::new(Vec::new())));
    let sink = ReplaySink {
        finished: finished.clone(),
        on_event,
        trace: trace_slot.clone(),
        tracks: track_rows.clone(),
    };
    // `detector.max_fps` spares a live camera's CPU; a replay processes every frame.
    let mut pipeline_cfg = cfg.clone();
    pipeline_cfg.detector.max_fps = 0.0;
    let bus = Bus::new(&opts.camera)
        .database(db_handle.clone(), None)
        .local(Box::new(sink));
    let mut pipeline = Pipeline::new(
        &opts.camera,
        &pipeline_cfg,
        detector,
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
    let cancel = CancellationToken::new();
    // Capacity 2: capture decodes the next frame while detection works on this one; replay
    // blocks instead of dropping.
    let (tx, rx) = crossbeam_channel::bounded(2);
    let started = Instant::now();
    let capture = {
        let (stats, cancel, realtime) = (stats.clone(), cancel.clone(), opts.realtime);
        std::thread::Builder::new()
            .name(format!("cam-{}", opts.camera))
            .spawn(move || reader.run(tx, realtime, &cancel, &stats))?
    };
    // Frames encoded as for a live viewer who watches full size, on the encoder thread the
    // daemon uses; the receiver stands for the viewer.
    let (viewer, _viewer_rx) = tokio::sync::broadcast::channel(1);
    let encoder = if opts.encode_frames {
        Some(crate::encoder::spawn(
            &opts.camera,
            vec![(0, viewer)],
            stats.clone(),
            cfg.server.stream_quality,
        )?)
    } else {
        None
    };
    let (encode_tx, encoder_join) = encoder.unzip();
    // Motion runs on its own thread, in frame order, overlapping the detector's work on the
    // previous frame; the detect stage still sees every frame in order, so replay stays
    // deterministic.
    let (mtx, mrx) = crossbeam_channel::bounded(2);
    let motion = {
        let (motion, stats, camera) = (pipeline.take_motion(), stats.clone(), opts.camera.clone());
        std::thread::Builder::new()
            .name(format!("motion-{}", opts.camera))
            .spawn(move || crate::pipeline::motion_stage(motion, &camera, &stats, rx, mtx))?
    };
    enum Fed {
        Motion(crossbeam_channel::Receiver<(crate::capture::Frame, crate::motion::MotionResult)>),
        Detected(crossbeam_channel::Receiver<crate::pipeline::Detected>),
    }
    let (pool, fed) = if pool_detectors.is_empty() {
        (None, Fed::Motion(mrx))
    } else {
        let (dtx, drx) = crossbeam_channel::bounded(2);
        let pool = crate::pipeline::DetectorPool::start(
            pool_detectors,
            cfg.detector.when,
            &opts.camera,
            stats.clone(),
            mrx,
            dtx,
        )?;
        (Some(pool), Fed::Detected(drx))
    };
    let detect = {
        let cancel = cancel.clone();
        std::thread::Builder::new()
            .name(format!("detect-{}", opts.camera))
            .spawn(move || {
                let then = |frame: crate::capture::Frame| {
                    if let (Some(out), Some(slot)) = (&mut trace_out, &trace_slot) {
                        let dets = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                        if let Err(e) = write_trace(out, &frame, dets) {
                            tracing::warn!(error = %e, "cannot write the trace; it stops here");
                            trace_out = None;
                        }
                    }
                    // Replay never drops: wait for the encoder like capture waits for us.
                    if let Some(tx) = &encode_tx {
                        tx.send(Arc::new(frame));
                    }
                };
                match fed {
                    Fed::Detected(rx) => pipeline.run(&rx, &cancel, then),
                    Fed::Motion(rx) => pipeline.run(&rx, &cancel, then),
                }
                if let Some(mut out) = trace_out {
                    use std::io::Write;
                    if let Err(e) = out.flush() {
                        tracing::warn!(error = %e, "cannot write the trace");
                    }
                }
            })?
    };
    while !detect.is_finished() {
        on_progress(get(&stats.processed), announced);
        std::thread::sleep(Duration::from_millis(100));
    }
    let detect_result = detect.join();
    let pool_ok = pool.is_none_or(|p| p.join());
    let motion_result = motion.join();
    let capture_result = capture.join();
    if let Some(join) = encoder_join {
        // The detect thread took the handle and dropped it when it ended.
        if join.join().is_err() {
            return Err(ReplayError::Panicked);
        }
    }
    let flushed = db_handle.flush();
    drop(db_handle);
    let writer_result = writer.join();
    let elapsed = started.elapsed();
    if detect_result.is_err() || !pool_ok || motion_result.is_err() || writer_result.is_err() {
        return Err(ReplayError::Panicked);
    }
    let frames = capture_result.map_err(|_| ReplayError::Panicked)??;
    flushed?;
    on_progress(get(&stats.processed), announced);

    let events = std::mem::take(&mut *finished.lock().unwrap_or_else(|p| p.into_inner()));
    if let (Some(path), Some(file), Some(rows)) = (&opts.tracks, tracks_file, track_rows) {
        let rows = std::mem::take(&mut *rows.lock().unwrap_or_else(|p| p.into_inner()));
        write_tracks(file, rows, &events, &opts.tracks_labels).map_err(|source| {
            ReplayError::Output {
                path: path.clone(),
                source,
            }
        })?;
    }
    Ok(ReplayReport {
        frames,
        width,
        height,
        fps,
        elapsed,
        events,
        detector: detector_name,
        stats,
        writer: writer_stats,
        truncated: ReplayReader::check_complete(&name, frames, announced).err(),
    })
}

impl ReplayReport {
    /// The human summary printed at the end of a replay.
    pub fn summary(&self, video: &Path) -> String {
        let s = &self.stats;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let mut per_label = std::collections::BTreeMap::<&str, usize>::new();
        for e in &self.events {
            *per_label.entry(e.label.as_str()).or_default() += 1;
        }
        let labels = if per_label.is_empty() {
            "none".to_string()
        } else {
            per_label
                .iter()
                .map(|(l, n)| format!("{l} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let commits = get(&self.writer.commits);
        format!(
            "replay   {} ({}x{} @ {:.1} fps)\n\
             frames   {} in {:.2} s = {:.1} fps processed\n\
             detector {} (ran on {} frames)\n\
             per frame: decode {:.2} ms, motion {:.2} ms, detect {:.2} ms, track+events {:.2} ms{}; \
             store {:.2} ms per commit ({} commits)\n\
             events   {} ({})",
            video.display(),
            self.width,
            self.height,
            self.fps,
            self.frames,
            secs,
            get(&s.processed) as f64 / secs,
            self.detector,
            get(&s.detector_runs),
            s.decode.mean_ms(),
            s.motion.mean_ms(),
            s.detect.mean_ms(),
            s.track.mean_ms(),
            if get(&s.stream_encodes) > 0 {
                format!(", jpeg {:.2} ms (own thread)", s.encode.mean_ms())
            } else {
                String::new()
            },
            if commits == 0 {
                0.0
            } else {
                get(&self.writer.commit_ns) as f64 / commits as f64 / 1e6
            },
            commits,
            self.events.len(),
            labels
        ) + &self.zone_summary()
    }

    /// Per zone, the events that entered it; per line, the crossings each way (empty without
    /// zones or lines).
    fn zone_summary(&self) -> String {
        let counts = self.stats.zones.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for z in &counts.zones {
            let entered = self
                .events
                .iter()
                .filter(|e| e.zones.contains(&z.name))
                .count();
            out.push_str(&format!("\nzone     {}: {entered} events entered", z.name));
        }
        for l in &counts.lines {
            out.push_str(&format!(
                "\nline     {}: {} crossings left, {} right",
                l.name, l.left, l.right
            ));
        }
        out
    }
}
