//! Multi-object tracking: Kalman-predicted boxes, ByteTrack's two-stage association solved
//! optimally, a buffer that keeps a missed object's track, and the rule that decides when a track
//! is a real object worth an event (a steady score, and it has moved).
//!
//! Pure and deterministic: the same detections at the same timestamps give the same tracks.

mod assign;
mod kalman;
mod track;

pub(crate) use track::Track;

use std::collections::VecDeque;

use assign::{hungarian, median};

use crate::config::TrackerConfig;
use crate::pipeline::values::{BBox, Detection};

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

/// A box within this fraction of the frame's width (height) of its left or right (top or bottom)
/// edge touches it: an object leaving the picture is seen last there, its box cut by the edge.
const EDGE_MARGIN: f32 = 0.02;

/// `tracker.min_hits` is counted at this frame interval (10 fps): a camera at 5 fps needs half as
/// many detections, one at 25 fps two and a half times as many, for the same second of walking.
const HITS_FRAME_MS: f32 = 100.0;

/// How many of the latest frame intervals the frame rate is the median of: a stall or a burst
/// of frames does not change it. Until `MIN_INTERVALS` are known, `min_hits` is taken as given.
const FRAME_INTERVALS: usize = 15;
const MIN_INTERVALS: usize = 5;

/// Two boxes whose colour signatures differ more than this are not the same object, however
/// well they overlap: the same person half a second apart stays under it 99 % of the time
/// (src/pipeline/appearance.rs has the measurements).
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
    /// The frame's width and height.
    frame: (f32, f32),
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
    /// The latest frame's time and the intervals before it, at most `FRAME_INTERVALS`.
    last_frame_ms: Option<i64>,
    intervals: VecDeque<f32>,
    /// `cfg.min_hits` at the frame rate of `intervals`.
    min_hits: u32,
}

impl Tracker {
    pub(crate) fn new(cfg: TrackerConfig) -> Self {
        Self {
            tracks: Vec::new(),
            next_id: 1,
            last_update_ms: None,
            last_frame_ms: None,
            intervals: VecDeque::with_capacity(FRAME_INTERVALS),
            min_hits: cfg.min_hits,
            cfg,
        }
    }

    /// Takes note of a frame at `ts_ms`: `min_hits` follows the frame rate.
    fn note_frame(&mut self, ts_ms: i64) {
        let Some(prev) = self.last_frame_ms.replace(ts_ms) else {
            return;
        };
        if ts_ms <= prev {
            return;
        }
        if self.intervals.len() == FRAME_INTERVALS {
            self.intervals.pop_front();
        }
        self.intervals.push_back((ts_ms - prev) as f32);
        if self.intervals.len() < MIN_INTERVALS {
            return;
        }
        let per_frame = median(self.intervals.iter().copied());
        let hits = self.cfg.min_hits as f32 * HITS_FRAME_MS / per_frame;
        // One detection has no velocity: never enough on its own (unless configured so).
        self.min_hits = (hits.round() as u32).max(self.cfg.min_hits.min(2));
    }

    pub(crate) fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// Whether a track has had `min_hits` detections (at the camera's frame rate, see
    /// `HITS_FRAME_MS`) or an event: young ones are dropped sooner and matched after the others.
    pub(crate) fn established(&self, t: &Track) -> bool {
        t.hits >= self.min_hits || t.confirmed
    }

    pub(crate) fn get(&self, id: u64) -> Option<&Track> {
        self.tracks.iter().find(|t| t.id == id)
    }

    /// Feeds one processed frame's detections; `frame` is its width and height. Returns the
    /// changes, and for each detection the id of the track it was assigned to, 0 for none (same
    /// order as `dets`).
    pub(crate) fn update(
        &mut self,
        ts_ms: i64,
        frame: (f32, f32),
        dets: &[Detection],
    ) -> (Vec<TrackChange>, Vec<u64>) {
        self.note_frame(ts_ms);
        let mut changes = Vec::new();
        let det_track = self.match_detections(ts_ms, frame, dets);
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
        // New tracks for confident detections nobody claimed.
        for (di, det) in dets.iter().enumerate() {
            if det.weak || det_track[di].is_some() || self.tracks.len() >= MAX_TRACKS {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            self.tracks
                .push(Track::new(id, det, ts_ms, self.cfg.score_window as usize));
            changes.push(TrackChange::Improved(id));
            det_ids[di] = id;
        }
        self.confirm(ts_ms, &mut changes);
        self.last_update_ms = Some(ts_ms);
        self.expire(ts_ms, &mut changes);
        (changes, det_ids)
    }

    /// The track (index) each detection continues, in four stages: established tracks take
    /// confident boxes first, then weak ones; young tracks take what is left, confident before
    /// weak.
    fn match_detections(
        &self,
        ts_ms: i64,
        frame: (f32, f32),
        dets: &[Detection],
    ) -> Vec<Option<usize>> {
        let mut m = Matching {
            frame,
            dets,
            predicted: self.tracks.iter().map(|t| t.predict(ts_ms)).collect(),
            track_used: vec![false; self.tracks.len()],
            det_track: vec![None; dets.len()],
        };
        let strong: Vec<usize> = (0..dets.len()).filter(|&i| !dets[i].weak).collect();
        let weak: Vec<usize> = (0..dets.len()).filter(|&i| dets[i].weak).collect();
        let established = |t: &Track| self.established(t);
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
        m.det_track
    }

    /// A track seen now that qualifies becomes an event: enough detections, moved, and a
    /// median score that is confident.
    fn confirm(&mut self, ts_ms: i64, changes: &mut Vec<TrackChange>) {
        let (cfg, min_hits) = (&self.cfg, self.min_hits);
        for t in &mut self.tracks {
            if !t.confirmed
                && t.last_seen_ms == ts_ms
                && t.hits >= min_hits
                && t.moved
                && t.median_score() >= cfg.min_score
            {
                t.confirmed = true;
                changes.push(TrackChange::Confirmed(t.id));
            }
        }
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
    /// for a while may have turned or stopped. A track whose object left the picture has no
    /// reach.
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
                .map_or(0.0, |last| (last - t.accounted_ms()).max(0) as f32 / 1000.0);
            // A track seen once has no velocity yet: its prediction is where the object was, and
            // an object moving half its width a frame (a car at 5-10 fps) overlaps that by a third.
            let min_iou = if t.hits == 1 {
                min_iou.min(UNPREDICTED_IOU)
            } else {
                min_iou
            };
            let gate = Gate {
                min_iou,
                reach: reach && !t.left_frame(m.frame),
                lost_s,
                // The object's typical size (the median of its latest boxes), once per track.
                typical_area: t.typical_area().max(1.0),
            };
            for (c, &di) in det_idx.iter().enumerate() {
                if let Some(pair) = pair_cost(t, &p, &dets[di], &gate) {
                    cost[r * det_idx.len() + c] = pair;
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

    /// Holds the stationary objects that `untouched` says no motion reaches at `ts_ms`: the
    /// detector is not asked to see them again (it may not even run), so not seeing them is no
    /// reason to end them. A parked car stays one event however long it stays; once motion
    /// reaches it, it must be seen again within `unseen_timeout_ms` as any track.
    pub(crate) fn hold(&mut self, ts_ms: i64, untouched: impl Fn(&Track) -> bool) {
        for t in self.tracks.iter_mut().filter(|t| t.stationary) {
            if untouched(t) {
                t.held_ms = t.held_ms.max(ts_ms);
            }
        }
    }

    /// Advances time without detections (the detector did not run on this frame): tracks can
    /// only expire.
    pub(crate) fn tick(&mut self, ts_ms: i64) -> Vec<TrackChange> {
        self.note_frame(ts_ms);
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
        let mut i = 0;
        while i < self.tracks.len() {
            let t = &self.tracks[i];
            let unseen = ts_ms - t.accounted_ms();
            let limit = if self.established(t) {
                self.cfg.unseen_timeout_ms
            } else {
                self.cfg.tentative_timeout_ms
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

/// What a track asks of a detection in one association pass.
struct Gate {
    /// The overlap that continues it.
    min_iou: f32,
    /// Whether a near miss may continue it (a lost track that did not walk out of the picture).
    reach: bool,
    /// How long it had been lost when the detector last ran.
    lost_s: f32,
    /// Its typical box area.
    typical_area: f32,
}

/// The cost of track `t`, predicted at `p`, continuing with detection `d`: 1 - IoU for an
/// overlap, 1 + distance/reach for a near miss, each plus the colour distance; `None` where a
/// gate refuses the pair.
fn pair_cost(t: &Track, p: &BBox, d: &Detection, g: &Gate) -> Option<f32> {
    if d.class_id != t.class_id {
        return None;
    }
    // An object does not double or halve its size from one frame to the next: a person walking
    // past a cone must not take over the cone's track, nor the reverse. The size is the
    // object's typical one, not the prediction's, which a few boxes drawn over a neighbour too
    // would swell until the object's own box no longer fitted.
    let ratio = d.bbox.area() / g.typical_area;
    if !(1.0 / MAX_AREA_RATIO..=MAX_AREA_RATIO).contains(&ratio) {
        return None;
    }
    // Colours tell apart two people whose boxes overlap as they cross.
    let colour = match (&t.appearance, &d.appearance) {
        (Some(a), Some(b)) => Some(a.distance(b)),
        _ => None,
    };
    if colour.is_some_and(|c| c > APPEARANCE_GATE) {
        return None;
    }
    let colour_cost = colour.unwrap_or(0.0);
    let iou = p.iou(&d.bbox);
    // The less the boxes overlap, the more the colours must agree.
    let colours_agree = colour.is_none_or(|c| c <= APPEARANCE_NEAR);
    if iou >= g.min_iou && (iou >= WEAK_IOU || colours_agree) {
        return Some(1.0 - iou + colour_cost);
    }
    if g.reach && colours_agree {
        let (px, py) = p.center();
        let (dx, dy) = d.bbox.center();
        let dist = ((dx - px).powi(2) + (dy - py).powi(2)).sqrt();
        let limit = 0.5 * p.h.max(p.w) + LOST_REACH_PER_S * g.lost_s * t.typical_extent();
        if dist <= limit {
            return Some(1.0 + dist / limit.max(1.0) + colour_cost);
        }
    }
    None
}

#[cfg(test)]
mod tests;
