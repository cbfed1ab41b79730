//! SQLite storage: the schema and its upgrades, the one writer thread that owns the read-write
//! connection, and read-only queries. This is the only module that speaks SQL.
//!
//! The database runs in WAL mode with `synchronous = FULL`: every commit is fsynced, so neither a
//! killed process nor a power cut loses a committed write, and the file is never corrupted. What
//! either can lose is what waits in the writer's queue, at most one batch (`batch_ms`, 50 ms).
//! Writes are batched (one transaction per `batch_ms` or `batch_max` writes), which makes the
//! fsync per commit cheap and spares flash storage.
//!
//! `schema.rs` holds the migrations, `read.rs` the queries (on read-only connections),
//! `outbox.rs` what the MQTT client reads, `writer.rs` the writer thread (`command.rs` what it is
//! sent, `batch.rs` what it gathers, `counts.rs` the count tables' SQL it runs), `fleet.rs` the
//! fleet view's own database; this file opens the database and starts the writer.

/// The events table's columns, in the order `read::event_from_row` reads them and the writer's
/// insert binds them: written once.
macro_rules! event_columns {
    () => {
        "id, camera, label, track_id, start_ms, end_ms, top_score, box_x, box_y, box_w, box_h, best_ms, hits, stationary, zones, crossings"
    };
}

mod batch;
mod command;
mod counts;
pub mod fleet;
mod outbox;
mod read;
mod recordings;
mod schema;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

pub use crate::base::clock::now_ms;
pub use crate::pipeline::values::EventQuery;
pub use command::{DbCommand, OutboxMessage};
pub use outbox::{open_events, read_outbox, OutboxPage, OutboxRow};
pub use read::{
    count_cameras, get_event, get_snapshot, line_totals, max_event_id, open_reader, query_counts,
    query_events, ReadPool,
};
pub use recordings::{all_segments, segments_between, SegmentRow};
pub use schema::{migrate, SCHEMA_VERSION};
pub use writer::{spawn_writer, DbHandle, OutboxLimits, WriterOptions, WriterStats};

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {path}: {source}")]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path} has schema version {found}, newer than the {supported} this ocellus knows; upgrade ocellus, or point storage.path (--db) at another file")]
    TooNew {
        path: std::path::PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("database {path}: upgrading the schema from version {from} failed: {source}")]
    Migrate {
        path: std::path::PathBuf,
        from: i64,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path} is not an ocellus database (no `events` table at schema version {version})")]
    Foreign {
        path: std::path::PathBuf,
        version: i64,
    },
    #[error("database {path} is not an ocellus fleet database (a box's database, or another program's?); point storage.path (--db) of `ocellus fleet` at a file of its own")]
    NotFleet { path: std::path::PathBuf },
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("cannot start the database writer thread: {0}")]
    Thread(std::io::Error),
}

/// Opens (creating if needed) the database read-write and brings its schema up to date.
pub fn open(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open(path).map_err(|source| DbError::Open {
        path: path.to_owned(),
        source,
    })?;
    configure(&conn).map_err(|source| DbError::Open {
        path: path.to_owned(),
        source,
    })?;
    migrate(&conn, path, SCHEMA_VERSION)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    // journal_mode answers with a row, so it is a query, not an execute.
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    Ok(())
}

/// A running writer and what its users need: the handle, its thread, its counters, and the
/// highest event id already stored (new ids continue after it).
pub struct Storage {
    pub handle: DbHandle,
    pub thread: std::thread::JoinHandle<()>,
    pub stats: Arc<WriterStats>,
    pub max_event_id: i64,
}

/// Opens (creating or upgrading) the database at `path` and starts its writer thread.
pub fn start(path: &Path, opts: WriterOptions) -> Result<Storage, DbError> {
    let conn = open(path)?;
    let max_event_id = max_event_id(&conn)?;
    let stats = Arc::new(WriterStats::default());
    let (handle, thread) =
        spawn_writer(conn, path.to_owned(), opts, stats.clone()).map_err(DbError::Thread)?;
    Ok(Storage {
        handle,
        thread,
        stats,
        max_event_id,
    })
}

#[cfg(test)]
pub(crate) mod tests;
