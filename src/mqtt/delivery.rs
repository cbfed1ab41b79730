//! The MQTT client's delivery bookkeeping, as a plain type the task drives and a unit test can:
//! which publishes went to the client in which order, which are in flight under which packet
//! id, which outbox rows the broker acknowledged (never sent again) and which of those the
//! writer has yet to delete.

use std::collections::{BTreeMap, HashSet, VecDeque};

/// Messages published at once (not yet acknowledged) at most.
pub(super) const WINDOW: usize = 256;

#[derive(Debug, Default)]
pub(super) struct Delivery {
    /// Per publish handed to the client on this connection, in order: its outbox seq (`None`:
    /// not from the outbox).
    handed: VecDeque<Option<i64>>,
    /// Packet id -> outbox seq, for publishes awaiting their acknowledgement.
    inflight: BTreeMap<u16, i64>,
    /// The highest outbox seq handed to the client on this connection.
    last_seq: i64,
    /// Acknowledged outbox rows not yet known deleted, across connections: never sent again.
    acked: HashSet<i64>,
    /// Acknowledged rows the writer has not been told to delete yet.
    unsent_acks: Vec<i64>,
}

/// What an event of the client's event loop did to the outbox.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// An outbox row is delivered (acknowledged, or out with QoS 0).
    Delivered(i64),
    /// Nothing finished.
    Nothing,
}

impl Delivery {
    /// A new connection: what was handed to the old one is gone with it and is read again
    /// from the outbox, except what the broker acknowledged.
    pub(super) fn reconnected(&mut self) {
        self.handed.clear();
        self.inflight.clear();
        self.last_seq = 0;
    }

    /// The outbox seq after which to read.
    pub(super) fn read_after(&self) -> i64 {
        self.last_seq
    }

    /// How many more publishes the window has room for.
    pub(super) fn room(&self) -> usize {
        WINDOW.saturating_sub(self.inflight.len() + self.handed.len())
    }

    /// Whether the window is half free exactly now (read on at once: a backlog drains at the
    /// broker's pace, not the poll interval's).
    pub(super) fn half_free(&self) -> bool {
        self.inflight.len() + self.handed.len() == WINDOW / 2
    }

    /// Nothing handed or in flight.
    pub(super) fn idle(&self) -> bool {
        self.handed.is_empty() && self.inflight.is_empty()
    }

    /// Whether outbox row `seq` still has to go out (it was not acknowledged before).
    pub(super) fn wanted(&self, seq: i64) -> bool {
        !self.acked.contains(&seq)
    }

    /// A publish was handed to the client (`seq`: its outbox row).
    pub(super) fn handed(&mut self, seq: Option<i64>) {
        self.handed.push_back(seq);
        if let Some(seq) = seq {
            self.last_seq = self.last_seq.max(seq);
        }
    }

    /// Outbox row `seq` was read but skipped (acknowledged before): read after it next time.
    pub(super) fn skipped(&mut self, seq: i64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// The client wrote the next publish to the socket with packet id `pkid` (0: QoS 0).
    pub(super) fn went_out(&mut self, pkid: u16) -> Outcome {
        match self.handed.pop_front().flatten() {
            Some(seq) if pkid == 0 => self.delivered(seq),
            Some(seq) => {
                self.inflight.insert(pkid, seq);
                Outcome::Nothing
            }
            None => Outcome::Nothing,
        }
    }

    /// The broker acknowledged packet `pkid`.
    pub(super) fn acknowledged(&mut self, pkid: u16) -> Outcome {
        match self.inflight.remove(&pkid) {
            Some(seq) => self.delivered(seq),
            None => Outcome::Nothing,
        }
    }

    fn delivered(&mut self, seq: i64) -> Outcome {
        self.acked.insert(seq);
        self.unsent_acks.push(seq);
        Outcome::Delivered(seq)
    }

    /// Rows below `oldest` (the oldest left in the outbox) are deleted: no need to remember
    /// that they were acknowledged.
    pub(super) fn forget_below(&mut self, oldest: Option<i64>) {
        self.acked.retain(|&seq| oldest.is_some_and(|o| seq >= o));
    }

    /// The acknowledged rows to tell the writer about; give them back with [`Self::unsent`]
    /// if the writer could not take them.
    pub(super) fn take_acks(&mut self) -> Vec<i64> {
        std::mem::take(&mut self.unsent_acks)
    }

    pub(super) fn unsent(&mut self, mut acks: Vec<i64>) {
        acks.append(&mut self.unsent_acks);
        self.unsent_acks = acks;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QoS 1: a row is delivered when its packet is acknowledged, not when it goes out; a
    /// publish from no outbox row (a count) finishes nothing.
    #[test]
    fn a_row_is_delivered_on_its_acknowledgement() {
        let mut d = Delivery::default();
        d.handed(None);
        d.handed(Some(7));
        d.handed(Some(8));
        assert_eq!(d.read_after(), 8);
        assert_eq!(d.went_out(1), Outcome::Nothing);
        assert_eq!(d.went_out(2), Outcome::Nothing);
        assert_eq!(d.went_out(3), Outcome::Nothing);
        assert_eq!(d.acknowledged(3), Outcome::Delivered(8));
        assert_eq!(d.acknowledged(3), Outcome::Nothing, "a duplicate ack");
        assert_eq!(d.acknowledged(2), Outcome::Delivered(7));
        assert!(d.idle());
        assert_eq!(d.take_acks(), vec![8, 7]);
        assert!(!d.wanted(7) && !d.wanted(8) && d.wanted(9));
    }

    /// QoS 0: out is as good as it gets.
    #[test]
    fn with_qos_0_a_row_is_delivered_when_it_goes_out() {
        let mut d = Delivery::default();
        d.handed(Some(3));
        assert_eq!(d.went_out(0), Outcome::Delivered(3));
    }

    /// A broken connection loses what was in flight: it is read again from the outbox (from
    /// the start), except the rows acknowledged before, until the outbox no longer holds them.
    #[test]
    fn a_reconnect_resends_what_was_in_flight_but_not_what_was_acknowledged() {
        let mut d = Delivery::default();
        for seq in 1..=3 {
            d.handed(Some(seq));
            d.went_out(seq as u16);
        }
        d.acknowledged(1);
        d.reconnected();
        assert_eq!(d.read_after(), 0);
        assert_eq!(d.room(), WINDOW);
        assert!(!d.wanted(1) && d.wanted(2) && d.wanted(3));
        // The writer deleted row 1: the outbox now starts at 2.
        d.forget_below(Some(2));
        assert!(d.wanted(1), "forgotten once deleted");
    }

    /// Acks the writer could not take are kept, in order, ahead of newer ones.
    #[test]
    fn acks_the_writer_refused_are_kept_for_next_time() {
        let mut d = Delivery::default();
        for (seq, pkid) in [(1, 1u16), (2, 2)] {
            d.handed(Some(seq));
            d.went_out(pkid);
            d.acknowledged(pkid);
        }
        let acks = d.take_acks();
        d.handed(Some(3));
        d.went_out(3);
        d.acknowledged(3);
        d.unsent(acks);
        assert_eq!(d.take_acks(), vec![1, 2, 3]);
    }

    /// The window bounds what is handed out and not yet acknowledged.
    #[test]
    fn the_window_fills_and_frees() {
        let mut d = Delivery::default();
        for seq in 0..WINDOW as i64 {
            d.handed(Some(seq + 1));
        }
        assert_eq!(d.room(), 0);
        for pkid in 1..=(WINDOW / 2) as u16 {
            d.went_out(pkid);
            d.acknowledged(pkid);
        }
        assert!(d.half_free());
        assert_eq!(d.room(), WINDOW / 2);
    }
}
