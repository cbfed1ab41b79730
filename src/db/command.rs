//! What the writer is sent: the commands, and the MQTT messages that ride with them into the
//! outbox.

use bytes::Bytes;
use crossbeam_channel::Sender;

use super::recordings::SegmentRow;
use crate::base::clock::now_ms;
use crate::counts::CountRow;
use crate::pipeline::values::Event;

/// What the pipeline asks of the writer.
pub enum DbCommand {
    /// Insert or update an event (by id), with the MQTT message that announces this change
    /// when MQTT is on. One command, so both land in the same batch and thus the same
    /// transaction whatever the batch bounds: a crash never leaves an event whose message is
    /// lost, nor a message about an event that is not stored.
    Event {
        event: Event,
        outbox: Option<OutboxMessage>,
    },
    Snapshot {
        event_id: i64,
        jpeg: Bytes,
        width: u32,
        height: u32,
    },
    /// Additions to a camera's counts over time (src/counts/), with the MQTT messages that
    /// announce the lines' new totals: one command, so a counter the broker was told is stored.
    Counts {
        camera: String,
        rows: Vec<CountRow>,
        outbox: Vec<OutboxMessage>,
    },
    /// Commit everything sent before this, then answer.
    Flush(Sender<()>),
    /// A message for the MQTT broker that belongs to no event, kept in the outbox until it is
    /// acknowledged.
    Outbox(OutboxMessage),
    /// Outbox messages the broker acknowledged (their `seq`s).
    OutboxSent(Vec<i64>),
    /// A recording segment written (its file synced first) or grown.
    Segment(SegmentRow),
    /// A recording segment whose file retention deleted (by path).
    SegmentGone(String),
}

impl DbCommand {
    /// An event change with no MQTT message (no `[mqtt]`, tests, tools).
    pub fn event_only(event: Event) -> Self {
        DbCommand::Event {
            event,
            outbox: None,
        }
    }
}

/// An MQTT message waiting in the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxMessage {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub created_ms: i64,
}

impl OutboxMessage {
    /// A message to `topic`, not retained, created now (the outbox's age bound counts from it).
    pub fn new(topic: &str, payload: Vec<u8>) -> Self {
        Self {
            topic: topic.to_string(),
            payload,
            retain: false,
            created_ms: now_ms(),
        }
    }
}
