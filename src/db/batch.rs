//! The writer's batch being gathered: the latest state of each event and snapshot, the outbox
//! rows, the count additions and who waits for the commit; bounded while commits fail.

use bytes::Bytes;
use crossbeam_channel::Sender;

use super::command::{DbCommand, OutboxMessage};
use super::recordings::SegmentRow;
use crate::counts::{Kind, Values};
use crate::pipeline::values::Event;

/// While commits fail (a full disk), the writes waiting for them stay in memory up to these
/// bounds. Events are small (~200 bytes) and coalesce by id, so this is hours of a busy camera;
/// snapshots are 10-30 KB each and go first.
const MAX_PENDING_EVENTS: usize = 20_000;
const MAX_PENDING_SNAPSHOT_BYTES: usize = 16 << 20;

/// A batch being collected: the latest state of each event and snapshot, and who waits for it.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) events: std::collections::BTreeMap<i64, Event>,
    pub(super) snapshots: std::collections::BTreeMap<i64, (Bytes, u32, u32)>,
    pub(super) snapshot_bytes: usize,
    pub(super) waiters: Vec<Sender<()>>,
    pub(super) writes: usize,
    /// Writes given up to keep the batch within its bounds.
    pub(super) dropped: u64,
    /// MQTT messages to add to the outbox, in order, and acknowledged ones to remove.
    pub(super) outbox: Vec<OutboxMessage>,
    pub(super) sent: Vec<i64>,
    /// Additions to count buckets, per (camera, kind, name, minute), merged.
    pub(super) counts: std::collections::BTreeMap<(String, Kind, String, i64), Values>,
    /// Recording segments by path: the newest row, or `None` when the file was deleted.
    pub(super) segments: std::collections::BTreeMap<String, Option<SegmentRow>>,
}

impl Batch {
    pub(super) fn add(&mut self, cmd: DbCommand) {
        match cmd {
            DbCommand::Event { event: e, outbox } => {
                if let Some(m) = outbox {
                    self.add_outbox(m);
                }
                if self.events.len() >= MAX_PENDING_EVENTS && !self.events.contains_key(&e.id) {
                    // The oldest ended event goes first; an event that is still open will be
                    // written again when it ends.
                    let oldest = self
                        .events
                        .iter()
                        .find(|(_, e)| e.end_ms.is_some())
                        .map(|(&id, _)| id)
                        .or_else(|| self.events.keys().next().copied());
                    if let Some(id) = oldest {
                        self.events.remove(&id);
                        self.dropped += 1;
                    }
                }
                self.events.insert(e.id, e);
                self.writes += 1;
            }
            DbCommand::Snapshot {
                event_id,
                jpeg,
                width,
                height,
            } => {
                let old = self.snapshots.get(&event_id).map_or(0, |s| s.0.len());
                if self.snapshot_bytes - old + jpeg.len() > MAX_PENDING_SNAPSHOT_BYTES {
                    self.dropped += 1;
                    return;
                }
                self.snapshot_bytes = self.snapshot_bytes - old + jpeg.len();
                self.snapshots.insert(event_id, (jpeg, width, height));
                self.writes += 1;
            }
            DbCommand::Counts {
                camera,
                rows,
                outbox,
            } => {
                for m in outbox {
                    self.add_outbox(m);
                }
                for r in rows {
                    let kind = r.values.kind();
                    // Bounded like events: the oldest additions go first.
                    let key = (camera.clone(), kind, r.name, r.start_ms);
                    if self.counts.len() >= MAX_PENDING_EVENTS && !self.counts.contains_key(&key) {
                        self.counts.pop_first();
                        self.dropped += 1;
                    }
                    self.counts
                        .entry(key)
                        .or_insert_with(|| Values::zero(kind))
                        .merge(&r.values);
                    self.writes += 1;
                }
            }
            DbCommand::Flush(w) => self.waiters.push(w),
            DbCommand::Outbox(m) => self.add_outbox(m),
            DbCommand::Segment(row) => {
                self.segments.insert(row.path.clone(), Some(row));
                self.writes += 1;
            }
            DbCommand::SegmentGone(path) => {
                self.segments.insert(path, None);
                self.writes += 1;
            }
            DbCommand::OutboxSent(seqs) => {
                self.sent.extend(seqs);
                self.writes += 1;
            }
        }
    }

    fn add_outbox(&mut self, m: OutboxMessage) {
        if self.outbox.len() >= MAX_PENDING_EVENTS {
            self.outbox.remove(0);
            self.dropped += 1;
        }
        self.outbox.push(m);
        self.writes += 1;
    }

    pub(super) fn len(&self) -> usize {
        self.events.len()
            + self.snapshots.len()
            + self.outbox.len()
            + self.sent.len()
            + self.counts.len()
            + self.segments.len()
    }

    /// No writes in it (there may be waiters).
    pub(super) fn no_writes(&self) -> bool {
        self.events.is_empty()
            && self.snapshots.is_empty()
            && self.outbox.is_empty()
            && self.sent.is_empty()
            && self.counts.is_empty()
            && self.segments.is_empty()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.no_writes() && self.waiters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::tests::event;

    /// While commits fail, what waits for the disk is bounded; the newest writes are kept.
    #[test]
    fn a_failing_batch_stays_within_its_bounds() {
        let mut b = Batch::default();
        let n = MAX_PENDING_EVENTS as i64 + 10;
        for i in 1..=n {
            b.add(DbCommand::Event {
                event: event(i, "a", "person", i),
                outbox: None,
            });
        }
        assert_eq!(b.events.len(), MAX_PENDING_EVENTS);
        assert_eq!(b.dropped, 10);
        assert!(b.events.contains_key(&n) && !b.events.contains_key(&1));
        // Updating an event already held replaces it and drops nothing.
        b.add(DbCommand::Event {
            event: event(n, "a", "person", n),
            outbox: None,
        });
        assert_eq!(b.dropped, 10);

        let jpeg = Bytes::from(vec![0u8; 1 << 20]);
        for id in 0..20 {
            b.add(DbCommand::Snapshot {
                event_id: id,
                jpeg: jpeg.clone(),
                width: 1,
                height: 1,
            });
        }
        assert_eq!(b.snapshots.len(), MAX_PENDING_SNAPSHOT_BYTES >> 20);
        assert_eq!(b.snapshot_bytes, MAX_PENDING_SNAPSHOT_BYTES);
        assert_eq!(
            b.dropped,
            10 + 20 - (MAX_PENDING_SNAPSHOT_BYTES >> 20) as u64
        );
        // A better snapshot of an event already held still replaces it.
        b.add(DbCommand::Snapshot {
            event_id: 0,
            jpeg: Bytes::from(vec![1u8; 1000]),
            width: 1,
            height: 1,
        });
        assert_eq!(b.snapshots[&0].0.len(), 1000);
    }
}
