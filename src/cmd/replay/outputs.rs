//! What a replay writes besides the database: the finished events, and on request a per-frame
//! trace (pixel hash, motion, raw detections), the tracks of the events in MOTChallenge format
//! and the counts over time as CSV.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::ReplayError;
use crate::capture::Frame;
use crate::counts::{CountsUpdate, Kind, Values};
use crate::pipeline::values::{Detection, DetectionsMsg, Event, EventKind, EventMsg};
use crate::pipeline::Sink;

/// The replay's own outputs, opened before the replay so that a bad path fails first.
pub(super) struct Outputs {
    finished: Arc<Mutex<Vec<Event>>>,
    trace_out: Option<std::io::BufWriter<std::fs::File>>,
    trace_slot: Option<Arc<Mutex<Option<FrameTrace>>>>,
    tracks: Option<TracksFile>,
    counts: Option<CountsFile>,
}

/// The count buckets of a run, per (kind, name, minute), as the pipeline handed them on.
type CountBuckets = BTreeMap<(Kind, String, i64), Values>;

/// `--counts`: the file, and the buckets so far (written at the end).
struct CountsFile {
    path: PathBuf,
    file: std::fs::File,
    buckets: Arc<Mutex<CountBuckets>>,
}

/// `--tracks`: the file, and every tracked box so far (written at the end, when the tracks
/// that became events are known).
struct TracksFile {
    path: PathBuf,
    file: std::fs::File,
    rows: Arc<Mutex<Vec<TrackRow>>>,
}

fn create(path: &PathBuf) -> Result<std::fs::File, ReplayError> {
    std::fs::File::create(path).map_err(|source| ReplayError::Output {
        path: path.clone(),
        source,
    })
}

impl Outputs {
    pub(super) fn create(
        trace: Option<&PathBuf>,
        tracks: Option<&PathBuf>,
        counts: Option<&PathBuf>,
    ) -> Result<Self, ReplayError> {
        let trace_out = trace.map(create).transpose()?.map(std::io::BufWriter::new);
        let tracks = match tracks {
            Some(path) => Some(TracksFile {
                path: path.clone(),
                file: create(path)?,
                rows: Arc::default(),
            }),
            None => None,
        };
        let counts = match counts {
            Some(path) => Some(CountsFile {
                path: path.clone(),
                file: create(path)?,
                buckets: Arc::default(),
            }),
            None => None,
        };
        Ok(Self {
            finished: Arc::default(),
            trace_slot: trace_out.as_ref().map(|_| Arc::default()),
            trace_out,
            tracks,
            counts,
        })
    }

    /// The sink the bus hands everything to, passing each event message to `on_event`.
    pub(super) fn sink<F: FnMut(&EventMsg) + Send>(&self, on_event: F) -> ReplaySink<F> {
        ReplaySink {
            finished: self.finished.clone(),
            on_event,
            trace: self.trace_slot.clone(),
            tracks: self.tracks.as_ref().map(|t| t.rows.clone()),
            counts: self.counts.as_ref().map(|c| c.buckets.clone()),
        }
    }

    /// Takes the trace file, for the detect thread, which writes a line per processed frame.
    pub(super) fn trace(&mut self) -> Option<Trace> {
        Some(Trace {
            out: self.trace_out.take()?,
            slot: self.trace_slot.clone()?,
        })
    }

    /// The finished events in the order they ended; writes the tracks file with those of
    /// `labels` (all when empty), and the counts file with `camera`'s buckets.
    pub(super) fn finish(self, labels: &[String], camera: &str) -> Result<Vec<Event>, ReplayError> {
        if let Some(c) = self.counts {
            let buckets = std::mem::take(&mut *c.buckets.lock().unwrap_or_else(|p| p.into_inner()));
            write_counts(c.file, buckets, camera).map_err(|source| ReplayError::Output {
                path: c.path,
                source,
            })?;
        }
        let events = std::mem::take(&mut *self.finished.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(t) = self.tracks {
            let rows = std::mem::take(&mut *t.rows.lock().unwrap_or_else(|p| p.into_inner()));
            write_tracks(t.file, rows, &events, labels).map_err(|source| ReplayError::Output {
                path: t.path,
                source,
            })?;
        }
        Ok(events)
    }
}

/// The trace being written, on the detect thread.
pub(super) struct Trace {
    out: std::io::BufWriter<std::fs::File>,
    slot: Arc<Mutex<Option<FrameTrace>>>,
}

impl Trace {
    /// Writes the line of a processed frame; false when the file cannot be written (the
    /// trace stops there, the replay goes on).
    pub(super) fn frame(&mut self, frame: &Frame) -> bool {
        let dets = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        match write_trace(&mut self.out, frame, dets) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the trace; it stops here");
                false
            }
        }
    }

    pub(super) fn flush(mut self) {
        use std::io::Write;
        if let Err(e) = self.out.flush() {
            tracing::warn!(error = %e, "cannot write the trace");
        }
    }
}

/// Collects finished events and passes every message to a callback.
pub(super) struct ReplaySink<F> {
    finished: Arc<Mutex<Vec<Event>>>,
    on_event: F,
    /// With a trace: where the frame's detections wait for the frame's pixel hash.
    trace: Option<Arc<Mutex<Option<FrameTrace>>>>,
    /// With `--tracks`: every tracked box so far, kept until the end, when the tracks that
    /// became events are known.
    tracks: Option<Arc<Mutex<Vec<TrackRow>>>>,
    /// With `--counts`: the buckets so far.
    counts: Option<Arc<Mutex<CountBuckets>>>,
}

/// What the trace records of one processed frame besides its pixels.
pub(super) struct FrameTrace {
    motion: bool,
    detector_ran: bool,
    detections: Vec<TraceDetection>,
}

/// One tracked box of one frame.
pub(super) struct TrackRow {
    seq: u64,
    track_id: u64,
    bbox: crate::pipeline::values::BBox,
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

    fn snapshot(&mut self, _: crate::pipeline::events::Snapshot) {}

    fn counts(&mut self, update: CountsUpdate) {
        if let Some(buckets) = &self.counts {
            let mut buckets = buckets.lock().unwrap_or_else(|p| p.into_inner());
            for r in update.rows {
                let kind = r.values.kind();
                buckets
                    .entry((kind, r.name, r.start_ms))
                    .or_insert_with(|| Values::zero(kind))
                    .merge(&r.values);
            }
        }
    }

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

/// Writes the count buckets as CSV (src/counts/'s columns), by kind, name and time.
fn write_counts(file: std::fs::File, buckets: CountBuckets, camera: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(file);
    out.write_all(crate::counts::CSV_HEADER.as_bytes())?;
    for kind in [Kind::Line, Kind::Zone, Kind::Label] {
        let q = crate::counts::CountsQuery {
            camera: camera.to_string(),
            kind,
            name: None,
            from_ms: i64::MIN,
            to_ms: i64::MAX,
            bucket: crate::counts::BucketWidth::Minute,
            tz_offset_min: 0,
        };
        let rows = buckets
            .iter()
            .filter(|((k, _, _), _)| *k == kind)
            .map(|((_, name, start), v)| (name.clone(), *start, *v));
        let series = crate::counts::group(&q, rows);
        out.write_all(crate::counts::csv_rows(camera, &series).as_bytes())?;
    }
    out.flush()
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
    bbox: crate::pipeline::values::BBox,
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
