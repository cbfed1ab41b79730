//! When the detector looks at a frame: its own rate, apart from the capture rate, and the
//! objects it need not look at again. Pure, so the same frames give the same runs live, in
//! replay and with a detector pool.

use crate::pipeline::motion::MotionResult;
use crate::pipeline::values::BBox;

/// The detector's rate on the frames' clock: time is cut into slots of `1 / fps` and the first
/// frame of each slot is due. Whether a frame is due depends only on its own time and the
/// previous frame's, never on what the detector or tracker did, so a pool of workers that
/// detects frames ahead of the tracker decides exactly as the tracker's thread does.
///
/// A live camera whose frames jitter may get two runs closer than `1 / fps` across a slot
/// boundary, never more than one run per slot: the rate holds on average and at most.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct DetectRate {
    /// Runs per second; 0: every frame.
    fps: f64,
}

impl DetectRate {
    pub(crate) fn new(fps: f32) -> Self {
        Self {
            fps: if fps.is_finite() { fps.max(0.0) } else { 0.0 } as f64,
        }
    }

    fn slot(&self, ts_ms: i64) -> i64 {
        (ts_ms as f64 * self.fps / 1000.0).floor() as i64
    }

    /// Whether the frame at `ts_ms` is due, the frame before it being at `prev_ms` (`None`:
    /// it is the first).
    pub(crate) fn due(&self, prev_ms: Option<i64>, ts_ms: i64) -> bool {
        match prev_ms {
            _ if self.fps == 0.0 => true,
            None => true,
            Some(prev) => self.slot(ts_ms) != self.slot(prev),
        }
    }
}

/// Whether motion touches `bbox` (source-frame pixels): a moving blob overlaps it, or the frame
/// changed as a whole (a light change), or motion was found but not where (no regions: motion
/// off, or a failed frame, which count as motion everywhere).
pub(crate) fn motion_touches(motion: &MotionResult, bbox: &BBox) -> bool {
    if motion.light_change || (motion.motion && motion.regions.is_empty()) {
        return true;
    }
    // A blob just beside the box counts: the moving part of an object (an arm, a door) may lie
    // a little outside the box drawn when it stood still.
    let near = grown(bbox, 0.1);
    motion.regions.iter().any(|r| r.intersects(&near))
}

/// A box grown by `f` of its larger side on every side.
fn grown(b: &BBox, f: f32) -> BBox {
    b.grown(f * b.w.max(b.h))
}

/// Between the rate's slots, whether a frame still needs the detector: a track too young to
/// be trusted yet (`young`), two tracks close enough to be confused (their predicted boxes,
/// grown by a quarter, meet), or motion that no track's predicted box explains (something
/// new). Otherwise the predictions carry the tracks to the next slot.
pub(crate) fn needs_detection(tracks: &[(BBox, bool)], motion: &MotionResult) -> bool {
    if tracks.iter().any(|(_, young)| *young) {
        return true;
    }
    let near: Vec<BBox> = tracks.iter().map(|(b, _)| grown(b, 0.25)).collect();
    for (i, a) in near.iter().enumerate() {
        if near[i + 1..].iter().any(|b| a.intersects(b)) {
            return true;
        }
    }
    motion.motion
        && motion
            .regions
            .iter()
            .any(|r| !near.iter().any(|b| b.intersects(r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first frame of every slot, and only it: a 10 fps clip at 5 detector runs a second is
    /// detected every second frame.
    #[test]
    fn five_runs_a_second_on_a_ten_fps_clip_take_every_second_frame() {
        let rate = DetectRate::new(5.0);
        let ts: Vec<i64> = (0..10).map(|i| i * 100).collect();
        let due: Vec<bool> = ts
            .iter()
            .enumerate()
            .map(|(i, &t)| rate.due(i.checked_sub(1).map(|p| ts[p]), t))
            .collect();
        assert_eq!(
            due,
            [true, false, true, false, true, false, true, false, true, false]
        );
    }

    /// 0 is every frame; a rate above the capture rate is every frame too.
    #[test]
    fn no_rate_or_a_rate_above_the_frames_takes_every_frame() {
        for fps in [0.0, 10.0, 30.0] {
            let rate = DetectRate::new(fps);
            assert!(
                (1..50).all(|i| rate.due(Some((i - 1) * 100), i * 100)),
                "{fps}"
            );
        }
    }

    /// Jittered live frames (Unix milliseconds, 10 fps, +-30 ms) at 2 runs a second: never two
    /// runs in one slot, and as many runs as slots.
    #[test]
    fn jittered_live_frames_get_one_run_per_slot() {
        let rate = DetectRate::new(2.0);
        let start = 1_764_633_600_000i64;
        let ts: Vec<i64> = (0..600)
            .map(|i| start + i * 100 + [0, 30, -30, 17, -11][i as usize % 5])
            .collect();
        let runs: Vec<i64> = ts
            .windows(2)
            .filter(|w| rate.due(Some(w[0]), w[1]))
            .map(|w| w[1])
            .collect();
        // 600 frames over 60 s: 120 slots of 500 ms, the first one's run being frame 0.
        assert!((119..=120).contains(&runs.len()), "{}", runs.len());
        let slots: std::collections::BTreeSet<i64> = runs.iter().map(|t| t / 500).collect();
        assert_eq!(slots.len(), runs.len(), "two runs in one slot");
    }

    #[test]
    fn motion_touches_a_box_it_overlaps_or_comes_near_and_not_one_far_away() {
        let car = BBox::new(100.0, 100.0, 100.0, 50.0);
        let at = |x: f32, y: f32| MotionResult {
            motion: true,
            regions: vec![BBox::new(x, y, 20.0, 20.0)],
            ..Default::default()
        };
        assert!(motion_touches(&at(150.0, 120.0), &car), "inside");
        assert!(motion_touches(&at(205.0, 120.0), &car), "just beside it");
        assert!(!motion_touches(&at(400.0, 120.0), &car), "far away");
        assert!(!motion_touches(&MotionResult::default(), &car), "no motion");
        let light = MotionResult {
            light_change: true,
            ..Default::default()
        };
        assert!(motion_touches(&light, &car), "a light change");
        let nowhere = MotionResult {
            motion: true,
            ..Default::default()
        };
        assert!(motion_touches(&nowhere, &car), "motion without regions");
    }

    #[test]
    fn detection_is_needed_for_young_or_close_tracks_and_unexplained_motion_only() {
        let a = BBox::new(100.0, 100.0, 40.0, 100.0);
        let far = BBox::new(400.0, 100.0, 40.0, 100.0);
        let close = BBox::new(160.0, 100.0, 40.0, 100.0);
        let on = |b: &BBox| MotionResult {
            motion: true,
            regions: vec![*b],
            ..Default::default()
        };
        assert!(!needs_detection(&[(a, false), (far, false)], &on(&a)));
        assert!(
            needs_detection(&[(a, true), (far, false)], &on(&a)),
            "young"
        );
        assert!(
            needs_detection(&[(a, false), (close, false)], &on(&a)),
            "close"
        );
        assert!(
            needs_detection(&[(a, false)], &on(&far)),
            "motion where no track is"
        );
        assert!(
            !needs_detection(&[], &MotionResult::default()),
            "nothing at all"
        );
    }
}
