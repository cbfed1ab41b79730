//! Multi-object tracking: matches each frame's detections to tracks by IoU with a constant-velocity
//! prediction, confirms tracks after enough hits, and ends them when they stay unseen.
//!
//! Pure and deterministic: the same detections at the same timestamps give the same tracks.

use crate::config::TrackerConfig;
use crate::models::{BBox, Detection};

/// More live tracks than this per camera is a detector gone wild; new candidates are ignored
/// rather than letting memory grow.
const MAX_TRACKS: usize = 256;

#[derive(Clone, Debug, PartialEq)]
pub struct Track {
    pub id: u64,
    pub class_id: u32,
    pub label: String,
    /// The box of the latest detection.
    pub bbox: BBox,
    /// Centre velocity in pixels per millisecond.
    vx: f32,
    vy: f32,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub hits: u32,
    /// Score of the latest detection.
    pub score: f32,
    pub top_score: f32,
    pub best_box: BBox,
    pub best_ms: i64,
    pub confirmed: bool,
}

impl Track {
    /// Where the track's box should be at `ts_ms`, assuming it keeps its velocity.
    pub fn predict(&self, ts_ms: i64) -> BBox {
        let dt = (ts_ms - self.last_seen_ms) as f32;
        BBox {
            x: self.bbox.x + self.vx * dt,
            y: self.bbox.y + self.vy * dt,
            ..self.bbox
        }
    }
}

/// What happened to tracks in one update, in this order within the list: improvements,
/// confirmations, ends.
#[derive(Clone, Debug, PartialEq)]
pub enum TrackChange {
    /// The track's top score rose in this frame (confirmed or not): a better snapshot moment.
    Improved(u64),
    /// The track just became confirmed.
    Confirmed(u64),
    /// A confirmed track ended; it is no longer in the tracker.
    Ended(Track),
}

pub struct Tracker {
    cfg: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Self {
        Self {
            cfg,
            tracks: Vec::new(),
            next_id: 1,
        }
    }

    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    pub fn get(&self, id: u64) -> Option<&Track> {
        self.tracks.iter().find(|t| t.id == id)
    }

    /// Whether any confirmed track is alive (the motion gate keeps the detector running then).
    pub fn has_confirmed(&self) -> bool {
        self.tracks.iter().any(|t| t.confirmed)
    }

    /// Feeds one processed frame's detections. Returns the changes, and for each detection the id
    /// of the track it was assigned to (same order as `dets`).
    pub fn update(&mut self, ts_ms: i64, dets: &[Detection]) -> (Vec<TrackChange>, Vec<u64>) {
        let mut changes = Vec::new();
        let assignment = self.assign(ts_ms, dets);
        let mut det_tracks = vec![0u64; dets.len()];

        for (di, det) in dets.iter().enumerate() {
            let id = match assignment[di] {
                Some(ti) => {
                    let t = &mut self.tracks[ti];
                    let dt = (ts_ms - t.last_seen_ms) as f32;
                    if dt > 0.0 {
                        let (ox, oy) = t.bbox.center();
                        let (nx, ny) = det.bbox.center();
                        let (ix, iy) = ((nx - ox) / dt, (ny - oy) / dt);
                        // The first measured velocity is taken as it is; later ones are smoothed
                        // against detector jitter.
                        if t.hits == 1 {
                            (t.vx, t.vy) = (ix, iy);
                        } else {
                            t.vx = 0.5 * t.vx + 0.5 * ix;
                            t.vy = 0.5 * t.vy + 0.5 * iy;
                        }
                    }
                    t.bbox = det.bbox;
                    t.last_seen_ms = ts_ms;
                    t.hits += 1;
                    t.score = det.score;
                    if det.score > t.top_score {
                        t.top_score = det.score;
                        t.best_box = det.bbox;
                        t.best_ms = ts_ms;
                        changes.push(TrackChange::Improved(t.id));
                    }
                    t.id
                }
                None => {
                    if self.tracks.len() >= MAX_TRACKS {
                        continue;
                    }
                    let id = self.next_id;
                    self.next_id += 1;
                    self.tracks.push(Track {
                        id,
                        class_id: det.class_id,
                        label: det.label.clone(),
                        bbox: det.bbox,
                        vx: 0.0,
                        vy: 0.0,
                        first_seen_ms: ts_ms,
                        last_seen_ms: ts_ms,
                        hits: 1,
                        score: det.score,
                        top_score: det.score,
                        best_box: det.bbox,
                        best_ms: ts_ms,
                        confirmed: false,
                    });
                    changes.push(TrackChange::Improved(id));
                    id
                }
            };
            det_tracks[di] = id;
        }

        for t in &mut self.tracks {
            if !t.confirmed
                && t.last_seen_ms == ts_ms
                && t.hits >= self.cfg.min_hits
                && t.top_score >= self.cfg.min_score
            {
                t.confirmed = true;
                changes.push(TrackChange::Confirmed(t.id));
            }
        }
        self.expire(ts_ms, &mut changes);
        (changes, det_tracks)
    }

    /// Advances time without detections (the detector did not run on this frame): tracks can
    /// only expire.
    pub fn tick(&mut self, ts_ms: i64) -> Vec<TrackChange> {
        let mut changes = Vec::new();
        self.expire(ts_ms, &mut changes);
        changes
    }

    /// Ends every confirmed track (the source ended or the daemon stops); tentative ones vanish.
    pub fn finish(&mut self) -> Vec<TrackChange> {
        let tracks = std::mem::take(&mut self.tracks);
        tracks
            .into_iter()
            .filter(|t| t.confirmed)
            .map(TrackChange::Ended)
            .collect()
    }

    fn expire(&mut self, ts_ms: i64, changes: &mut Vec<TrackChange>) {
        let cfg = &self.cfg;
        let mut i = 0;
        while i < self.tracks.len() {
            let t = &self.tracks[i];
            let unseen = ts_ms - t.last_seen_ms;
            let limit = if t.confirmed {
                cfg.unseen_timeout_ms
            } else {
                cfg.tentative_timeout_ms
            };
            if unseen > limit {
                let t = self.tracks.remove(i);
                if t.confirmed {
                    changes.push(TrackChange::Ended(t));
                }
            } else {
                i += 1;
            }
        }
    }

    /// Greedy assignment between predicted track boxes and detections of the same class: by IoU,
    /// best pairs first, then by centre distance for the rest. Returns, per detection, the index
    /// of its track.
    fn assign(&self, ts_ms: i64, dets: &[Detection]) -> Vec<Option<usize>> {
        let predicted: Vec<BBox> = self.tracks.iter().map(|t| t.predict(ts_ms)).collect();
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (ti, t) in self.tracks.iter().enumerate() {
            for (di, d) in dets.iter().enumerate() {
                if t.class_id != d.class_id {
                    continue;
                }
                let iou = predicted[ti].iou(&d.bbox);
                if iou >= self.cfg.iou_threshold {
                    pairs.push((iou, ti, di));
                }
            }
        }
        // Ties are broken by position so the result never depends on float noise alone.
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut track_used = vec![false; self.tracks.len()];
        let mut out = vec![None; dets.len()];
        for (_, ti, di) in pairs {
            if !track_used[ti] && out[di].is_none() {
                track_used[ti] = true;
                out[di] = Some(ti);
            }
        }
        // Second pass for what IoU left: small boxes jitter enough between frames that they
        // barely overlap, so a detection of similar size whose centre is within half the
        // track's height of the prediction continues it.
        let mut near: Vec<(f32, usize, usize)> = Vec::new();
        for (ti, t) in self.tracks.iter().enumerate() {
            if track_used[ti] {
                continue;
            }
            let p = predicted[ti];
            let (px, py) = p.center();
            let reach = 0.5 * p.h.max(p.w);
            for (di, d) in dets.iter().enumerate() {
                if out[di].is_some() || t.class_id != d.class_id {
                    continue;
                }
                let (dx, dy) = d.bbox.center();
                let dist = ((dx - px).powi(2) + (dy - py).powi(2)).sqrt();
                let ratio = d.bbox.area() / p.area().max(1.0);
                if dist <= reach && (0.5..=2.0).contains(&ratio) {
                    near.push((dist, ti, di));
                }
            }
        }
        near.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        for (_, ti, di) in near {
            if !track_used[ti] && out[di].is_none() {
                track_used[ti] = true;
                out[di] = Some(ti);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(x: f32, y: f32, score: f32) -> Detection {
        Detection {
            class_id: 0,
            label: "person".into(),
            score,
            bbox: BBox::new(x, y, 40.0, 100.0),
        }
    }

    fn cfg() -> TrackerConfig {
        TrackerConfig {
            iou_threshold: 0.2,
            min_hits: 3,
            min_score: 0.5,
            unseen_timeout_ms: 1000,
            tentative_timeout_ms: 300,
            update_interval_ms: 1000,
        }
    }

    fn ended(changes: &[TrackChange]) -> Vec<u64> {
        changes
            .iter()
            .filter_map(|c| match c {
                TrackChange::Ended(t) => Some(t.id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn track_is_confirmed_on_its_third_hit_and_ends_after_the_unseen_timeout() {
        let mut tr = Tracker::new(cfg());
        let mut confirmed_at = None;
        for i in 0..5 {
            let (changes, _) = tr.update(i * 100, &[person(100.0 + i as f32 * 5.0, 50.0, 0.8)]);
            if changes.contains(&TrackChange::Confirmed(1)) {
                confirmed_at = Some(i);
            }
        }
        assert_eq!(confirmed_at, Some(2));
        assert!(
            ended(&tr.tick(1400)).is_empty(),
            "unseen 1000 ms is not yet over the timeout"
        );
        let changes = tr.tick(1401);
        assert_eq!(ended(&changes), vec![1]);
        let TrackChange::Ended(t) = &changes[0] else {
            unreachable!()
        };
        assert_eq!((t.first_seen_ms, t.last_seen_ms, t.hits), (0, 400, 5));
        assert!(tr.tracks().is_empty());
    }

    #[test]
    fn low_scoring_track_is_never_confirmed() {
        let mut tr = Tracker::new(cfg());
        for i in 0..10 {
            let (changes, _) = tr.update(i * 100, &[person(100.0, 50.0, 0.3)]);
            assert!(!changes
                .iter()
                .any(|c| matches!(c, TrackChange::Confirmed(_))));
        }
        assert!(tr.finish().is_empty());
    }

    #[test]
    fn two_people_crossing_with_occlusion_keep_their_ids() {
        // A walks right, B walks left, 8 px per 100 ms; at the crossing B hides A for 5 frames.
        let mut tr = Tracker::new(cfg());
        let mut a_ids = Vec::new();
        let mut b_ids = Vec::new();
        for i in 0..60 {
            let ts = i * 100;
            let ax = 100.0 + 8.0 * i as f32;
            let bx = 560.0 - 8.0 * i as f32;
            let hidden = (ax - bx).abs() < 20.0;
            let mut dets = vec![person(bx, 50.0, 0.8)];
            if !hidden {
                dets.push(person(ax, 52.0, 0.7));
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
    fn flickering_detection_within_the_timeout_stays_one_track() {
        let mut tr = Tracker::new(cfg());
        let mut ids = std::collections::BTreeSet::new();
        for i in 0..30 {
            if i % 3 == 2 {
                tr.tick(i * 100);
                continue;
            }
            let (_, got) = tr.update(i * 100, &[person(200.0 + i as f32 * 3.0, 40.0, 0.9)]);
            ids.extend(got);
        }
        assert_eq!(ids.len(), 1);
        assert_eq!(tr.finish().len(), 1);
    }

    #[test]
    fn unconfirmed_candidate_disappears_silently() {
        let mut tr = Tracker::new(cfg());
        tr.update(0, &[person(10.0, 10.0, 0.9)]);
        assert!(tr.tick(1000).is_empty());
        assert!(tr.tracks().is_empty());
    }
}
