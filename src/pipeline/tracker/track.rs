//! One tracked object: its filtered box, its history of scores and sizes, its colour
//! signature and what it has done (confirmed, moved, stationary). The tracker decides; a track
//! remembers.

use std::collections::VecDeque;

use super::assign::median;
use super::kalman::BoxFilter;
use super::EDGE_MARGIN;
use crate::pipeline::appearance::Appearance;
use crate::pipeline::values::{BBox, Detection};

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Track {
    pub id: u64,
    pub class_id: u32,
    pub label: String,
    /// The filtered box as of the latest detection: steadier than the detector's own box.
    pub bbox: BBox,
    pub(super) filter: BoxFilter,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// The latest frame where the object was held: stationary, and no motion touched it, so the
    /// detector was not expected to see it again (see [`Tracker::hold`]). It ages from the later
    /// of this and `last_seen_ms`.
    pub(super) held_ms: i64,
    pub hits: u32,
    /// Score of the latest detection.
    pub score: f32,
    pub top_score: f32,
    pub best_box: BBox,
    pub best_ms: i64,
    /// The track is a real object: an event exists for it from now until it ends.
    pub confirmed: bool,
    /// The object has stayed in one spot for `stationary_after_ms` (only for confirmed tracks).
    pub stationary: bool,
    /// Whether the object has moved `min_move` from where it was first seen.
    pub(super) moved: bool,
    /// The latest detection scores, at most `score_window`.
    pub(super) scores: VecDeque<f32>,
    /// The areas of the latest detection boxes, at most `score_window`: the object's typical
    /// size, which one box merged with a neighbour's does not move.
    pub(super) areas: VecDeque<f32>,
    /// The larger sides of the same boxes: the object's typical extent, which a box cut short
    /// by an occlusion does not shrink.
    pub(super) extents: VecDeque<f32>,
    /// Centre where the track was first seen.
    pub(super) origin: (f32, f32),
    /// Where, and since when, the object has been staying (for `stationary`).
    pub(super) rest: (BBox, i64),
    /// The running colour signature of its confident detections.
    pub(super) appearance: Option<Appearance>,
}

impl Track {
    /// Where the track's box should be at `ts_ms`, assuming it keeps its velocity.
    pub(crate) fn predict(&self, ts_ms: i64) -> BBox {
        self.filter.peek(ts_ms)
    }

    /// The median of the latest detection scores.
    pub(crate) fn median_score(&self) -> f32 {
        median(self.scores.iter().copied())
    }

    /// The median area of the latest detection boxes.
    pub(super) fn typical_area(&self) -> f32 {
        median(self.areas.iter().copied())
    }

    /// The median larger side of the latest detection boxes.
    pub(super) fn typical_extent(&self) -> f32 {
        median(self.extents.iter().copied())
    }

    /// Whether the object walked out of the picture: its latest box touches an edge of the
    /// `frame` (width, height) and it was moving out through that edge. Where it went, nothing
    /// can be seen; a person coming in there later is someone else, however alike (the lost
    /// reach would take them over).
    pub(super) fn left_frame(&self, frame: (f32, f32)) -> bool {
        let (vx, vy) = self.filter.velocity();
        let b = &self.bbox;
        let (mx, my) = (EDGE_MARGIN * frame.0, EDGE_MARGIN * frame.1);
        (vx < 0.0 && b.x <= mx)
            || (vx > 0.0 && b.x + b.w >= frame.0 - mx)
            || (vy < 0.0 && b.y <= my)
            || (vy > 0.0 && b.y + b.h >= frame.1 - my)
    }

    /// How far `p` is from `from`, in heights of the track's box.
    pub(super) fn distance_in_heights(&self, from: (f32, f32), p: (f32, f32)) -> f32 {
        let d = ((p.0 - from.0).powi(2) + (p.1 - from.1).powi(2)).sqrt();
        d / self.bbox.h.max(self.bbox.w).max(1.0)
    }
}

impl Track {
    /// Until when the track is accounted for: seen, or held.
    pub(super) fn accounted_ms(&self) -> i64 {
        self.last_seen_ms.max(self.held_ms)
    }

    /// A new, young track from its first (confident) detection.
    pub(super) fn new(id: u64, det: &Detection, ts_ms: i64, window: usize) -> Self {
        let with = |v: f32| {
            let mut q = VecDeque::with_capacity(window);
            q.push_back(v);
            q
        };
        Track {
            id,
            class_id: det.class_id,
            label: det.label.clone(),
            bbox: det.bbox,
            filter: BoxFilter::new(det.bbox, ts_ms),
            first_seen_ms: ts_ms,
            last_seen_ms: ts_ms,
            held_ms: ts_ms,
            hits: 1,
            score: det.score,
            top_score: det.score,
            best_box: det.bbox,
            best_ms: ts_ms,
            confirmed: false,
            stationary: false,
            moved: false,
            scores: with(det.score),
            areas: with(det.bbox.area()),
            extents: with(det.bbox.h.max(det.bbox.w)),
            origin: det.bbox.center(),
            rest: (det.bbox, ts_ms),
            appearance: det.appearance,
        }
    }
}
