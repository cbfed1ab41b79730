//! Zones and counting lines on a camera's picture, followed per track: when an object has
//! entered a zone (inside for `inertia` frames, and `loitering_s` if set) and when it crossed a
//! line, and which way. Everything is decided on the tracker's smoothed box, at the bottom-centre
//! (where the object stands), in frame pixels.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::base::geometry::BBox;
use crate::config::{point_in_polygon, CameraConfig};

/// A line crossing: which line, which way, when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crossing {
    pub line: String,
    /// `left` or `right`: the side of the line the object crossed to, seen along the line
    /// from its first point to its second as the picture shows it. For a line drawn from top
    /// to bottom, `left` is moving left to right across the picture.
    pub direction: Direction,
    pub ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Left,
    Right,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Left => "left",
            Direction::Right => "right",
        }
    }
}

/// What happened to a track in one frame.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ZoneEvent {
    Entered(String),
    Left(String),
    Crossed(Crossing),
}

struct Zone {
    name: String,
    points: Vec<[f32; 2]>,
    labels: Vec<String>,
    inertia: u32,
    loiter_ms: i64,
}

struct Line {
    name: String,
    a: [f32; 2],
    b: [f32; 2],
    labels: Vec<String>,
}

fn applies(labels: &[String], label: &str) -> bool {
    labels.is_empty() || labels.iter().any(|l| l == label)
}

#[derive(Clone, Default)]
struct ZoneState {
    /// Consecutive frames inside (or outside) so far.
    streak_in: u32,
    streak_out: u32,
    /// When the current run of frames inside began.
    inside_since: Option<i64>,
    /// Has entered and not left.
    inside: bool,
}

#[derive(Clone, Default)]
struct LineState {
    /// The last position clearly on one side of the line (px), and that side (true: left).
    settled: Option<([f32; 2], bool)>,
    /// Since when the object has been clearly on the other side, not yet for `SETTLE_MS`.
    crossing_since: Option<i64>,
}

/// How long an object must stay clearly on the other side of a line for its crossing to count;
/// the crossing's time is when it got there. A box's bottom edge jitters by a tenth of its
/// height and more from one detection to the next (legs, a bag, a partial box), which moves the
/// point across a line the object walks along; nobody really crosses and comes back within a
/// fifth of a second. Measured against ground-truth crossings: bench/count_truth.sh.
const SETTLE_MS: i64 = 200;

/// One track's zones and lines, and what it has done so far.
#[derive(Clone, Default)]
pub(crate) struct TrackRecord {
    zones: Vec<ZoneState>,
    lines: Vec<LineState>,
    /// Zones entered, in order, each once.
    pub entered: Vec<String>,
    pub crossings: Vec<Crossing>,
}

/// A camera's zones and lines, and each live track's state in them.
pub(crate) struct Zones {
    zones: Vec<Zone>,
    lines: Vec<Line>,
    tracks: HashMap<u64, TrackRecord>,
}

impl Zones {
    pub(crate) fn new(camera: Option<&CameraConfig>) -> Self {
        let (zones, lines) = camera.map_or((Vec::new(), Vec::new()), |c| {
            (
                c.zones
                    .iter()
                    .map(|z| Zone {
                        name: z.name.clone(),
                        points: z.points.clone(),
                        labels: z.labels.clone(),
                        inertia: z.inertia.max(1),
                        loiter_ms: (z.loitering_s as f64 * 1000.0).round() as i64,
                    })
                    .collect(),
                c.lines
                    .iter()
                    .map(|l| Line {
                        name: l.name.clone(),
                        a: l.points[0],
                        b: l.points[1],
                        labels: l.labels.clone(),
                    })
                    .collect(),
            )
        });
        Self {
            zones,
            lines,
            tracks: HashMap::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.zones.is_empty() && self.lines.is_empty()
    }

    pub(crate) fn zone_names(&self) -> impl Iterator<Item = &str> {
        self.zones.iter().map(|z| z.name.as_str())
    }

    pub(crate) fn line_names(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(|l| l.name.as_str())
    }

    /// One frame: the tracks seen in it (id, label, smoothed box in pixels of a `w` x `h`
    /// frame). A track not seen keeps its state (it may be hidden for a moment); call
    /// [`Zones::retain`] with the tracks that still exist.
    pub(crate) fn update<'a>(
        &mut self,
        ts_ms: i64,
        w: f32,
        h: f32,
        seen: impl IntoIterator<Item = (u64, &'a str, BBox)>,
    ) -> Vec<(u64, ZoneEvent)> {
        let mut out = Vec::new();
        if self.is_empty() {
            return out;
        }
        for (id, label, b) in seen {
            let rec = self.tracks.entry(id).or_insert_with(|| TrackRecord {
                zones: vec![ZoneState::default(); self.zones.len()],
                lines: vec![LineState::default(); self.lines.len()],
                ..Default::default()
            });
            let (px, py) = b.foot();
            follow_zones(
                &self.zones,
                rec,
                (id, label),
                (px / w, py / h),
                ts_ms,
                &mut out,
            );
            follow_lines(&self.lines, rec, (id, label), &b, (w, h), ts_ms, &mut out);
        }
        out
    }

    /// Forgets the tracks for which `alive` is false.
    pub(crate) fn retain(&mut self, mut alive: impl FnMut(u64) -> bool) {
        self.tracks.retain(|id, _| alive(*id));
    }

    /// What a track has done so far.
    pub(crate) fn record(&self, track_id: u64) -> Option<&TrackRecord> {
        self.tracks.get(&track_id)
    }

    /// How many of the tracks `counted` selects are in each zone now, in the zones' order.
    pub(crate) fn occupancy(&self, mut counted: impl FnMut(u64) -> bool) -> Vec<u64> {
        let mut n = vec![0; self.zones.len()];
        for (&id, rec) in &self.tracks {
            if !counted(id) {
                continue;
            }
            for (count, st) in n.iter_mut().zip(&rec.zones) {
                *count += u64::from(st.inside);
            }
        }
        n
    }

    /// The zones a track is in now.
    pub(crate) fn current(&self, track_id: u64) -> Vec<String> {
        self.tracks
            .get(&track_id)
            .map(|rec| {
                self.zones
                    .iter()
                    .zip(&rec.zones)
                    .filter(|(_, st)| st.inside)
                    .map(|(z, _)| z.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Twice the signed area of (a, b, p) over |ab|: the distance of `p` from the line through `a`
/// and `b`, negative on the left of a -> b as the picture shows it (y grows downwards).
fn side(a: [f32; 2], b: [f32; 2], p: [f32; 2]) -> f32 {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let len = (dx * dx + dy * dy).sqrt().max(1e-6);
    (dx * (p[1] - a[1]) - dy * (p[0] - a[0])) / len
}

/// Whether segment p1-p2 crosses segment a-b.
fn segments_cross(p1: [f32; 2], p2: [f32; 2], a: [f32; 2], b: [f32; 2]) -> bool {
    let orient = |o: [f32; 2], s: [f32; 2], t: [f32; 2]| {
        (s[0] - o[0]) * (t[1] - o[1]) - (s[1] - o[1]) * (t[0] - o[0])
    };
    let (d1, d2) = (orient(a, b, p1), orient(a, b, p2));
    let (d3, d4) = (orient(p1, p2, a), orient(p1, p2, b));
    (d1 > 0.0) != (d2 > 0.0) && (d3 > 0.0) != (d4 > 0.0)
}

/// One frame of the object `id` (a `label`) for each zone: inside when its foot (in fractions
/// of the frame) is, for `inertia` frames and `loitering_s`; entered and left go to `out`.
fn follow_zones(
    zones: &[Zone],
    rec: &mut TrackRecord,
    (id, label): (u64, &str),
    foot: (f32, f32),
    ts_ms: i64,
    out: &mut Vec<(u64, ZoneEvent)>,
) {
    for (zone, st) in zones.iter().zip(&mut rec.zones) {
        if !applies(&zone.labels, label) {
            continue;
        }
        let inside = point_in_polygon(&zone.points, foot);
        if inside {
            st.streak_in += 1;
            st.streak_out = 0;
            st.inside_since.get_or_insert(ts_ms);
        } else {
            st.streak_out += 1;
            st.streak_in = 0;
            st.inside_since = None;
        }
        let stayed = st
            .inside_since
            .is_some_and(|since| ts_ms - since >= zone.loiter_ms);
        if !st.inside && st.streak_in >= zone.inertia && stayed {
            st.inside = true;
            if !rec.entered.contains(&zone.name) {
                rec.entered.push(zone.name.clone());
            }
            out.push((id, ZoneEvent::Entered(zone.name.clone())));
        } else if st.inside && st.streak_out >= zone.inertia {
            st.inside = false;
            out.push((id, ZoneEvent::Left(zone.name.clone())));
        }
    }
}

/// One frame of the object `id` (a `label`, box `b` in a `w` x `h` frame) for each counting
/// line: a crossing goes to `out` once the foot has settled on the other side.
fn follow_lines(
    lines: &[Line],
    rec: &mut TrackRecord,
    (id, label): (u64, &str),
    b: &BBox,
    (w, h): (f32, f32),
    ts_ms: i64,
    out: &mut Vec<(u64, ZoneEvent)>,
) {
    let (px, py) = b.foot();
    // A side counts once the point is a tenth of the box's height (at least 2 px) off
    // the line: a box jittering on the line never settles on the other side.
    let margin = (b.h * 0.1).max(2.0);
    for (line, st) in lines.iter().zip(&mut rec.lines) {
        if !applies(&line.labels, label) {
            continue;
        }
        let (a, bb) = (
            [line.a[0] * w, line.a[1] * h],
            [line.b[0] * w, line.b[1] * h],
        );
        let p = [px, py];
        let d = side(a, bb, p);
        if d.abs() < margin {
            continue;
        }
        let left = d < 0.0;
        let Some((from, was_left)) = st.settled else {
            st.settled = Some((p, left));
            continue;
        };
        // Back on its side, or round one of the line's ends (not through it): no
        // crossing.
        if was_left == left || !segments_cross(from, p, a, bb) {
            st.settled = Some((p, left));
            st.crossing_since = None;
            continue;
        }
        let since = *st.crossing_since.get_or_insert(ts_ms);
        if ts_ms - since >= SETTLE_MS {
            let crossing = Crossing {
                line: line.name.clone(),
                direction: if left {
                    Direction::Left
                } else {
                    Direction::Right
                },
                ms: since,
            };
            rec.crossings.push(crossing.clone());
            out.push((id, ZoneEvent::Crossed(crossing)));
            st.settled = Some((p, left));
            st.crossing_since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LineConfig, ZoneConfig};

    const W: f32 = 1000.0;
    const H: f32 = 1000.0;

    fn camera(zones: Vec<ZoneConfig>, lines: Vec<LineConfig>) -> CameraConfig {
        let mut cam: CameraConfig =
            toml::from_str("id = \"c\"\nsource = \"x.avi\"\n").expect("camera");
        cam.zones = zones;
        cam.lines = lines;
        cam
    }

    fn zone(inertia: u32, loitering_s: f32, labels: &[&str]) -> ZoneConfig {
        ZoneConfig {
            name: "yard".into(),
            // The right half of the picture.
            points: vec![[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]],
            labels: labels.iter().map(|s| s.to_string()).collect(),
            inertia,
            loitering_s,
        }
    }

    fn door() -> LineConfig {
        // Top to bottom through the middle: `left` is moving left to right.
        LineConfig {
            name: "door".into(),
            points: [[0.5, 0.1], [0.5, 0.9]],
            labels: Vec::new(),
        }
    }

    /// A 100 px tall person standing at (x, 500).
    fn at(x: f32) -> BBox {
        BBox::new(x - 20.0, 400.0, 40.0, 100.0)
    }

    /// Feeds one track through positions `xs`, a frame each 100 ms; returns what happened.
    fn walk(z: &mut Zones, label: &str, xs: &[f32]) -> Vec<ZoneEvent> {
        xs.iter()
            .enumerate()
            .flat_map(|(i, &x)| z.update(i as i64 * 100, W, H, [(1, label, at(x))]))
            .map(|(_, e)| e)
            .collect()
    }

    #[test]
    fn an_object_enters_after_inertia_frames_and_leaves_after_as_many_outside() {
        let mut z = Zones::new(Some(&camera(vec![zone(3, 0.0, &[])], vec![])));
        // Two frames inside, one out (a flicker on the edge): not entered.
        assert!(walk(&mut z, "person", &[600.0, 600.0, 400.0]).is_empty());
        let mut z = Zones::new(Some(&camera(vec![zone(3, 0.0, &[])], vec![])));
        let ev = walk(
            &mut z,
            "person",
            &[400.0, 600.0, 610.0, 620.0, 630.0, 400.0, 400.0, 400.0],
        );
        assert_eq!(
            ev,
            [
                ZoneEvent::Entered("yard".into()),
                ZoneEvent::Left("yard".into())
            ]
        );
        assert_eq!(z.record(1).unwrap().entered, ["yard"]);
        assert!(z.current(1).is_empty());
    }

    #[test]
    fn loitering_counts_only_an_object_that_stays() {
        // 1 s of loitering; frames are 100 ms apart.
        let mut z = Zones::new(Some(&camera(vec![zone(1, 1.0, &[])], vec![])));
        let passing = walk(&mut z, "person", &[600.0; 8]);
        assert!(
            passing.is_empty(),
            "0.7 s inside is not loitering: {passing:?}"
        );
        let mut z = Zones::new(Some(&camera(vec![zone(1, 1.0, &[])], vec![])));
        let staying = walk(&mut z, "person", &[600.0; 12]);
        assert_eq!(staying, [ZoneEvent::Entered("yard".into())]);
        assert_eq!(z.current(1), ["yard"]);
    }

    #[test]
    fn zone_labels_filter_the_objects_that_count() {
        let mut z = Zones::new(Some(&camera(vec![zone(1, 0.0, &["car"])], vec![])));
        assert!(walk(&mut z, "person", &[600.0; 5]).is_empty());
        let mut z = Zones::new(Some(&camera(vec![zone(1, 0.0, &["car"])], vec![])));
        assert_eq!(walk(&mut z, "car", &[600.0; 5]).len(), 1);
    }

    #[test]
    fn a_box_jittering_on_the_line_counts_at_most_once() {
        let mut z = Zones::new(Some(&camera(vec![], vec![door()])));
        // Approach from the left, then jitter +-8 px around x = 500 (margin: 10 px).
        let mut xs = vec![300.0, 400.0, 480.0];
        xs.extend((0..40).map(|i| if i % 2 == 0 { 492.0 } else { 508.0 }));
        assert!(walk(&mut z, "person", &xs).is_empty());
        // Jitter wider than the margin once it is across: one crossing, not one a frame.
        let mut z = Zones::new(Some(&camera(vec![], vec![door()])));
        let mut xs = vec![300.0, 400.0];
        xs.extend((0..20).map(|i| if i % 2 == 0 { 515.0 } else { 505.0 }));
        let ev = walk(&mut z, "person", &xs);
        assert_eq!(ev.len(), 1, "{ev:?}");
    }

    #[test]
    fn a_box_that_flicks_across_for_a_moment_does_not_cross() {
        // Along the line on its left, the box's bottom edge thrown across it for one frame
        // and then for two (100 and 200 ms apart: less than SETTLE_MS on the other side), then
        // a real crossing that stays.
        let mut z = Zones::new(Some(&camera(vec![], vec![door()])));
        let xs = [
            300.0, 450.0, 470.0, 530.0, 470.0, 460.0, 530.0, 535.0, 470.0, 470.0, 540.0, 560.0,
            600.0, 650.0,
        ];
        let ev = walk(&mut z, "person", &xs);
        let crossed: Vec<&Crossing> = ev
            .iter()
            .filter_map(|e| match e {
                ZoneEvent::Crossed(c) => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(crossed.len(), 1, "{ev:?}");
        // Its time is when it got across (the 11th position), not when that was sure.
        assert_eq!(crossed[0].ms, 1_000);
        assert_eq!(crossed[0].direction, Direction::Left);
    }

    #[test]
    fn walking_in_and_back_out_is_one_crossing_each_way() {
        let mut z = Zones::new(Some(&camera(vec![], vec![door()])));
        let ev = walk(
            &mut z,
            "person",
            &[
                300.0, 400.0, 450.0, 550.0, 650.0, 700.0, 600.0, 450.0, 350.0, 300.0, 250.0,
            ],
        );
        let dirs: Vec<Direction> = ev
            .iter()
            .map(|e| match e {
                ZoneEvent::Crossed(c) => c.direction,
                other => panic!("{other:?}"),
            })
            .collect();
        // Left to right across a top-to-bottom line is `left`; back is `right`.
        assert_eq!(dirs, [Direction::Left, Direction::Right]);
        assert_eq!(z.record(1).unwrap().crossings.len(), 2);
    }

    #[test]
    fn passing_beyond_the_end_of_a_line_is_no_crossing() {
        let mut z = Zones::new(Some(&camera(vec![], vec![door()])));
        // The line spans y 100-900; this object walks at y 950 (below its end).
        let below = |x: f32| BBox::new(x - 20.0, 850.0, 40.0, 100.0);
        let ev: Vec<_> = [300.0, 450.0, 550.0, 700.0]
            .iter()
            .enumerate()
            .flat_map(|(i, &x)| z.update(i as i64 * 100, W, H, [(1, "person", below(x))]))
            .collect();
        assert!(ev.is_empty(), "{ev:?}");
    }
}
