//! The retained per-camera, per-label counts: the open events of each, kept from the event
//! messages, and put right from the database when the client fell behind the bus and missed
//! some.

use std::collections::{BTreeMap, BTreeSet};

use crate::pipeline::values::{EventKind, EventMsg};

/// Open event ids per (camera, label); every configured pair is present, at 0 too.
#[derive(Debug, Default)]
pub(super) struct RetainedCounts {
    open: BTreeMap<(String, String), BTreeSet<i64>>,
}

impl RetainedCounts {
    /// RetainedCounts of 0 for each camera and each of its labels.
    pub(super) fn new(cameras: &[(String, Vec<String>)]) -> Self {
        let mut open = BTreeMap::new();
        for (cam, labels) in cameras {
            for l in labels {
                open.insert((cam.clone(), l.clone()), BTreeSet::new());
            }
        }
        Self { open }
    }

    /// Applies an event message; the pair whose count changed, with the new count.
    pub(super) fn apply(&mut self, msg: &EventMsg) -> Option<((String, String), usize)> {
        let e = &msg.event;
        let key = (e.camera.clone(), e.label.clone());
        let ids = self.open.entry(key.clone()).or_default();
        let changed = match msg.kind {
            EventKind::Start => ids.insert(e.id),
            EventKind::End => ids.remove(&e.id),
            EventKind::Update => false,
        };
        changed.then_some((key, ids.len()))
    }

    /// Replaces the counts with the open events the database holds (camera, label, id); the
    /// pairs whose count changed, with the new counts.
    pub(super) fn resync(
        &mut self,
        open: impl IntoIterator<Item = (String, String, i64)>,
    ) -> Vec<((String, String), usize)> {
        let mut fresh: BTreeMap<(String, String), BTreeSet<i64>> = self
            .open
            .keys()
            .map(|k| (k.clone(), BTreeSet::new()))
            .collect();
        for (cam, label, id) in open {
            fresh.entry((cam, label)).or_default().insert(id);
        }
        let changed = fresh
            .iter()
            .filter(|(k, ids)| self.open.get(*k).map_or(0, |o| o.len()) != ids.len())
            .map(|(k, ids)| (k.clone(), ids.len()))
            .collect();
        self.open = fresh;
        changed
    }

    /// Every pair with its count.
    pub(super) fn all(&self) -> impl Iterator<Item = (&(String, String), usize)> {
        self.open.iter().map(|(k, ids)| (k, ids.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::values::{BBox, Event};

    fn msg(id: i64, label: &str, kind: EventKind) -> EventMsg {
        EventMsg {
            kind,
            rev: 0,
            event: Event {
                id,
                camera: "front".into(),
                label: label.into(),
                track_id: id as u64,
                start_ms: 0,
                end_ms: None,
                top_score: 0.9,
                best_box: BBox::new(0.0, 0.0, 1.0, 1.0),
                best_ms: 0,
                hits: 1,
                stationary: false,
                zones: Vec::new(),
                crossings: Vec::new(),
                clip: None,
            },
        }
    }

    fn key(label: &str) -> (String, String) {
        ("front".into(), label.into())
    }

    #[test]
    fn starts_and_ends_change_the_count_updates_do_not() {
        let mut c = RetainedCounts::new(&[("front".into(), vec!["person".into()])]);
        assert_eq!(c.all().collect::<Vec<_>>(), [(&key("person"), 0)]);
        assert_eq!(
            c.apply(&msg(1, "person", EventKind::Start)),
            Some((key("person"), 1))
        );
        assert_eq!(c.apply(&msg(1, "person", EventKind::Update)), None);
        assert_eq!(
            c.apply(&msg(2, "person", EventKind::Start)),
            Some((key("person"), 2))
        );
        assert_eq!(
            c.apply(&msg(1, "person", EventKind::End)),
            Some((key("person"), 1))
        );
        assert_eq!(
            c.apply(&msg(1, "person", EventKind::End)),
            None,
            "ended twice"
        );
    }

    /// A consumer that lagged missed an end and a start: the counts it would keep publishing
    /// are wrong until it reads the truth from the database, and then exactly the pairs that
    /// were wrong are republished, with the right counts.
    #[test]
    fn a_lagged_consumer_republishes_correct_counts_after_a_resync() {
        let cameras = [(
            "front".to_string(),
            vec!["person".to_string(), "car".to_string()],
        )];
        let mut c = RetainedCounts::new(&cameras);
        c.apply(&msg(1, "person", EventKind::Start));
        c.apply(&msg(2, "person", EventKind::Start));
        c.apply(&msg(3, "car", EventKind::Start));
        // Missed while lagging: 1 ended, 4 (a person) started, 2 ended. The database has
        // person 4 and car 3 open.
        let changed = c.resync([
            ("front".to_string(), "car".to_string(), 3),
            ("front".to_string(), "person".to_string(), 4),
        ]);
        assert_eq!(changed, [(key("person"), 1)]);
        // Later messages apply on the resynchronised state: the end of 4 brings person to 0.
        assert_eq!(
            c.apply(&msg(4, "person", EventKind::End)),
            Some((key("person"), 0))
        );
        // A message that raced the resync (already in the database's answer) changes nothing.
        assert_eq!(c.apply(&msg(3, "car", EventKind::Start)), None);
    }
}
