//! One real object, one track, one event: a track that lies inside another for a second goes,
//! and a new track that is a lost event's object come back continues that event.

use super::assign::overlap_of_smaller;
use super::{Tracker, APPEARANCE_NEAR, DUPLICATE_OVERLAP, MAX_AREA_RATIO, RESUME_MS, SHADOW_MS};

impl Tracker {
    /// The lost event track that the new track `ti` continues, if any: one real object, one
    /// event. A person the detector loses for a moment (behind someone, or mid-crossing, when
    /// the box lands too far off the prediction) comes back as a new track; if that track began
    /// within `RESUME_MS` of the event's track being last seen, near where it was (half a box
    /// plus a box per second between), the two were never seen at once, and their sizes and
    /// colours agree, it is the same object and takes over the event.
    pub(super) fn lost_event_continued_by(&self, ti: usize) -> Option<usize> {
        let t = &self.tracks[ti];
        let mut best: Option<(usize, f32)> = None;
        for (li, l) in self.tracks.iter().enumerate() {
            let gap_ms = t.first_seen_ms - l.last_seen_ms;
            if li == ti
                || !l.confirmed
                || l.merged
                || l.class_id != t.class_id
                || !(1..=RESUME_MS).contains(&gap_ms)
            {
                continue;
            }
            let ratio = t.typical_area() / l.typical_area().max(1.0);
            if !(1.0 / MAX_AREA_RATIO..=MAX_AREA_RATIO).contains(&ratio) {
                continue;
            }
            if let (Some(a), Some(b)) = (&l.appearance, &t.appearance) {
                if a.distance(b) > APPEARANCE_NEAR {
                    continue;
                }
            }
            let reach = 0.5 + gap_ms as f32 / 1000.0;
            let d = l.distance_in_heights(l.bbox.center(), t.origin);
            if d <= reach && best.is_none_or(|(_, bd)| d < bd) {
                best = Some((li, d));
            }
        }
        best.map(|(li, _)| li)
    }

    /// Track `ti` takes over the event of lost track `li`: its id, start and best moment (the
    /// snapshot already taken stays right); `li` is marked to go.
    pub(super) fn continue_event(&mut self, li: usize, ti: usize) {
        let l = &mut self.tracks[li];
        l.merged = true;
        let (id, first_seen_ms, hits) = (l.id, l.first_seen_ms, l.hits);
        let (top_score, best_box, best_ms) = (l.top_score, l.best_box, l.best_ms);
        let t = &mut self.tracks[ti];
        t.id = id;
        t.first_seen_ms = first_seen_ms;
        t.hits += hits;
        t.top_score = top_score;
        t.best_box = best_box;
        t.best_ms = best_ms;
        t.confirmed = true;
    }

    /// No two tracks on one object: a track seen in this frame whose box has lain inside
    /// another's (same class, also seen) for `SHADOW_MS` is a part of that object, or a ghost
    /// that latched onto it. It goes, unless it is already an event; of two such tracks the one
    /// that is not an event goes, else the younger.
    pub(super) fn drop_shadows(&mut self, ts_ms: i64, det_ids: &mut [u64]) {
        let seen: Vec<usize> = (0..self.tracks.len())
            .filter(|&i| self.tracks[i].last_seen_ms == ts_ms)
            .collect();
        let mut shadowed = vec![false; self.tracks.len()];
        for &a in &seen {
            for &b in &seen {
                let (ta, tb) = (&self.tracks[a], &self.tracks[b]);
                if a == b || ta.class_id != tb.class_id || ta.bbox.area() > tb.bbox.area() {
                    continue;
                }
                // `a` is the smaller box; which of the two would go?
                if overlap_of_smaller(&ta.bbox, &tb.bbox) < DUPLICATE_OVERLAP {
                    continue;
                }
                let loser = match (ta.confirmed, tb.confirmed) {
                    (true, true) => continue,
                    (false, true) => a,
                    (true, false) => b,
                    // The younger goes (ids break ties, so both orders agree).
                    (false, false) if (ta.first_seen_ms, ta.id) > (tb.first_seen_ms, tb.id) => a,
                    (false, false) => b,
                };
                shadowed[loser] = true;
            }
        }
        for (i, t) in self.tracks.iter_mut().enumerate() {
            if !shadowed[i] {
                t.shadowed_since = None;
            } else if t.shadowed_since.is_none() {
                t.shadowed_since = Some(ts_ms);
            }
        }
        let gone: Vec<u64> = self
            .tracks
            .iter()
            .filter(|t| {
                t.shadowed_since
                    .is_some_and(|since| ts_ms - since >= SHADOW_MS)
            })
            .map(|t| t.id)
            .collect();
        if gone.is_empty() {
            return;
        }
        self.tracks.retain(|t| !gone.contains(&t.id));
        for id in det_ids.iter_mut().filter(|id| gone.contains(id)) {
            *id = 0;
        }
    }
}
