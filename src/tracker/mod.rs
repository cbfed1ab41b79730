//! Multi-object tracking: Kalman-predicted boxes, ByteTrack's two-stage association solved
//! optimally, a buffer that keeps a missed object's track, and the rule that decides when a track
//! is a real object worth an event (a steady score, and it has moved).
//!
//! Pure and deterministic: the same detections at the same timestamps give the same tracks.

mod assign;
mod kalman;

use std::collections::VecDeque;

use assign::{hungarian, median};
use kalman::BoxFilter;

use crate::appearance::Appearance;
use crate::config::TrackerConfig;
use crate::models::{BBox, Detection};

/// More live tracks than this per camera is a detector gone wild; new candidates are ignored
/// rather than letting memory grow.
const MAX_TRACKS: usize = 256;

/// A weak detection continues a track only when it overlaps the prediction this much
/// (ByteTrack's second-stage threshold).
const WEAK_IOU: f32 = 0.5;

/// The IoU a track seen only once needs with a detection (its box does not move yet, see
/// `Tracker::associate`), when `tracker.iou_threshold` is higher.
const UNPREDICTED_IOU: f32 = 0.2;

/// A detection continues a track only if its area is within this factor of the track's typical
/// area (the median of its latest boxes).
const MAX_AREA_RATIO: f32 = 2.0;

/// How far beyond its prediction a lost track may find its object again, in the object's typical
/// sizes (larger side) per second lost: a walking person covers about one body height a second
/// (1.4 m/s for 1.7 m), and the prediction, which goes on at the last velocity, knows nothing of
/// a turn or a stop. Only with colours that agree (`APPEARANCE_NEAR`).
const LOST_REACH_PER_S: f32 = 1.0;

/// Two boxes whose colour signatures differ more than this are not the same object, however
/// well they overlap: the same person half a second apart stays under it 99 % of the time
/// (src/appearance.rs has the measurements).
const APPEARANCE_GATE: f32 = 0.4;

/// A near miss (no overlap, or a lost track found off its prediction) continues a track only
/// when the colours agree this well: the same person half a second apart is under it 94 % of
/// the time, two people near each other over it 91 % of the time.
const APPEARANCE_NEAR: f32 = 0.2;

/// How fast a track's colour signature follows its detections (a running average).
const APPEARANCE_RATE: f32 = 0.1;

/// A confident box overlapping another this much (IoU) shows both objects' colours: the track's
/// signature does not learn from it. Two people side by side, a shoulder apart, overlap less.
const CROWDED_IOU: f32 = 0.2;

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Track {
    pub id: u64,
    pub class_id: u32,
    pub label: String,
    /// The filtered box as of the latest detection: steadier than the detector's own box.
    pub bbox: BBox,
    filter: BoxFilter,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
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
    moved: bool,
    /// The latest detection scores, at most `score_window`.
    scores: VecDeque<f32>,
    /// The areas of the latest detection boxes, at most `score_window`: the object's typical
    /// size, which one box merged with a neighbour's does not move.
    areas: VecDeque<f32>,
    /// The larger sides of the same boxes: the object's typical extent, which a box cut short
    /// by an occlusion does not shrink.
    extents: VecDeque<f32>,
    /// Centre where the track was first seen.
    origin: (f32, f32),
    /// Where, and since when, the object has been staying (for `stationary`).
    rest: (BBox, i64),
    /// The running colour signature of its confident detections.
    appearance: Option<Appearance>,
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
    fn typical_area(&self) -> f32 {
        median(self.areas.iter().copied())
    }

    /// The median larger side of the latest detection boxes.
    fn typical_extent(&self) -> f32 {
        median(self.extents.iter().copied())
    }

    /// How far `p` is from `from`, in heights of the track's box.
    fn distance_in_heights(&self, from: (f32, f32), p: (f32, f32)) -> f32 {
        let d = ((p.0 - from.0).powi(2) + (p.1 - from.1).powi(2)).sqrt();
        d / self.bbox.h.max(self.bbox.w).max(1.0)
    }
}

/// What happened to tracks in one update, in this order within the list: the matched tracks'
/// stationary changes and improvements, new tracks (as improvements), confirmations, ends. A
/// track confirmed in an update becomes stationary in a later one at the earliest.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TrackChange {
    /// The track's top score rose in this frame (confirmed or not): a better snapshot moment.
    Improved(u64),
    /// The track just became a real object: its event starts.
    Confirmed(u64),
    /// A confirmed track's object stopped (true) or started moving again (false).
    Stationary(u64, bool),
    /// A confirmed track ended; it is no longer in the tracker.
    Ended(Box<Track>),
}

/// One update's matching so far: the tracks' predicted boxes, which tracks have a detection, and
/// which track each detection went to (indices into the tracker's tracks).
struct Matching<'a> {
    dets: &'a [Detection],
    predicted: Vec<BBox>,
    track_used: Vec<bool>,
    det_track: Vec<Option<usize>>,
}

impl Matching<'_> {
    /// The detections of `pool` that no track has taken yet.
    fn unmatched(&self, pool: &[usize]) -> Vec<usize> {
        pool.iter()
            .copied()
            .filter(|&d| self.det_track[d].is_none())
            .collect()
    }
}

pub(crate) struct Tracker {
    cfg: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
    /// When the detector last ran: tracks seen then are being tracked, the others are lost.
    last_update_ms: Option<i64>,
}

impl Tracker {
    pub(crate) fn new(cfg: TrackerConfig) -> Self {
        Self {
            cfg,
            tracks: Vec::new(),
            next_id: 1,
            last_update_ms: None,
        }
    }

    pub(crate) fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    pub(crate) fn get(&self, id: u64) -> Option<&Track> {
        self.tracks.iter().find(|t| t.id == id)
    }

    /// Feeds one processed frame's detections. Returns the changes, and for each detection the id
    /// of the track it was assigned to, 0 for none (same order as `dets`).
    pub(crate) fn update(
        &mut self,
        ts_ms: i64,
        dets: &[Detection],
    ) -> (Vec<TrackChange>, Vec<u64>) {
        let mut changes = Vec::new();
        let mut m = Matching {
            dets,
            predicted: self.tracks.iter().map(|t| t.predict(ts_ms)).collect(),
            track_used: vec![false; self.tracks.len()],
            det_track: vec![None; dets.len()],
        };
        let strong: Vec<usize> = (0..dets.len()).filter(|&i| !dets[i].weak).collect();
        let weak: Vec<usize> = (0..dets.len()).filter(|&i| dets[i].weak).collect();
        let established = |t: &Track| t.hits >= self.cfg.min_hits || t.confirmed;
        let seen_last = |t: &Track| Some(t.last_seen_ms) == self.last_update_ms;

        // 1. Established tracks, seen lately or not, against confident detections.
        let first: Vec<usize> = (0..self.tracks.len())
            .filter(|&t| established(&self.tracks[t]))
            .collect();
        self.associate(&mut m, &first, &strong, self.cfg.iou_threshold, true);
        // 2. Established tracks seen in the previous update and still unmatched, against weak
        //    detections: a poorly seen frame does not lose the object.
        let second: Vec<usize> = (0..self.tracks.len())
            .filter(|&t| !m.track_used[t] && established(&self.tracks[t]))
            .filter(|&t| seen_last(&self.tracks[t]))
            .collect();
        self.associate(&mut m, &second, &weak, WEAK_IOU, false);
        // 3. Young tracks against the confident detections left, then (those seen in the
        //    previous update) against the weak ones left: a young track takes its object's
        //    confident box before a weak one, so the confident box does not start a second
        //    track on the same object (ByteTrack too keeps unconfirmed tracks out of its
        //    weak-box stage).
        let third: Vec<usize> = (0..self.tracks.len())
            .filter(|&t| !m.track_used[t] && !established(&self.tracks[t]))
            .collect();
        let left = m.unmatched(&strong);
        self.associate(&mut m, &third, &left, self.cfg.iou_threshold, false);
        let fourth: Vec<usize> = third
            .iter()
            .copied()
            .filter(|&t| !m.track_used[t] && seen_last(&self.tracks[t]))
            .collect();
        let weak_left = m.unmatched(&weak);
        self.associate(&mut m, &fourth, &weak_left, WEAK_IOU, false);
        let det_track = m.det_track;

        let mut det_ids = vec![0u64; dets.len()];
        for (di, det) in dets.iter().enumerate() {
            if let Some(ti) = det_track[di] {
                det_ids[di] = self.tracks[ti].id;
                // A box that overlaps another object's shows some of that object's colours too:
                // the track's signature learns only from boxes standing alone.
                let alone = !dets.iter().enumerate().any(|(o, other)| {
                    o != di && !other.weak && other.bbox.iou(&det.bbox) > CROWDED_IOU
                });
                self.observe(ti, det, alone, ts_ms, &mut changes);
            }
        }
        // 4. New tracks for confident detections nobody claimed.
        for &di in &strong {
            if det_track[di].is_some() || self.tracks.len() >= MAX_TRACKS {
                continue;
            }
            let det = &dets[di];
            let id = self.next_id;
            self.next_id += 1;
            let mut scores = VecDeque::with_capacity(self.cfg.score_window as usize);
            scores.push_back(det.score);
            let mut areas = VecDeque::with_capacity(self.cfg.score_window as usize);
            areas.push_back(det.bbox.area());
            let mut extents = VecDeque::with_capacity(self.cfg.score_window as usize);
            extents.push_back(det.bbox.h.max(det.bbox.w));
            let centre = det.bbox.center();
            self.tracks.push(Track {
                id,
                class_id: det.class_id,
                label: det.label.clone(),
                bbox: det.bbox,
                filter: BoxFilter::new(det.bbox, ts_ms),
                first_seen_ms: ts_ms,
                last_seen_ms: ts_ms,
                hits: 1,
                score: det.score,
                top_score: det.score,
                best_box: det.bbox,
                best_ms: ts_ms,
                confirmed: false,
                stationary: false,
                moved: false,
                scores,
                areas,
                extents,
                origin: centre,
                rest: (det.bbox, ts_ms),
                appearance: det.appearance,
            });
            changes.push(TrackChange::Improved(id));
            det_ids[di] = id;
        }

        let cfg = &self.cfg;
        // A track that qualifies becomes an event.
        for t in &mut self.tracks {
            if !t.confirmed
                && t.last_seen_ms == ts_ms
                && t.hits >= cfg.min_hits
                && t.moved
                && t.median_score() >= cfg.min_score
            {
                t.confirmed = true;
                changes.push(TrackChange::Confirmed(t.id));
            }
        }
        self.last_update_ms = Some(ts_ms);
        self.expire(ts_ms, &mut changes);
        (changes, det_ids)
    }

    /// Takes detection `det` into track `ti`.
    fn observe(
        &mut self,
        ti: usize,
        det: &Detection,
        alone: bool,
        ts_ms: i64,
        changes: &mut Vec<TrackChange>,
    ) {
        let (window, min_move, still_ms) = (
            self.cfg.score_window as usize,
            self.cfg.min_move,
            self.cfg.stationary_after_ms,
        );
        let t = &mut self.tracks[ti];
        t.filter.update(det.bbox, ts_ms);
        t.bbox = t.filter.bbox();
        t.last_seen_ms = ts_ms;
        t.hits += 1;
        t.score = det.score;
        if t.scores.len() == window {
            t.scores.pop_front();
        }
        t.scores.push_back(det.score);
        if t.areas.len() == window {
            t.areas.pop_front();
        }
        t.areas.push_back(det.bbox.area());
        if t.extents.len() == window {
            t.extents.pop_front();
        }
        t.extents.push_back(det.bbox.h.max(det.bbox.w));
        let centre = t.bbox.center();
        if !t.moved && t.distance_in_heights(t.origin, centre) >= min_move {
            t.moved = true;
        }
        if t.distance_in_heights(t.rest.0.center(), centre) >= min_move {
            t.rest = (t.bbox, ts_ms);
            if t.stationary {
                t.stationary = false;
                changes.push(TrackChange::Stationary(t.id, false));
            }
        } else {
            if t.confirmed && !t.stationary && ts_ms - t.rest.1 >= still_ms {
                t.stationary = true;
                changes.push(TrackChange::Stationary(t.id, true));
            }
        }
        if !det.weak && alone {
            match (&mut t.appearance, &det.appearance) {
                (Some(a), Some(new)) => a.blend(new, APPEARANCE_RATE),
                (a @ None, Some(new)) => *a = Some(*new),
                _ => {}
            }
        }
        if det.score > t.top_score {
            t.top_score = det.score;
            t.best_box = det.bbox;
            t.best_ms = ts_ms;
            changes.push(TrackChange::Improved(t.id));
        }
    }

    /// Optimal one-to-one matching of `tracks` to `dets` (indices) of the same class and similar
    /// size, by IoU with the predicted box. With `reach`, a track may also take a detection it
    /// does not overlap enough, whose centre is within half its height of the prediction, plus
    /// `LOST_REACH_PER_S` of its typical size for every second it has been lost, if the colours
    /// agree: small boxes missed for a second drift off their prediction, and a person hidden
    /// for a while may have turned or stopped.
    fn associate(
        &self,
        m: &mut Matching,
        tracks: &[usize],
        det_idx: &[usize],
        min_iou: f32,
        reach: bool,
    ) {
        if tracks.is_empty() || det_idx.is_empty() {
            return;
        }
        let dets = m.dets;
        // Costs: 1 - IoU for overlaps, 1 + distance/reach for near misses, each plus the colour
        // distance; NONE otherwise.
        const NONE: f32 = 1e6;
        let mut cost = vec![NONE; tracks.len() * det_idx.len()];
        for (r, &ti) in tracks.iter().enumerate() {
            let t = &self.tracks[ti];
            let p = m.predicted[ti];
            // How long the track had been lost when the detector last ran (0 for a track seen
            // then, whatever the frame rate).
            let lost_s = self
                .last_update_ms
                .map_or(0.0, |last| (last - t.last_seen_ms).max(0) as f32 / 1000.0);
            // A track seen once has no velocity yet: its prediction is where the object was, and
            // an object moving half its width a frame (a car at 5-10 fps) overlaps that by a third.
            let min_iou = if t.hits == 1 {
                min_iou.min(UNPREDICTED_IOU)
            } else {
                min_iou
            };
            // The object's typical size (the median of its latest boxes), once per track.
            let typical_area = t.typical_area().max(1.0);
            for (c, &di) in det_idx.iter().enumerate() {
                let d = &dets[di];
                if d.class_id != t.class_id {
                    continue;
                }
                // An object does not double or halve its size from one frame to the next: a
                // person walking past a cone must not take over the cone's track, nor the
                // reverse. The size is the object's typical one, not the prediction's, which a
                // few boxes drawn over a neighbour too would swell until the object's own box
                // no longer fitted.
                let ratio = d.bbox.area() / typical_area;
                if !(1.0 / MAX_AREA_RATIO..=MAX_AREA_RATIO).contains(&ratio) {
                    continue;
                }
                // Colours tell apart two people whose boxes overlap as they cross.
                let colour = match (&t.appearance, &d.appearance) {
                    (Some(a), Some(b)) => Some(a.distance(b)),
                    _ => None,
                };
                if colour.is_some_and(|c| c > APPEARANCE_GATE) {
                    continue;
                }
                let colour_cost = colour.unwrap_or(0.0);
                let iou = p.iou(&d.bbox);
                let cell = &mut cost[r * det_idx.len() + c];
                // The less the boxes overlap, the more the colours must agree.
                let colours_agree = colour.is_none_or(|c| c <= APPEARANCE_NEAR);
                if iou >= min_iou && (iou >= WEAK_IOU || colours_agree) {
                    *cell = 1.0 - iou + colour_cost;
                } else if reach && colours_agree {
                    let (px, py) = p.center();
                    let (dx, dy) = d.bbox.center();
                    let dist = ((dx - px).powi(2) + (dy - py).powi(2)).sqrt();
                    let limit = 0.5 * p.h.max(p.w) + LOST_REACH_PER_S * lost_s * t.typical_extent();
                    if dist <= limit {
                        *cell = 1.0 + dist / limit.max(1.0) + colour_cost;
                    }
                }
            }
        }
        for (r, c) in hungarian(&cost, tracks.len(), det_idx.len()) {
            if cost[r * det_idx.len() + c] < NONE {
                m.track_used[tracks[r]] = true;
                m.det_track[det_idx[c]] = Some(tracks[r]);
            }
        }
    }

    /// Advances time without detections (the detector did not run on this frame): tracks can
    /// only expire.
    pub(crate) fn tick(&mut self, ts_ms: i64) -> Vec<TrackChange> {
        let mut changes = Vec::new();
        self.expire(ts_ms, &mut changes);
        changes
    }

    /// Ends every confirmed track (the source ended or the daemon stops); the others vanish.
    pub(crate) fn finish(&mut self) -> Vec<TrackChange> {
        let tracks = std::mem::take(&mut self.tracks);
        tracks
            .into_iter()
            .filter(|t| t.confirmed)
            .map(|t| TrackChange::Ended(Box::new(t)))
            .collect()
    }

    fn expire(&mut self, ts_ms: i64, changes: &mut Vec<TrackChange>) {
        let cfg = &self.cfg;
        let mut i = 0;
        while i < self.tracks.len() {
            let t = &self.tracks[i];
            let unseen = ts_ms - t.last_seen_ms;
            let limit = if t.confirmed || t.hits >= cfg.min_hits {
                cfg.unseen_timeout_ms
            } else {
                cfg.tentative_timeout_ms
            };
            if unseen > limit {
                let t = self.tracks.remove(i);
                if t.confirmed {
                    changes.push(TrackChange::Ended(Box::new(t)));
                }
            } else {
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, y: f32, score: f32) -> Detection {
        Detection {
            class_id: 0,
            label: "person".into(),
            score,
            bbox: BBox::new(x, y, 40.0, 100.0),
            weak: score < 0.4,
            appearance: None,
        }
    }

    fn cfg() -> TrackerConfig {
        TrackerConfig {
            min_hits: 3,
            min_score: 0.5,
            unseen_timeout_ms: 2000,
            tentative_timeout_ms: 300,
            ..Default::default()
        }
    }

    /// Runs `frames` (detections per 100 ms frame; `None`: the detector did not run) and returns
    /// every change, and the track id given to each detection.
    fn run(
        tr: &mut Tracker,
        frames: &[Option<Vec<Detection>>],
    ) -> (Vec<TrackChange>, Vec<Vec<u64>>) {
        let mut all = Vec::new();
        let mut ids = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let ts = i as i64 * 100;
            match f {
                Some(dets) => {
                    let (c, got) = tr.update(ts, dets);
                    all.extend(c);
                    ids.push(got);
                }
                None => {
                    all.extend(tr.tick(ts));
                    ids.push(Vec::new());
                }
            }
        }
        all.extend(tr.finish());
        (all, ids)
    }

    fn count(changes: &[TrackChange], f: impl Fn(&TrackChange) -> bool) -> usize {
        changes.iter().filter(|c| f(c)).count()
    }

    /// Exactly one event, and every detection went to one and the same track.
    fn assert_one_event_on_one_track(changes: &[TrackChange], ids: Vec<Vec<u64>>) {
        assert_eq!(starts(changes), 1);
        let seen: std::collections::BTreeSet<u64> = ids.into_iter().flatten().collect();
        assert_eq!(seen.len(), 1, "{seen:?}");
    }

    /// The `stationary` values the changes announced, in order.
    fn stationary_changes(changes: &[TrackChange]) -> Vec<bool> {
        changes
            .iter()
            .filter_map(|c| match c {
                TrackChange::Stationary(_, s) => Some(*s),
                _ => None,
            })
            .collect()
    }

    fn starts(changes: &[TrackChange]) -> usize {
        count(changes, |c| matches!(c, TrackChange::Confirmed(_)))
    }

    #[test]
    fn a_box_that_never_moves_makes_no_event_even_after_a_minute() {
        let mut tr = Tracker::new(cfg());
        let frames: Vec<_> = (0..600)
            .map(|i| {
                // The detector's jitter: a few pixels each way.
                let j = ((i * 7) % 5) as f32 - 2.0;
                Some(vec![det(300.0 + j, 200.0 - j, 0.65)])
            })
            .collect();
        let (changes, ids) = run(&mut tr, &frames);
        assert_eq!(starts(&changes), 0);
        assert!(ids.iter().all(|i| i == &ids[0]), "one track all along");
    }

    #[test]
    fn a_car_that_drives_in_and_parks_is_one_event_that_becomes_stationary() {
        let mut tr = Tracker::new(cfg());
        // 5 s driving 20 px per frame, then parked for 60 s.
        let frames: Vec<_> = (0..650)
            .map(|i| Some(vec![det(20.0 * (i.min(50)) as f32, 300.0, 0.8)]))
            .collect();
        let (changes, _) = run(&mut tr, &frames);
        assert_eq!(starts(&changes), 1);
        let stationary = stationary_changes(&changes);
        assert_eq!(stationary, vec![true]);
        let ended: Vec<&Box<Track>> = changes
            .iter()
            .filter_map(|c| match c {
                TrackChange::Ended(t) => Some(t),
                _ => None,
            })
            .collect();
        assert_eq!(ended.len(), 1);
        assert!(ended[0].stationary);
    }

    #[test]
    fn a_person_waiting_who_shifts_slowly_keeps_one_track() {
        // Walks in for 3 s, then waits 20 s drifting half a pixel per frame: 100 px, under one
        // box height from where they stopped at any moment of 10 s, so they stay stationary;
        // their track, pinned after 10 s, must follow the drift rather than stay matched to
        // the spot where they first stopped (which the box has left by then).
        let frames: Vec<_> = (0..230)
            .map(|i| {
                let x = if i < 30 {
                    10.0 * i as f32
                } else {
                    300.0 + 0.5 * (i - 30) as f32
                };
                Some(vec![det(x, 200.0, 0.8)])
            })
            .collect();
        let (changes, ids) = run(&mut Tracker::new(cfg()), &frames);
        assert_one_event_on_one_track(&changes, ids);
    }

    #[test]
    fn a_person_lost_for_a_moment_who_comes_back_off_their_path_continues_their_event() {
        // A walks right for 3 s, is missed for half a second, and comes back 80 px lower than
        // their path: found again by the lost track's reach, or as a new track that continues
        // A's event once it qualifies; one event either way. Someone of another colour there
        // starts their own.
        let comes_back_in = |colour: usize| {
            let person = |i: usize, y: f32, c: usize| Detection {
                appearance: Some(Appearance::pure(c)),
                ..det(50.0 + 10.0 * i as f32, y, 0.8)
            };
            let mut frames: Vec<Option<Vec<Detection>>> = Vec::new();
            for i in 0..30 {
                frames.push(Some(vec![person(i, 200.0, 0)]));
            }
            for _ in 30..35 {
                frames.push(Some(Vec::new()));
            }
            for i in 35..70 {
                frames.push(Some(vec![person(i, 280.0, colour)]));
            }
            let (changes, ids) = run(&mut Tracker::new(cfg()), &frames);
            (starts(&changes), ids[0][0], ids[69][0])
        };
        let (events, first, last) = comes_back_in(0);
        assert_eq!(events, 1, "A is one event");
        assert_eq!(first, last, "and keeps its id");
        let (events, first, last) = comes_back_in(4);
        assert_eq!(events, 2, "someone else is their own event");
        assert_ne!(first, last);
    }

    #[test]
    fn a_car_that_parks_and_drives_off_again_is_one_event() {
        // 5 s driving in at 20 px per frame, 15 s parked, then off again. The parked track is
        // pinned to its spot, so the car leaving starts a new track; it continues the event,
        // which stops being stationary.
        let x = |i: i64| 20.0 * (i.min(50) + (i - 200).max(0)) as f32;
        let frames: Vec<_> = (0..230)
            .map(|i| Some(vec![det(x(i), 300.0, 0.8)]))
            .collect();
        let (changes, _) = run(&mut Tracker::new(cfg()), &frames);
        assert_eq!(starts(&changes), 1);
        let stationary = stationary_changes(&changes);
        assert_eq!(stationary, vec![true, false]);
        let ends = count(&changes, |c| matches!(c, TrackChange::Ended(_)));
        assert_eq!(ends, 1);
    }

    #[test]
    fn a_person_missed_for_one_and_a_half_seconds_mid_walk_keeps_one_track() {
        let mut tr = Tracker::new(cfg());
        let frames: Vec<_> = (0..80)
            .map(|i| (!(30..45).contains(&i)).then(|| vec![det(50.0 + 6.0 * i as f32, 200.0, 0.8)]))
            .collect();
        let (changes, ids) = run(&mut tr, &frames);
        assert_one_event_on_one_track(&changes, ids);
    }

    #[test]
    fn two_people_crossing_keep_their_ids() {
        // A walks right, B walks left, 8 px per 100 ms; at the crossing B hides A.
        let mut tr = Tracker::new(cfg());
        let mut a_ids = Vec::new();
        let mut b_ids = Vec::new();
        for i in 0..60 {
            let ts = i * 100;
            let ax = 100.0 + 8.0 * i as f32;
            let bx = 560.0 - 8.0 * i as f32;
            let hidden = (ax - bx).abs() < 20.0;
            let mut dets = vec![det(bx, 50.0, 0.8)];
            if !hidden {
                dets.push(det(ax, 52.0, 0.7));
            }
            let (_, ids) = tr.update(ts, &dets);
            b_ids.push(ids[0]);
            if !hidden {
                a_ids.push(ids[1]);
            }
        }
        let ends = tr.finish();
        assert_eq!(ends.len(), 2, "exactly two tracks: {ends:?}");
        assert!(
            a_ids.iter().all(|&id| id == a_ids[0]),
            "A kept one id: {a_ids:?}"
        );
        assert!(
            b_ids.iter().all(|&id| id == b_ids[0]),
            "B kept one id: {b_ids:?}"
        );
        assert_ne!(a_ids[0], b_ids[0]);
    }

    #[test]
    fn a_flickering_detection_with_alternating_scores_is_one_event() {
        let mut tr = Tracker::new(cfg());
        // Seen every other frame; when seen, its score alternates 0.3 (weak) and 0.7.
        let frames: Vec<_> = (0..60)
            .map(|i| {
                (i % 2 == 0).then(|| {
                    let score = if i % 4 == 0 { 0.7 } else { 0.3 };
                    vec![det(50.0 + 6.0 * i as f32, 200.0, score)]
                })
            })
            .collect();
        let (changes, ids) = run(&mut tr, &frames);
        assert_one_event_on_one_track(&changes, ids);
    }

    #[test]
    fn weak_detections_keep_a_track_but_never_start_one() {
        let mut tr = Tracker::new(cfg());
        let frames: Vec<_> = (0..30)
            .map(|i| Some(vec![det(50.0 + 6.0 * i as f32, 200.0, 0.3)]))
            .collect();
        let (changes, ids) = run(&mut tr, &frames);
        assert_eq!(starts(&changes), 0);
        assert!(ids.iter().flatten().all(|&id| id == 0));
    }

    #[test]
    fn a_steady_low_score_does_not_make_an_event_however_long_it_moves() {
        let mut tr = Tracker::new(cfg());
        // Confident enough to be tracked (0.45), not enough for the median rule (0.5).
        let frames: Vec<_> = (0..60)
            .map(|i| Some(vec![det(50.0 + 6.0 * i as f32, 200.0, 0.45)]))
            .collect();
        let (changes, _) = run(&mut tr, &frames);
        assert_eq!(starts(&changes), 0);
    }

    #[test]
    fn a_lost_track_does_not_take_a_nearby_object_of_another_colour() {
        let coloured = |x: f32, colour: usize| Detection {
            appearance: Some(Appearance::pure(colour)),
            ..det(x, 200.0, 0.8)
        };
        // A (colour 0) walks right for 2 s, then is missed; a second later someone turns up
        // just ahead of where A would be, where geometry alone would hand them A's track.
        // Returns whether they got it.
        let comes_back_as = |colour| {
            let mut tr = Tracker::new(cfg());
            for i in 0..20 {
                tr.update(i * 100, &[coloured(50.0 + 6.0 * i as f32, 0)]);
            }
            let a = tr.tracks()[0].id;
            tr.tick(2500);
            let (_, ids) = tr.update(3000, &[coloured(50.0 + 6.0 * 30.0 + 30.0, colour)]);
            ids[0] == a
        };
        assert!(
            !comes_back_as(4),
            "another colour must not continue A's track"
        );
        assert!(
            comes_back_as(0),
            "A's colour at that place continues A's track"
        );
    }

    #[test]
    fn a_person_hidden_for_a_second_and_a_half_who_turned_meanwhile_keeps_their_track() {
        // A walks right at 100 px/s for 2 s, is hidden for 1.5 s, and reappears having turned
        // down: 75 px along their path and 110 px below it, 130 px from where the prediction
        // (still going right) expects them, far beyond half a box. A lost track reaches a box
        // height further per second lost, with colours that agree; someone else there starts
        // their own track.
        let comes_back_as = |colour: usize| {
            let person = |x: f32, y: f32, c: usize| Detection {
                appearance: Some(Appearance::pure(c)),
                ..det(x, y, 0.8)
            };
            let mut tr = Tracker::new(cfg());
            for i in 0..20 {
                tr.update(i * 100, &[person(50.0 + 10.0 * i as f32, 200.0, 0)]);
            }
            let a = tr.tracks()[0].id;
            for i in 20..35 {
                tr.update(i * 100, &[]);
            }
            let (_, ids) = tr.update(3500, &[person(50.0 + 190.0 + 75.0, 310.0, colour)]);
            ids[0] == a
        };
        assert!(comes_back_as(0), "A's colours there continue A's track");
        assert!(!comes_back_as(4), "another colour must not continue it");
    }

    #[test]
    fn a_box_swollen_for_a_moment_by_a_neighbour_does_not_cost_the_track() {
        // A person walks for 2 s; for half a second the detector draws their box over a
        // neighbour too (wider and taller, growing), then gives their own box again. The
        // swollen boxes pull the prediction's size up; the object's typical size (the median
        // of its latest boxes) still says the own box is the same person.
        let sized = |i: i64, w: f32, h: f32| Detection {
            bbox: BBox::new(50.0 + 6.0 * i as f32, 200.0, w, h),
            ..det(0.0, 0.0, 0.8)
        };
        let mut frames: Vec<Option<Vec<Detection>>> = Vec::new();
        for i in 0..20 {
            frames.push(Some(vec![sized(i, 40.0, 100.0)]));
        }
        for (k, (w, h)) in [(46.0, 112.0), (52.0, 124.0), (56.0, 136.0), (56.0, 140.0)]
            .into_iter()
            .enumerate()
        {
            frames.push(Some(vec![sized(20 + k as i64, w, h)]));
        }
        for i in 24..40 {
            frames.push(Some(vec![sized(i, 40.0, 100.0)]));
        }
        let (changes, ids) = run(&mut Tracker::new(cfg()), &frames);
        assert_one_event_on_one_track(&changes, ids);
    }

    #[test]
    fn a_track_learns_its_colours_only_from_boxes_standing_alone() {
        // A (colour 0) walks alone, then for 3 s beside B (colour 4), so close that A's boxes
        // show mostly B's colours; then A is hidden for a second and comes back a little off
        // its prediction, where only colours that agree let a track continue. Had A's signature
        // learnt from the shared boxes, it would be B's colours by then, and A would come back
        // as a new track.
        let person = |x: f32, y: f32, a: Appearance| Detection {
            appearance: Some(a),
            ..det(x, y, 0.8)
        };
        let mut shared = Appearance::pure(0);
        shared.blend(&Appearance::pure(4), 0.7);
        let x = |i: usize| 50.0 + 6.0 * i as f32;
        let mut frames: Vec<Option<Vec<Detection>>> = Vec::new();
        for i in 0..15 {
            frames.push(Some(vec![person(x(i), 200.0, Appearance::pure(0))]));
        }
        for i in 15..45 {
            // B walks alongside, 15 px to the right (IoU about 0.45).
            frames.push(Some(vec![
                person(x(i), 200.0, shared),
                person(x(i) + 15.0, 200.0, Appearance::pure(4)),
            ]));
        }
        for i in 45..53 {
            // A hidden; B walks off downwards.
            let y = 200.0 + 30.0 * (i - 44) as f32;
            frames.push(Some(vec![person(x(i) + 15.0, y, Appearance::pure(4))]));
        }
        for i in 53..60 {
            // A again, 20 px ahead of where it would be (IoU about 0.33).
            frames.push(Some(vec![person(x(i) + 20.0, 200.0, Appearance::pure(0))]));
        }
        let (_, ids) = run(&mut Tracker::new(cfg()), &frames);
        let a = ids[0][0];
        assert!(
            ids[53..].iter().all(|f| f[0] == a),
            "A, back alone, must keep its track {a}: {:?}",
            &ids[44..]
        );
    }

    #[test]
    fn a_young_track_takes_its_confident_box_before_a_weak_one() {
        // A young track, and in its next frame two boxes on the object: a weak one right on the
        // prediction and a confident one a little off it (not inside the weak one enough to be
        // a part of it). The confident box continues the track; no second track starts.
        let mut tr = Tracker::new(cfg());
        let (_, first) = tr.update(0, &[det(100.0, 200.0, 0.8)]);
        let (_, ids) = tr.update(100, &[det(100.0, 200.0, 0.3), det(112.0, 200.0, 0.8)]);
        assert_eq!(
            ids[1], first[0],
            "the confident box continues the young track"
        );
        assert_eq!(ids[0], 0, "the weak box is left over");
        assert_eq!(tr.tracks().len(), 1);
    }

    #[test]
    fn a_track_confirms_only_once_it_has_moved_and_ends_after_the_unseen_timeout() {
        let mut tr = Tracker::new(cfg());
        let mut confirmed_at = None;
        for i in 0..40 {
            let (changes, _) = tr.update(i * 100, &[det(100.0 + i as f32 * 5.0, 50.0, 0.8)]);
            if changes.contains(&TrackChange::Confirmed(1)) {
                confirmed_at = Some(i);
            }
        }
        // One box height (100 px) at 5 px a frame: about 20 frames, less the filter's lag.
        let at = confirmed_at.expect("confirmed");
        assert!((18..=24).contains(&at), "confirmed at frame {at}");
        assert!(
            tr.tick(3900 + 2000).is_empty(),
            "unseen 2000 ms is not over the timeout"
        );
        let changes = tr.tick(3900 + 2001);
        let TrackChange::Ended(t) = &changes[0] else {
            panic!("{changes:?}")
        };
        assert_eq!(
            (t.id, t.first_seen_ms, t.last_seen_ms, t.hits),
            (1, 0, 3900, 40)
        );
        assert!(tr.tracks().is_empty());
    }

    #[test]
    fn unconfirmed_candidate_disappears_silently() {
        let mut tr = Tracker::new(cfg());
        tr.update(0, &[det(10.0, 10.0, 0.9)]);
        assert!(tr.tick(1000).is_empty());
        assert!(tr.tracks().is_empty());
    }
}
