//! Turns tracker changes into event messages (start / update / end) and keeps each event's
//! best-moment snapshot: a thumbnail of the frame with the box drawn, JPEG-encoded when the event
//! starts and again when it ends if a better moment came along.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use opencv::core::{Mat, Rect, Scalar, Size, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc};

use crate::models::{Event, EventKind, EventMsg};
use crate::tracker::{Track, TrackChange, Tracker};

/// Hands out event ids; shared by every pipeline writing to one database, seeded from the
/// database's highest id.
#[derive(Clone, Debug)]
pub struct EventIds(Arc<AtomicI64>);

impl EventIds {
    /// Ids start at `last + 1`.
    pub fn after(last: i64) -> Self {
        Self(Arc::new(AtomicI64::new(last + 1)))
    }

    fn next(&self) -> i64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// A JPEG snapshot of an event.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub event_id: i64,
    pub jpeg: Bytes,
    pub width: u32,
    pub height: u32,
}

/// What one frame's tracker changes produced.
#[derive(Debug, Default)]
pub struct EventOutput {
    pub messages: Vec<EventMsg>,
    pub snapshots: Vec<Snapshot>,
}

#[derive(Clone, Copy, Debug)]
pub struct SnapshotOptions {
    pub max_side: u32,
    pub quality: u8,
}

/// A scaled-down frame, shared by every track whose best moment it is, and the box to draw on
/// it (drawn only when encoding, so that one resize serves all tracks of a frame).
struct Thumb {
    image: Arc<Mat>,
    scale: f64,
    bbox: crate::models::BBox,
}

struct OpenEvent {
    event: Event,
    last_update_ms: i64,
    /// A better snapshot than the one stored exists.
    snapshot_dirty: bool,
}

pub struct EventBuilder {
    camera: String,
    ids: EventIds,
    update_interval_ms: i64,
    snap: SnapshotOptions,
    open: HashMap<u64, OpenEvent>,
    /// Best-moment thumbnail per live track, confirmed or not (a track's best moment may come
    /// before it is confirmed).
    thumbs: HashMap<u64, Thumb>,
    jpeg_buf: Vector<u8>,
}

impl EventBuilder {
    pub fn new(
        camera: &str,
        ids: EventIds,
        update_interval_ms: i64,
        snap: SnapshotOptions,
    ) -> Self {
        Self {
            camera: camera.to_string(),
            ids,
            update_interval_ms,
            snap,
            open: HashMap::new(),
            thumbs: HashMap::new(),
            jpeg_buf: Vector::new(),
        }
    }

    /// The event id of a track, if it has one.
    pub fn event_id(&self, track_id: u64) -> Option<i64> {
        self.open.get(&track_id).map(|o| o.event.id)
    }

    /// Open events (for shutdown reporting).
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Applies one frame's changes. `frame` is the frame the changes came from (`None` when the
    /// source has ended; no new snapshots are taken then).
    pub fn apply(
        &mut self,
        changes: Vec<TrackChange>,
        tracker: &Tracker,
        frame: Option<&Mat>,
        ts_ms: i64,
    ) -> opencv::Result<EventOutput> {
        let mut out = EventOutput::default();
        let mut frame_thumb: Option<(Arc<Mat>, f64)> = None;
        for change in changes {
            match change {
                TrackChange::Improved(tid) => {
                    let Some(track) = tracker.get(tid) else {
                        continue;
                    };
                    if let Some(frame) = frame {
                        if frame_thumb.is_none() {
                            frame_thumb = Some(self.scale_down(frame)?);
                        }
                        if let Some((image, scale)) = &frame_thumb {
                            self.thumbs.insert(
                                tid,
                                Thumb {
                                    image: image.clone(),
                                    scale: *scale,
                                    bbox: track.best_box,
                                },
                            );
                        }
                    }
                    if let Some(open) = self.open.get_mut(&tid) {
                        fill_from_track(&mut open.event, track);
                        open.snapshot_dirty = true;
                        if ts_ms - open.last_update_ms >= self.update_interval_ms {
                            open.last_update_ms = ts_ms;
                            out.messages.push(EventMsg {
                                kind: EventKind::Update,
                                event: open.event.clone(),
                            });
                        }
                    }
                }
                TrackChange::Confirmed(tid) => {
                    let Some(track) = tracker.get(tid) else {
                        continue;
                    };
                    let mut event = Event {
                        id: self.ids.next(),
                        camera: self.camera.clone(),
                        label: track.label.clone(),
                        track_id: tid,
                        start_ms: track.first_seen_ms,
                        end_ms: None,
                        top_score: 0.0,
                        best_box: track.best_box,
                        best_ms: track.best_ms,
                        hits: 0,
                    };
                    fill_from_track(&mut event, track);
                    if let Some(s) = self.encode(tid, event.id)? {
                        out.snapshots.push(s);
                    }
                    out.messages.push(EventMsg {
                        kind: EventKind::Start,
                        event: event.clone(),
                    });
                    self.open.insert(
                        tid,
                        OpenEvent {
                            event,
                            last_update_ms: ts_ms,
                            snapshot_dirty: false,
                        },
                    );
                }
                TrackChange::Ended(track) => {
                    let Some(mut open) = self.open.remove(&track.id) else {
                        self.thumbs.remove(&track.id);
                        continue;
                    };
                    fill_from_track(&mut open.event, &track);
                    open.event.end_ms = Some(track.last_seen_ms);
                    if open.snapshot_dirty {
                        if let Some(s) = self.encode(track.id, open.event.id)? {
                            out.snapshots.push(s);
                        }
                    }
                    self.thumbs.remove(&track.id);
                    out.messages.push(EventMsg {
                        kind: EventKind::End,
                        event: open.event,
                    });
                }
            }
        }
        // Thumbnails of candidates the tracker dropped without confirming them.
        if self.thumbs.len() > self.open.len() {
            self.thumbs
                .retain(|tid, _| tracker.get(*tid).is_some() || self.open.contains_key(tid));
        }
        Ok(out)
    }

    /// The frame scaled so its longest side is at most `max_side`, and the scale used.
    fn scale_down(&self, frame: &Mat) -> opencv::Result<(Arc<Mat>, f64)> {
        let (w, h) = (frame.cols().max(1), frame.rows().max(1));
        let scale = (self.snap.max_side as f64 / w.max(h) as f64).min(1.0);
        let size = Size::new(
            ((w as f64 * scale).round() as i32).max(1),
            ((h as f64 * scale).round() as i32).max(1),
        );
        let mut thumb = Mat::default();
        imgproc::resize(frame, &mut thumb, size, 0.0, 0.0, imgproc::INTER_AREA)?;
        Ok((Arc::new(thumb), scale))
    }

    /// Encodes the track's best-moment thumbnail with its box drawn.
    fn encode(&mut self, tid: u64, event_id: i64) -> opencv::Result<Option<Snapshot>> {
        let Some(thumb) = self.thumbs.get(&tid) else {
            return Ok(None);
        };
        let mut image = thumb.image.try_clone()?;
        let (b, s) = (thumb.bbox, thumb.scale);
        let rect = Rect::new(
            (b.x as f64 * s) as i32,
            (b.y as f64 * s) as i32,
            ((b.w as f64 * s) as i32).max(1),
            ((b.h as f64 * s) as i32).max(1),
        );
        imgproc::rectangle(
            &mut image,
            rect,
            Scalar::new(0.0, 220.0, 0.0, 0.0),
            2,
            imgproc::LINE_8,
            0,
        )?;
        let params =
            Vector::from_slice(&[imgcodecs::IMWRITE_JPEG_QUALITY, self.snap.quality as i32]);
        imgcodecs::imencode(".jpg", &image, &mut self.jpeg_buf, &params)?;
        Ok(Some(Snapshot {
            event_id,
            jpeg: Bytes::copy_from_slice(self.jpeg_buf.as_slice()),
            width: image.cols() as u32,
            height: image.rows() as u32,
        }))
    }
}

fn fill_from_track(e: &mut Event, t: &Track) {
    e.top_score = t.top_score;
    e.best_box = t.best_box.rounded();
    e.best_ms = t.best_ms;
    e.hits = t.hits;
}
