//! One camera's counts being gathered by its pipeline: the open minute, the additions not yet
//! handed on, the lines' totals.

use std::collections::BTreeMap;

use super::{minute_of, ClosedBucket, CountRow, CountsUpdate, Kind, LineTotal, Values, FLUSH_MS};

/// A gap between two frames longer than this is not watched time (the camera was away): the
/// zones' mean occupancy counts only the time the camera was seen.
const MAX_FRAME_GAP_MS: i64 = 2_000;

/// A minute's totals per (kind, name).
type MinuteTotals = BTreeMap<(Kind, String), Values>;

/// One camera's counts being gathered: the open minute's totals, the additions not yet handed
/// on, and the lines' totals.
#[derive(Debug)]
pub struct Buckets {
    camera: String,
    /// Each zone with its watched time in the open minute not yet added to `pending` (added
    /// in place every frame, folded in when an update is taken or the minute closes: no
    /// allocation on the per-frame path).
    zones: Vec<(String, Values)>,
    /// The open minute and its totals.
    open: Option<(i64, MinuteTotals)>,
    /// Additions since the last update, per (kind, name, minute).
    pending: BTreeMap<(Kind, String, i64), Values>,
    closed: Vec<ClosedBucket>,
    totals: BTreeMap<String, (u64, u64)>,
    /// Lines whose total changed since the last update.
    totals_changed: Vec<String>,
    /// When the last update was taken, and the last frame's time.
    flushed_ms: Option<i64>,
    last_frame_ms: Option<i64>,
}

impl Buckets {
    /// A camera's buckets, its lines' totals starting from `totals` (the database's, so the
    /// counters survive a restart; lines not in it start at 0).
    pub fn new(camera: &str, zones: &[String], lines: &[String], totals: &[LineTotal]) -> Self {
        let totals: BTreeMap<String, (u64, u64)> = lines
            .iter()
            .map(|l| {
                let t = totals.iter().find(|t| &t.line == l);
                (l.clone(), t.map_or((0, 0), |t| (t.left, t.right)))
            })
            .collect();
        Self {
            camera: camera.to_string(),
            zones: zones
                .iter()
                .map(|z| (z.clone(), Values::zero(Kind::Zone)))
                .collect(),
            open: None,
            pending: BTreeMap::new(),
            closed: Vec::new(),
            totals_changed: totals.keys().cloned().collect(),
            totals,
            flushed_ms: None,
            last_frame_ms: None,
        }
    }

    fn add(&mut self, name: &str, ms: i64, values: Values) {
        let minute = minute_of(ms);
        let kind = values.kind();
        self.pending
            .entry((kind, name.to_string(), minute))
            .or_insert_with(|| Values::zero(kind))
            .merge(&values);
        if let Some((open, totals)) = &mut self.open {
            if *open == minute {
                totals
                    .entry((kind, name.to_string()))
                    .or_insert_with(|| Values::zero(kind))
                    .merge(&values);
            }
        }
    }

    /// A crossing of `line` by an object with an event, to the right or to the left, in the
    /// minute of its own time `ms`.
    pub fn crossed(&mut self, line: &str, rightward: bool, ms: i64) {
        let (left, right) = if rightward { (0, 1) } else { (1, 0) };
        if let Some(t) = self.totals.get_mut(line) {
            t.0 += left;
            t.1 += right;
            if !self.totals_changed.iter().any(|l| l == line) {
                self.totals_changed.push(line.to_string());
            }
        }
        self.add(line, ms, Values::Line { left, right });
    }

    /// An event's object entered `zone` at `ms`.
    pub fn entered(&mut self, zone: &str, ms: i64) {
        let v = Values::Zone {
            entries: 1,
            peak: 0,
            object_ms: 0,
            observed_ms: 0,
        };
        self.add(zone, ms, v);
    }

    /// An event of `label` started (at its object's first sighting, `ms`).
    pub fn event_started(&mut self, label: &str, ms: i64) {
        self.add(label, ms, Values::Label { events: 1 });
    }

    /// A frame at `ms` with `occupancy` objects (with an event) in each zone, in the zones'
    /// order: the time since the previous frame is watched time, with these objects inside.
    /// Opens a new minute when `ms` is in one; returns whether an update is due (a minute
    /// closed, or [`FLUSH_MS`] passed since the last one).
    pub fn frame(&mut self, ms: i64, occupancy: &[u64]) -> bool {
        let minute = minute_of(ms);
        if self.open.as_ref().map(|(m, _)| *m) != Some(minute) {
            self.fold_zones();
            self.close_open();
            self.open = Some((minute, BTreeMap::new()));
        }
        let dt = self
            .last_frame_ms
            .map_or(0, |prev| ms - prev)
            .clamp(0, MAX_FRAME_GAP_MS) as u64;
        self.last_frame_ms = Some(ms);
        for ((_, acc), &n) in self.zones.iter_mut().zip(occupancy) {
            acc.merge(&Values::Zone {
                entries: 0,
                peak: n,
                object_ms: n * dt,
                observed_ms: dt,
            });
        }
        let flushed = *self.flushed_ms.get_or_insert(ms);
        !self.closed.is_empty() || ms - flushed >= FLUSH_MS
    }

    /// Adds the zones' watched time gathered in the open minute to it.
    fn fold_zones(&mut self) {
        let Some(minute) = self.open.as_ref().map(|(m, _)| *m) else {
            return;
        };
        let mut zones = std::mem::take(&mut self.zones);
        for (zone, acc) in &mut zones {
            let v = std::mem::replace(acc, Values::zero(Kind::Zone));
            if v != Values::zero(Kind::Zone) {
                self.add(zone, minute, v);
            }
        }
        self.zones = zones;
    }

    fn close_open(&mut self) {
        if let Some((start_ms, rows)) = self.open.take() {
            let rows: Vec<(String, Values)> =
                rows.into_iter().map(|((_, name), v)| (name, v)).collect();
            if !rows.is_empty() {
                self.closed.push(ClosedBucket { start_ms, rows });
            }
        }
    }

    /// Takes what is to be handed on, as of the frame at `ms`. With `end` (the source ended or
    /// the daemon stops) the open minute closes too. `None` when there is nothing.
    pub fn take(&mut self, ms: i64, end: bool) -> Option<CountsUpdate> {
        self.fold_zones();
        if end {
            self.close_open();
        }
        self.flushed_ms = Some(ms);
        let totals = std::mem::take(&mut self.totals_changed)
            .into_iter()
            .filter_map(|line| {
                let &(left, right) = self.totals.get(&line)?;
                Some(LineTotal { line, left, right })
            })
            .collect::<Vec<_>>();
        if self.pending.is_empty() && self.closed.is_empty() && totals.is_empty() {
            return None;
        }
        Some(CountsUpdate {
            camera: self.camera.clone(),
            rows: std::mem::take(&mut self.pending)
                .into_iter()
                .map(|((_, name, start_ms), values)| CountRow {
                    name,
                    start_ms,
                    values,
                })
                .collect(),
            closed: std::mem::take(&mut self.closed),
            totals,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets() -> Buckets {
        Buckets::new(
            "front",
            &["yard".into()],
            &["door".into()],
            &[LineTotal {
                line: "door".into(),
                left: 10,
                right: 4,
            }],
        )
    }

    #[test]
    fn crossings_go_to_the_minute_of_their_own_time_and_the_totals_continue() {
        let mut b = buckets();
        b.frame(59_000, &[0]);
        b.crossed("door", false, 59_500);
        b.crossed("door", true, 61_000);
        b.crossed("door", false, 61_100);
        let u = b.take(61_200, false).unwrap();
        let door: Vec<_> = u.rows.iter().filter(|r| r.name == "door").collect();
        assert_eq!(
            door.iter()
                .map(|r| (r.start_ms, r.values))
                .collect::<Vec<_>>(),
            [
                (0, Values::Line { left: 1, right: 0 }),
                (60_000, Values::Line { left: 1, right: 1 })
            ]
        );
        assert_eq!(
            u.totals,
            [LineTotal {
                line: "door".into(),
                left: 12,
                right: 5
            }]
        );
        // Nothing new: nothing to hand on.
        assert!(b.take(61_300, false).is_none());
    }
    #[test]
    fn zone_time_counts_the_gaps_between_frames_with_the_objects_inside() {
        let mut b = buckets();
        b.take(0, false);
        for (ms, n) in [(0, 0), (100, 2), (200, 2), (300, 1), (10_000, 1)] {
            b.frame(ms, &[n]);
        }
        let u = b.take(10_000, false).unwrap();
        let yard = u.rows.iter().find(|r| r.name == "yard").unwrap();
        // 100 ms each with 2, 2, 1 objects; the 9.7 s gap counts as 2 s (the camera was away).
        assert_eq!(
            yard.values,
            Values::Zone {
                entries: 0,
                peak: 2,
                object_ms: 200 + 200 + 100 + 2_000,
                observed_ms: 2_300
            }
        );
    }
    #[test]
    fn an_update_is_due_every_flush_interval_and_when_a_minute_closes() {
        let mut b = buckets();
        assert!(!b.frame(1_000, &[0]));
        b.take(1_000, false);
        assert!(!b.frame(1_000 + FLUSH_MS - 1, &[0]));
        assert!(b.frame(1_000 + FLUSH_MS, &[0]));
        b.take(1_000 + FLUSH_MS, false);
        b.event_started("person", 7_000);
        assert!(!b.frame(8_000, &[1]));
        // The next minute: the first one closes, with everything counted in it.
        assert!(b.frame(60_000, &[1]));
        let u = b.take(60_000, false).unwrap();
        assert_eq!(u.closed.len(), 1);
        assert_eq!(u.closed[0].start_ms, 0);
        assert!(u.closed[0]
            .rows
            .contains(&("person".into(), Values::Label { events: 1 })));
        // At the end the open minute closes too.
        let u = b.take(60_100, true).unwrap();
        assert_eq!(u.closed[0].start_ms, 60_000);
    }
}
