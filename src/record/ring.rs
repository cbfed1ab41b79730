//! The pre-roll: the last seconds of a camera's packets in RAM, always starting at a key frame,
//! so that a recording that starts when an event is declared begins before the event did.

use std::collections::VecDeque;

use crate::capture::packets::Packet;

/// Packets of the last `keep_ms`, from the newest key frame at or before that horizon; never
/// more than `max_bytes` (then it starts at a later key frame).
pub(crate) struct PreRoll {
    packets: VecDeque<Packet>,
    bytes: usize,
    keep_ms: i64,
    max_bytes: usize,
}

impl PreRoll {
    pub(crate) fn new(keep_ms: i64, max_bytes: usize) -> Self {
        Self {
            packets: VecDeque::new(),
            bytes: 0,
            keep_ms,
            max_bytes,
        }
    }

    /// Adds a packet; packets before the first key frame are not kept (nothing can decode them).
    pub(crate) fn push(&mut self, p: Packet) {
        if self.packets.is_empty() && !p.key {
            return;
        }
        self.bytes += p.data.len();
        self.packets.push_back(p);
        self.trim();
    }

    fn trim(&mut self) {
        let Some(newest) = self.packets.back().map(|p| p.wall_ms()) else {
            return;
        };
        let horizon = newest - self.keep_ms;
        // Drop whole GOPs while the next GOP still starts at or before the horizon, or while
        // over the byte bound (keeping at least the newest GOP).
        loop {
            let next_key = self
                .packets
                .iter()
                .skip(1)
                .position(|p| p.key)
                .map(|i| i + 1);
            let Some(k) = next_key else { break };
            let old_enough = self.packets[k].wall_ms() <= horizon;
            if !old_enough && self.bytes <= self.max_bytes {
                break;
            }
            for p in self.packets.drain(..k) {
                self.bytes -= p.data.len();
            }
        }
    }

    /// The packets held, oldest first (the first is a key frame).
    pub(crate) fn packets(&self) -> impl Iterator<Item = &Packet> {
        self.packets.iter()
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn clear(&mut self) {
        self.packets.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn packet(ms: i64, key: bool) -> Packet {
        Packet {
            dts90: ms * 90,
            cto: 0,
            key,
            data: Bytes::from(vec![0; 1000]),
        }
    }

    fn starts(ring: &PreRoll) -> Vec<i64> {
        ring.packets().map(|p| p.wall_ms()).collect()
    }

    #[test]
    fn the_ring_starts_at_the_key_frame_at_or_before_its_horizon() {
        // GOP of 1 s, a packet every 250 ms, 2 s kept.
        let mut ring = PreRoll::new(2000, usize::MAX);
        ring.push(packet(0, false)); // before any key frame: useless
        for i in 1..=20 {
            ring.push(packet(i * 250, i % 4 == 0));
        }
        // Newest 5000; horizon 3000, a key frame: the ring starts there.
        assert_eq!(starts(&ring).first(), Some(&3000));
        ring.push(packet(5250, false));
        // Horizon 3250: the key frame at or before it is still 3000.
        assert_eq!(starts(&ring).first(), Some(&3000));
        assert!(ring.packets().next().unwrap().key);
    }

    #[test]
    fn the_ring_stays_within_its_bytes_keeping_the_newest_gop() {
        let mut ring = PreRoll::new(60_000, 5_000);
        for i in 0..20 {
            ring.push(packet(i * 100, i % 4 == 0));
        }
        assert!(ring.bytes() <= 5_000, "{}", ring.bytes());
        assert_eq!(starts(&ring), vec![1600, 1700, 1800, 1900]);
    }
}
