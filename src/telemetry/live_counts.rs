//! Live counts of each camera's zones and lines for the stats: objects in each zone now,
//! crossings per line and direction, ever and in the last hour. Written by the pipeline, read
//! by the stats task; plain data, so it knows nothing of the zones' geometry.

use std::collections::VecDeque;

use serde::Serialize;

/// Live counts of one camera's zones and lines, for the stats.
#[derive(Debug, Default)]
pub struct LiveCounts {
    pub zones: Vec<ZoneCount>,
    pub lines: Vec<LineCount>,
    /// Crossing times (the frames' clock) in the last hour, per line and direction.
    recent: Vec<[VecDeque<i64>; 2]>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ZoneCount {
    pub name: String,
    /// Objects with an event in the zone now.
    pub objects: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LineCount {
    pub name: String,
    /// Crossings ever, each way: continued from the database's totals at start, so they
    /// survive a restart (in replay: since the clip's start).
    pub left: u64,
    pub right: u64,
    /// Crossings in the last hour (by the frames' clock), each way.
    pub left_last_hour: u64,
    pub right_last_hour: u64,
}

const HOUR_MS: i64 = 3_600_000;

impl LiveCounts {
    pub fn new<'a>(
        zones: impl IntoIterator<Item = &'a str>,
        lines: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let lines: Vec<LineCount> = lines
            .into_iter()
            .map(|n| LineCount {
                name: n.to_string(),
                left: 0,
                right: 0,
                left_last_hour: 0,
                right_last_hour: 0,
            })
            .collect();
        Self {
            recent: lines.iter().map(|_| Default::default()).collect(),
            lines,
            zones: zones
                .into_iter()
                .map(|n| ZoneCount {
                    name: n.to_string(),
                    objects: 0,
                })
                .collect(),
        }
    }

    /// Continues `line`'s totals from `left` and `right` (the database's at start).
    pub fn continue_totals(&mut self, line: &str, left: u64, right: u64) {
        if let Some(l) = self.lines.iter_mut().find(|l| l.name == line) {
            l.left = left;
            l.right = right;
        }
    }

    /// Counts a crossing of `line` by an object with an event, to the right or to the left,
    /// at `ms` (the frames' clock).
    pub fn crossed(&mut self, line: &str, rightward: bool, ms: i64) {
        let Some(i) = self.lines.iter().position(|l| l.name == line) else {
            return;
        };
        let line = &mut self.lines[i];
        if rightward {
            line.right += 1;
        } else {
            line.left += 1;
        }
        self.recent[i][usize::from(rightward)].push_back(ms);
    }

    /// Objects in each zone now (`occupancy`, in the zones' order, as the pipeline's zones
    /// give it), and the last hour's crossings as of `now_ms`.
    pub fn refresh(&mut self, now_ms: i64, occupancy: &[u64]) {
        for (z, &n) in self.zones.iter_mut().zip(occupancy) {
            z.objects = n;
        }
        for (line, recent) in self.lines.iter_mut().zip(&mut self.recent) {
            for q in recent.iter_mut() {
                while q.front().is_some_and(|&t| now_ms - t >= HOUR_MS) {
                    q.pop_front();
                }
            }
            line.left_last_hour = recent[0].len() as u64;
            line.right_last_hour = recent[1].len() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_keep_an_hour_of_crossings() {
        let mut counts = LiveCounts::new(["hall"], ["door"]);
        for ms in [0, 1_000, 3_500_000] {
            counts.crossed("door", false, ms);
        }
        counts.crossed("door", true, 2_000);
        counts.refresh(3_600_500, &[2]);
        let line = &counts.lines[0];
        assert_eq!((line.left, line.right), (3, 1));
        // Only 0 is an hour or more before 3_600_500.
        assert_eq!((line.left_last_hour, line.right_last_hour), (2, 1));
        assert_eq!(counts.zones[0].objects, 2);
        counts.refresh(3_602_500, &[0]);
        let line = &counts.lines[0];
        assert_eq!((line.left_last_hour, line.right_last_hour), (1, 0));
        assert_eq!((line.left, line.right), (3, 1));
        assert_eq!(counts.zones[0].objects, 0);
    }
}
