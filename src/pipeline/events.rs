//! Turns tracker changes into event messages (start / update / end) and keeps each event's
//! best-moment snapshot: the region around the object with its box drawn, JPEG-encoded when the
//! event starts and again when it ends if a better moment came along.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use opencv::core::{Mat, Rect, Scalar, Size};
use opencv::imgproc;
use opencv::prelude::*;

use crate::base::jpeg::JpegEncoder;
use crate::pipeline::tracker::{Track, TrackChange, Tracker};
use crate::pipeline::values::{Event, EventKind, EventMsg};

/// A log line for an event message, as a person reads it in the journal.
pub(crate) struct EventLine {
    pub text: String,
    /// A start, an end, or a change of `stationary` (an update with only a better score is not).
    pub important: bool,
}

/// "person event 42 started on front (score 0.87)", "... ended on front after 12.4 s", ...
/// An update that says the object is stationary is important; other updates (a better score,
/// or moving again) are detail.
pub(crate) fn describe(msg: &EventMsg) -> EventLine {
    let e = &msg.event;
    let head = format!("{} event {}", e.label, e.id);
    let (text, important) = match msg.kind {
        EventKind::Start => (
            format!("{head} started on {} (score {:.2})", e.camera, e.top_score),
            true,
        ),
        EventKind::End => (
            format!(
                "{head} ended on {} after {:.1} s",
                e.camera,
                e.duration_ms().unwrap_or(0) as f64 / 1000.0
            ),
            true,
        ),
        EventKind::Update if e.stationary => {
            (format!("{head} on {} is stationary", e.camera), true)
        }
        EventKind::Update => (
            format!("{head} on {} updated (score {:.2})", e.camera, e.top_score),
            false,
        ),
    };
    EventLine { text, important }
}

/// Hands out event ids; shared by every pipeline writing to one database, seeded from the
/// database's highest id.
#[derive(Clone, Debug)]
pub(crate) struct EventIds(Arc<AtomicI64>);

impl EventIds {
    /// Ids start at `last + 1`.
    pub(crate) fn after(last: i64) -> Self {
        Self(Arc::new(AtomicI64::new(last + 1)))
    }

    fn next(&self) -> i64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// A JPEG snapshot of an event.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    pub event_id: i64,
    pub jpeg: Bytes,
    pub width: u32,
    pub height: u32,
}

/// What became part of open events in one frame (see [`EventBuilder::sync_zones`]).
#[derive(Debug, Default)]
pub(crate) struct ZoneNews {
    /// Crossings newly on an event, each with its own time.
    pub crossings: Vec<crate::pipeline::zones::Crossing>,
    /// Zones an event's object newly entered (once per event and zone).
    pub entered: Vec<String>,
}

/// What one frame's tracker changes produced.
#[derive(Debug, Default)]
pub(crate) struct EventOutput {
    pub messages: Vec<EventMsg>,
    pub snapshots: Vec<Snapshot>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct SnapshotOptions {
    pub max_side: u32,
    pub quality: u8,
}

/// The region of a frame around a track's best box, copied when the box was seen, and where the
/// box lies in it (drawn only when encoding).
struct Thumb {
    image: Mat,
    bbox: crate::pipeline::values::BBox,
}

struct OpenEvent {
    event: Event,
    /// Messages sent about the event so far, less one: the `rev` of the last.
    rev: u32,
    last_update_ms: i64,
    /// A better snapshot than the one stored exists.
    snapshot_dirty: bool,
}

pub(crate) struct EventBuilder {
    camera: String,
    ids: EventIds,
    update_interval_ms: i64,
    snap: SnapshotOptions,
    open: HashMap<u64, OpenEvent>,
    /// Best-moment thumbnail per live track, confirmed or not (a track's best moment may come
    /// before it is confirmed).
    thumbs: HashMap<u64, Thumb>,
    jpeg: JpegEncoder,
}

impl EventBuilder {
    pub(crate) fn new(
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
            jpeg: JpegEncoder::new(snap.quality),
        }
    }

    /// The event id of a track, if it has one.
    pub(crate) fn event_id(&self, track_id: u64) -> Option<i64> {
        self.open.get(&track_id).map(|o| o.event.id)
    }

    /// Applies one frame's changes. `frame` is the frame the changes came from (`None` when the
    /// source has ended; no new snapshots are taken then). A snapshot that fails is logged and
    /// skipped: it never costs an event message.
    pub(crate) fn apply(
        &mut self,
        changes: Vec<TrackChange>,
        tracker: &Tracker,
        frame: Option<&Mat>,
        ts_ms: i64,
    ) -> EventOutput {
        let mut out = EventOutput::default();
        for change in changes {
            match change {
                TrackChange::Improved(tid) => self.improved(tid, tracker, frame, ts_ms, &mut out),
                TrackChange::Confirmed(tid) => self.confirmed(tid, tracker, ts_ms, &mut out),
                TrackChange::Stationary(tid, _) => self.stationary(tid, tracker, ts_ms, &mut out),
                TrackChange::Ended(track) => self.ended(&track, &mut out),
            }
        }
        // Thumbnails of candidates the tracker dropped without confirming them.
        if self.thumbs.len() > self.open.len() {
            self.thumbs
                .retain(|tid, _| tracker.get(*tid).is_some() || self.open.contains_key(tid));
        }
        out
    }

    /// A track's top score rose: a new thumbnail from `frame`, and an update of its event (at
    /// most every `update_interval_ms`).
    fn improved(
        &mut self,
        tid: u64,
        tracker: &Tracker,
        frame: Option<&Mat>,
        ts_ms: i64,
        out: &mut EventOutput,
    ) {
        let Some(track) = tracker.get(tid) else {
            return;
        };
        if let Some(frame) = frame {
            match crop_around(frame, track.best_box) {
                Ok(thumb) => {
                    self.thumbs.insert(tid, thumb);
                }
                Err(e) => {
                    tracing::warn!(camera = %self.camera, track_id = tid, error = %e, "snapshot crop failed")
                }
            }
        }
        if let Some(open) = self.open.get_mut(&tid) {
            fill_from_track(&mut open.event, track);
            open.snapshot_dirty = true;
            if ts_ms - open.last_update_ms >= self.update_interval_ms {
                open.last_update_ms = ts_ms;
                open.rev += 1;
                out.messages.push(EventMsg {
                    kind: EventKind::Update,
                    rev: open.rev,
                    event: open.event.clone(),
                });
            }
        }
    }

    /// A track became an event: its start, with a snapshot.
    fn confirmed(&mut self, tid: u64, tracker: &Tracker, ts_ms: i64, out: &mut EventOutput) {
        let Some(track) = tracker.get(tid) else {
            return;
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
            stationary: false,
            zones: Vec::new(),
            crossings: Vec::new(),
            clip: None,
        };
        fill_from_track(&mut event, track);
        out.snapshots.extend(self.snapshot(tid, event.id));
        out.messages.push(EventMsg {
            kind: EventKind::Start,
            rev: 0,
            event: event.clone(),
        });
        self.open.insert(
            tid,
            OpenEvent {
                event,
                rev: 0,
                last_update_ms: ts_ms,
                snapshot_dirty: false,
            },
        );
    }

    /// An event's object stopped or moved on: an update at once.
    fn stationary(&mut self, tid: u64, tracker: &Tracker, ts_ms: i64, out: &mut EventOutput) {
        let (Some(track), Some(open)) = (tracker.get(tid), self.open.get_mut(&tid)) else {
            return;
        };
        // Told at once, not rate-limited: a client shows it as a state.
        fill_from_track(&mut open.event, track);
        open.last_update_ms = ts_ms;
        open.rev += 1;
        out.messages.push(EventMsg {
            kind: EventKind::Update,
            rev: open.rev,
            event: open.event.clone(),
        });
    }

    /// A track ended: its event's end, with a better snapshot if one came since the last.
    fn ended(&mut self, track: &Track, out: &mut EventOutput) {
        let Some(mut open) = self.open.remove(&track.id) else {
            self.thumbs.remove(&track.id);
            return;
        };
        fill_from_track(&mut open.event, track);
        open.event.end_ms = Some(track.last_seen_ms);
        if open.snapshot_dirty {
            out.snapshots.extend(self.snapshot(track.id, open.event.id));
        }
        self.thumbs.remove(&track.id);
        out.messages.push(EventMsg {
            kind: EventKind::End,
            rev: open.rev + 1,
            event: open.event,
        });
    }

    /// Brings the zones and crossings of open events up to date with what their tracks did
    /// (`zones`), after [`EventBuilder::apply`] made `out` for the same frame: an event that
    /// started in this frame carries its object's zones and crossings from before it was
    /// confirmed in its start message; an open event that gained one is updated at once (a
    /// client shows it as it happens). Returns what is newly on events, for the counts.
    pub(crate) fn sync_zones(
        &mut self,
        zones: &crate::pipeline::zones::Zones,
        changed: &[u64],
        out: &mut EventOutput,
    ) -> ZoneNews {
        let mut news = ZoneNews::default();
        let started: Vec<u64> = out
            .messages
            .iter()
            .filter(|m| m.kind == EventKind::Start)
            .map(|m| m.event.track_id)
            .collect();
        for &tid in started.iter().chain(changed) {
            let (Some(open), Some(rec)) = (self.open.get_mut(&tid), zones.record(tid)) else {
                continue;
            };
            if open.event.zones == rec.entered && open.event.crossings == rec.crossings {
                continue;
            }
            // A continued event (a new track took over a lost one) keeps what it had.
            for z in &rec.entered {
                if !open.event.zones.contains(z) {
                    open.event.zones.push(z.clone());
                    news.entered.push(z.clone());
                }
            }
            for c in &rec.crossings {
                if !open.event.crossings.contains(c) {
                    open.event.crossings.push(c.clone());
                    news.crossings.push(c.clone());
                }
            }
            match out
                .messages
                .iter_mut()
                .find(|m| m.kind == EventKind::Start && m.event.id == open.event.id)
            {
                Some(start) => start.event = open.event.clone(),
                None => {
                    open.rev += 1;
                    out.messages.push(EventMsg {
                        kind: EventKind::Update,
                        rev: open.rev,
                        event: open.event.clone(),
                    });
                }
            }
        }
        news
    }

    /// The event's snapshot, or nothing (logged) when encoding fails.
    fn snapshot(&mut self, tid: u64, event_id: i64) -> Option<Snapshot> {
        self.encode(tid, event_id).unwrap_or_else(|e| {
            tracing::warn!(camera = %self.camera, event_id, error = %e, "snapshot encoding failed");
            None
        })
    }

    /// Encodes the track's best-moment crop, scaled to `max_side`, with its box drawn.
    fn encode(&mut self, tid: u64, event_id: i64) -> opencv::Result<Option<Snapshot>> {
        let Some(thumb) = self.thumbs.get(&tid) else {
            return Ok(None);
        };
        let (w, h) = (thumb.image.cols().max(1), thumb.image.rows().max(1));
        let scale = (self.snap.max_side as f64 / w.max(h) as f64).min(1.0);
        let mut image = Mat::default();
        imgproc::resize(
            &thumb.image,
            &mut image,
            Size::new(
                ((w as f64 * scale).round() as i32).max(1),
                ((h as f64 * scale).round() as i32).max(1),
            ),
            0.0,
            0.0,
            imgproc::INTER_AREA,
        )?;
        let b = thumb.bbox;
        let rect = Rect::new(
            (b.x as f64 * scale) as i32,
            (b.y as f64 * scale) as i32,
            ((b.w as f64 * scale) as i32).max(1),
            ((b.h as f64 * scale) as i32).max(1),
        );
        imgproc::rectangle(
            &mut image,
            rect,
            Scalar::new(0.0, 220.0, 0.0, 0.0),
            2,
            imgproc::LINE_8,
            0,
        )?;
        let jpeg = Bytes::copy_from_slice(self.jpeg.encode(&image)?);
        Ok(Some(Snapshot {
            event_id,
            jpeg,
            width: image.cols() as u32,
            height: image.rows() as u32,
        }))
    }
}

/// Copies the part of `frame` around `b`: the box with as much context again on every side
/// (at least 240x180), widened to 4:3, clamped to the frame. Only this region is kept per track,
/// so a live track costs a small crop, not a whole frame.
fn crop_around(frame: &Mat, b: crate::pipeline::values::BBox) -> opencv::Result<Thumb> {
    let (fw, fh) = (frame.cols() as f32, frame.rows() as f32);
    let (cx, cy) = b.center();
    let mut w = (b.w * 2.0).max(240.0);
    let mut h = (b.h * 2.0).max(180.0);
    if w < h * 4.0 / 3.0 {
        w = h * 4.0 / 3.0;
    } else {
        h = w * 3.0 / 4.0;
    }
    let (w, h) = (w.min(fw), h.min(fh));
    let x = (cx - w / 2.0).clamp(0.0, fw - w);
    let y = (cy - h / 2.0).clamp(0.0, fh - h);
    let rect = Rect::new(x as i32, y as i32, (w as i32).max(1), (h as i32).max(1));
    let rect = rect & Rect::new(0, 0, frame.cols(), frame.rows());
    let image = Mat::roi(frame, rect)?.try_clone()?;
    Ok(Thumb {
        image,
        bbox: crate::pipeline::values::BBox::new(
            b.x - rect.x as f32,
            b.y - rect.y as f32,
            b.w,
            b.h,
        ),
    })
}

fn fill_from_track(e: &mut Event, t: &Track) {
    e.top_score = t.top_score;
    e.best_box = t.best_box.rounded();
    e.best_ms = t.best_ms;
    e.hits = t.hits;
    e.stationary = t.stationary;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrackerConfig;
    use crate::pipeline::values::{BBox, Detection};

    fn person(x: f32) -> Detection {
        Detection {
            class_id: 0,
            label: "person".into(),
            score: 0.9,
            bbox: BBox::new(x, 10.0, 20.0, 40.0),
            weak: false,
            appearance: None,
        }
    }

    #[test]
    fn a_failing_snapshot_never_costs_an_event_message() {
        let mut tracker = Tracker::new(TrackerConfig {
            min_hits: 2,
            min_move: 0.0,
            ..Default::default()
        });
        let snap = SnapshotOptions {
            max_side: 320,
            quality: 80,
        };
        let mut events = EventBuilder::new("cam", EventIds::after(0), 1000, snap);
        // An empty frame: cropping and encoding fail for every snapshot.
        let broken = Mat::default();
        let mut messages = Vec::new();
        for i in 0..3 {
            let (changes, _) = tracker.update(i * 100, (640.0, 480.0), &[person(10.0 + i as f32)]);
            let out = events.apply(changes, &tracker, Some(&broken), i * 100);
            assert!(out.snapshots.is_empty());
            messages.extend(out.messages);
        }
        let out = events.apply(tracker.finish(), &tracker, None, 300);
        messages.extend(out.messages);
        let kinds: Vec<EventKind> = messages.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, vec![EventKind::Start, EventKind::End]);
        assert_eq!(messages[1].event.end_ms, Some(200));
    }
}
