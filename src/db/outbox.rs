//! What the MQTT client reads: the outbox in order, and the open events per camera and label
//! (the retained counts, read again when the client fell behind the event bus).

use rusqlite::Connection;

use crate::db::DbError;

/// An outbox row read for publishing.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxRow {
    pub seq: i64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// A page of the outbox: up to `limit` rows after `after`, in order, with how many rows it
/// holds in all and the oldest one's seq.
#[derive(Debug, Default)]
pub struct OutboxPage {
    pub rows: Vec<OutboxRow>,
    pub pending: u64,
    pub oldest: Option<i64>,
}

/// Reads the outbox rows after seq `after`, at most `limit` (0: none, just the totals).
pub fn read_outbox(conn: &Connection, after: i64, limit: usize) -> Result<OutboxPage, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, topic, payload, retain FROM mqtt_outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(rusqlite::params![after, limit as i64], |r| {
            Ok(OutboxRow {
                seq: r.get(0)?,
                topic: r.get(1)?,
                payload: r.get(2)?,
                retain: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let (pending, oldest): (i64, Option<i64>) =
        conn.query_row("SELECT count(*), min(seq) FROM mqtt_outbox", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    Ok(OutboxPage {
        rows,
        pending: pending.max(0) as u64,
        oldest,
    })
}

/// The ids of the events that are open (not ended) with an id of at least `first_id`, with
/// their camera and label. Events of an earlier run that was killed stay open in the database
/// for ever; `first_id` (the first id of this run) leaves them out.
pub fn open_events(
    conn: &Connection,
    first_id: i64,
) -> Result<Vec<(String, String, i64)>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT camera, label, id FROM events WHERE end_ms IS NULL AND id >= ?1 ORDER BY id",
    )?;
    let rows = stmt
        .query_map([first_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
