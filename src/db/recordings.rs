//! The recordings table: one row per segment file (camera, first and last sample's time, bytes,
//! path), written by the writer after the file is on disk and read to cut clips.

use rusqlite::{params, Connection, Transaction};

use crate::db::DbError;

/// One segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentRow {
    pub camera: String,
    /// Relative to the recordings directory: `<camera>/<start_ms>.mp4`.
    pub path: String,
    /// The first sample's time, Unix ms.
    pub start_ms: i64,
    /// The end of the last whole fragment, Unix ms; for a segment being written, as of its last
    /// row update (the file itself says more).
    pub end_ms: i64,
    pub bytes: u64,
    /// Being written: the recorder may add to the file, retention never deletes it.
    pub open: bool,
}

/// Inserts or replaces the row of `row.path`.
pub(super) fn upsert(tx: &Transaction, row: &SegmentRow) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO recordings (path, camera, start_ms, end_ms, bytes, open)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (path) DO UPDATE SET
            end_ms = excluded.end_ms, bytes = excluded.bytes, open = excluded.open",
    )?
    .execute(params![
        row.path,
        row.camera,
        row.start_ms,
        row.end_ms,
        row.bytes as i64,
        row.open
    ])?;
    Ok(())
}

pub(super) fn delete(tx: &Transaction, path: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM recordings WHERE path = ?1")?
        .execute([path])?;
    Ok(())
}

fn row(r: &rusqlite::Row) -> rusqlite::Result<SegmentRow> {
    Ok(SegmentRow {
        path: r.get(0)?,
        camera: r.get(1)?,
        start_ms: r.get(2)?,
        end_ms: r.get(3)?,
        bytes: r.get::<_, i64>(4)?.max(0) as u64,
        open: r.get(5)?,
    })
}

/// A camera's segments that may hold samples in `[from_ms, to_ms]`, oldest first. An open
/// segment is included whatever its `end_ms` says: its file has grown since.
pub fn segments_between(
    conn: &Connection,
    camera: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<SegmentRow>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT path, camera, start_ms, end_ms, bytes, open FROM recordings
         WHERE camera = ?1 AND start_ms <= ?3 AND (end_ms >= ?2 OR open)
         ORDER BY start_ms",
    )?;
    let rows = stmt.query_map(params![camera, from_ms, to_ms], row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Every segment, oldest first: what retention starts from.
pub fn all_segments(conn: &Connection) -> Result<Vec<SegmentRow>, DbError> {
    let mut stmt = conn.prepare(
        "SELECT path, camera, start_ms, end_ms, bytes, open FROM recordings ORDER BY start_ms",
    )?;
    let rows = stmt.query_map([], row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
