//! Reading events: read-only connections (which never block the writer), the pool the async
//! side runs queries on, and the queries themselves.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::counts::{CountsQuery, Kind, LineTotal, Series, Values};
use crate::db::DbError;
use crate::pipeline::values::{BBox, Event, EventQuery};

/// Opens a read-only connection for queries (the API, tests); it never blocks the writer.
pub fn open_reader(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| DbError::Open {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Read-only connections for the async side: queries run on tokio's blocking pool, never on a
/// worker, and at most `max_busy` at once.
pub struct ReadPool {
    path: PathBuf,
    idle: std::sync::Mutex<Vec<Connection>>,
    busy: tokio::sync::Semaphore,
}

impl ReadPool {
    pub fn new(path: &Path, max_busy: usize) -> Self {
        Self {
            path: path.to_owned(),
            idle: std::sync::Mutex::new(Vec::new()),
            busy: tokio::sync::Semaphore::new(max_busy),
        }
    }

    /// Runs `f` with a read-only connection on the blocking pool.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let _permit = self.busy.acquire().await.map_err(|_| DbError::WriterGone)?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match pool.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
                Some(c) => c,
                None => open_reader(&pool.path)?,
            };
            let result = f(&conn);
            pool.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            result
        })
        .await
        .map_err(|_| DbError::WriterGone)?
    }
}

/// The highest event id in the database, so that a new run continues after it.
pub fn max_event_id(conn: &Connection) -> Result<i64, DbError> {
    Ok(conn.query_row("SELECT coalesce(max(id), 0) FROM events", [], |r| r.get(0))?)
}

const EVENT_COLUMNS: &str = event_columns!();

fn event_from_row(r: &rusqlite::Row) -> rusqlite::Result<Event> {
    Ok(Event {
        id: r.get(0)?,
        camera: r.get(1)?,
        label: r.get(2)?,
        track_id: r.get::<_, i64>(3)? as u64,
        start_ms: r.get(4)?,
        end_ms: r.get(5)?,
        top_score: r.get::<_, f64>(6)? as f32,
        best_box: BBox::new(
            r.get::<_, f64>(7)? as f32,
            r.get::<_, f64>(8)? as f32,
            r.get::<_, f64>(9)? as f32,
            r.get::<_, f64>(10)? as f32,
        ),
        best_ms: r.get(11)?,
        hits: r.get::<_, i64>(12)? as u32,
        stationary: r.get(13)?,
        // Written by this program as JSON; a row edited by hand into something else reads as
        // no zones rather than failing the whole query.
        zones: serde_json::from_str(&r.get::<_, String>(14)?).unwrap_or_default(),
        crossings: serde_json::from_str(&r.get::<_, String>(15)?).unwrap_or_default(),
        clip: None,
    })
}

/// Events matching `q`, newest first (by start time, then id).
pub fn query_events(
    conn: &Connection,
    q: &EventQuery,
    max_limit: u32,
) -> Result<Vec<Event>, DbError> {
    let limit = q.limit.unwrap_or(100).min(max_limit);
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE (?1 IS NULL OR camera = ?1) AND (?2 IS NULL OR label = ?2)
           AND (?3 IS NULL OR start_ms >= ?3) AND (?4 IS NULL OR start_ms < ?4)
           AND (?5 IS NULL OR id < ?5)
           AND (?7 IS NULL OR EXISTS (SELECT 1 FROM json_each(events.zones) WHERE value = ?7))
         ORDER BY start_ms DESC, id DESC LIMIT ?6"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![
            q.camera,
            q.label,
            q.from_ms,
            q.to_ms,
            q.before_id,
            limit,
            q.zone
        ],
        event_from_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn get_event(conn: &Connection, id: i64) -> Result<Option<Event>, DbError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1");
    Ok(conn.query_row(&sql, [id], event_from_row).optional()?)
}

pub fn get_snapshot(conn: &Connection, event_id: i64) -> Result<Option<Vec<u8>>, DbError> {
    Ok(conn
        .query_row(
            "SELECT jpeg FROM snapshots WHERE event_id = ?1",
            [event_id],
            |r| r.get(0),
        )
        .optional()?)
}

/// The stored buckets of a counts query's series that start in its range, grouped into its
/// buckets (minute and rolled-up hour buckets alike).
pub fn query_counts(conn: &Connection, q: &CountsQuery) -> Result<Vec<Series>, DbError> {
    let (sql, read): (&str, fn(&rusqlite::Row) -> rusqlite::Result<Values>) = match q.kind {
        Kind::Line => (
            "SELECT line, start_ms, crossed_left, crossed_right FROM line_counts
             WHERE camera = ?1 AND (?2 IS NULL OR line = ?2) AND start_ms >= ?3 AND start_ms < ?4",
            |r| {
                Ok(Values::Line {
                    left: r.get::<_, i64>(2)? as u64,
                    right: r.get::<_, i64>(3)? as u64,
                })
            },
        ),
        Kind::Zone => (
            "SELECT zone, start_ms, entries, peak, object_ms, observed_ms FROM zone_counts
             WHERE camera = ?1 AND (?2 IS NULL OR zone = ?2) AND start_ms >= ?3 AND start_ms < ?4",
            |r| {
                Ok(Values::Zone {
                    entries: r.get::<_, i64>(2)? as u64,
                    peak: r.get::<_, i64>(3)? as u64,
                    object_ms: r.get::<_, i64>(4)? as u64,
                    observed_ms: r.get::<_, i64>(5)? as u64,
                })
            },
        ),
        Kind::Label => (
            "SELECT label, start_ms, events FROM label_counts
             WHERE camera = ?1 AND (?2 IS NULL OR label = ?2) AND start_ms >= ?3 AND start_ms < ?4",
            |r| {
                Ok(Values::Label {
                    events: r.get::<_, i64>(2)? as u64,
                })
            },
        ),
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt
        .query_map(params![q.camera, q.name, q.from_ms, q.to_ms], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, read(r)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::counts::group(q, rows))
}

/// The lines' crossings ever of `camera`, as stored.
pub fn line_totals(conn: &Connection, camera: &str) -> Result<Vec<LineTotal>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT line, crossed_left, crossed_right FROM line_totals WHERE camera = ?1 ORDER BY line",
    )?;
    let rows = stmt.query_map([camera], |r| {
        Ok(LineTotal {
            line: r.get(0)?,
            left: r.get::<_, i64>(1)? as u64,
            right: r.get::<_, i64>(2)? as u64,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The cameras with stored counts (a camera no longer configured keeps its history).
pub fn count_cameras(conn: &Connection) -> Result<Vec<String>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT camera FROM line_counts UNION SELECT camera FROM zone_counts
         UNION SELECT camera FROM label_counts ORDER BY camera",
    )?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
