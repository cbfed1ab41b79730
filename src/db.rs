//! SQLite storage: the schema and its upgrades, the one writer thread that owns the read-write
//! connection, and read-only queries. This is the only module that speaks SQL.
//!
//! The database runs in WAL mode with `synchronous = FULL`: every commit is fsynced, so neither a
//! killed process nor a power cut loses a committed write, and the file is never corrupted. What
//! either can lose is what waits in the writer's queue, at most one batch (`batch_ms`, 50 ms).
//! Writes are batched (one transaction per `batch_ms` or `batch_max` writes), which makes the
//! fsync per commit cheap and spares flash storage.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};
use serde::{Deserialize, Serialize};

use crate::errors::DbError;
use crate::models::{BBox, Event};

/// Schema upgrades, in order: entry `i` takes the schema from version `i` to `i + 1`. Each runs
/// in its own transaction together with the `user_version` bump, so a crash leaves the database
/// at one version or the next, never in between.
const MIGRATIONS: &[fn(&Transaction) -> rusqlite::Result<()>] = &[v0_to_v1, v1_to_v2, v2_to_v3];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

fn v0_to_v1(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            camera TEXT NOT NULL,
            label TEXT NOT NULL,
            track_id INTEGER NOT NULL,
            start_ms INTEGER NOT NULL,
            end_ms INTEGER,
            top_score REAL NOT NULL,
            box_x REAL NOT NULL,
            box_y REAL NOT NULL,
            box_w REAL NOT NULL,
            box_h REAL NOT NULL,
            best_ms INTEGER NOT NULL,
            snapshot BLOB
        );",
    )
}

/// Snapshots move to their own table (event scans no longer page through JPEGs), events gain a
/// hit count, and the API's queries (by time, camera, label) get indexes.
fn v1_to_v2(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE snapshots (
            event_id INTEGER PRIMARY KEY REFERENCES events(id) ON DELETE CASCADE,
            jpeg BLOB NOT NULL,
            width INTEGER,
            height INTEGER
        );
        INSERT INTO snapshots (event_id, jpeg) SELECT id, snapshot FROM events WHERE snapshot IS NOT NULL;
        ALTER TABLE events DROP COLUMN snapshot;
        ALTER TABLE events ADD COLUMN hits INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX events_start ON events (start_ms);
        CREATE INDEX events_camera_start ON events (camera, start_ms);
        CREATE INDEX events_label_start ON events (label, start_ms);",
    )
}

/// Events say whether their object has become stationary (a parked car).
fn v2_to_v3(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch("ALTER TABLE events ADD COLUMN stationary INTEGER NOT NULL DEFAULT 0;")
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

/// Upgrades the schema to `target` (the latest, except in tests that build old databases).
pub fn migrate(conn: &Connection, path: &Path, target: i64) -> Result<(), DbError> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(DbError::TooNew {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == 0 {
        // A database another program made must not be "upgraded" into ours.
        let tables: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )?;
        if tables > 0 {
            return Err(DbError::Foreign {
                path: path.to_owned(),
                version: 0,
            });
        }
    }
    for from in found..target {
        let fail = |source| DbError::Migrate {
            path: path.to_owned(),
            from,
            source,
        };
        // Nothing else uses the connection during an upgrade, so an unchecked transaction on a
        // shared reference is safe here.
        let tx = conn.unchecked_transaction().map_err(fail)?;
        MIGRATIONS[from as usize](&tx).map_err(fail)?;
        tx.pragma_update(None, "user_version", from + 1)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
        if found > 0 {
            tracing::info!(path = %path.display(), from, to = from + 1, "upgraded database schema");
        }
    }
    Ok(())
}

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

/// Filters for listing events, newest first. `before_id` is the paging cursor: the id of the
/// last event of the previous page.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventQuery {
    pub camera: Option<String>,
    pub label: Option<String>,
    /// Events that started at or after this time (ms).
    pub from_ms: Option<i64>,
    /// Events that started before this time (ms).
    pub to_ms: Option<i64>,
    pub before_id: Option<i64>,
    /// At most this many (capped by the caller).
    pub limit: Option<u32>,
}

const EVENT_COLUMNS: &str =
    "id, camera, label, track_id, start_ms, end_ms, top_score, box_x, box_y, box_w, box_h, best_ms, hits, stationary";

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
         ORDER BY start_ms DESC, id DESC LIMIT ?6"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![q.camera, q.label, q.from_ms, q.to_ms, q.before_id, limit],
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

/// What the pipeline asks of the writer.
pub enum DbCommand {
    /// Insert or update an event (by id).
    Event(Event),
    Snapshot {
        event_id: i64,
        jpeg: Bytes,
        width: u32,
        height: u32,
    },
    /// Commit everything sent before this, then answer.
    Flush(Sender<()>),
}

/// Writer tuning; `retention_ms` is `None` in replay, whose clip-relative times are not ages.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    pub batch: Duration,
    pub batch_max: usize,
    pub retention_ms: Option<i64>,
    pub max_events: u64,
    /// Oldest ended events are deleted while the data in the file exceeds this (0: no limit).
    pub max_bytes: u64,
}

impl WriterOptions {
    /// The writer settings of `[storage]`. `by_age` is false in replay, whose clip-relative
    /// times are not ages (only the count limit applies there).
    pub fn from_config(storage: &crate::config::StorageConfig, by_age: bool) -> Self {
        Self {
            batch: Duration::from_millis(storage.batch_ms),
            batch_max: storage.batch_max,
            retention_ms: (by_age && storage.retention_days > 0)
                .then(|| storage.retention_days as i64 * 86_400_000),
            max_events: storage.max_events,
            max_bytes: storage.max_size_mb * 1024 * 1024,
        }
    }
}

/// Counters the writer keeps; read by summaries and /metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub commits: AtomicU64,
    pub rows: AtomicU64,
    pub commit_ns: AtomicU64,
    pub errors: AtomicU64,
    pub deleted_by_retention: AtomicU64,
    /// Writes given up because the backlog held while commits fail reached its bound.
    pub dropped: AtomicU64,
    /// Writes waiting in memory for a commit that keeps failing (0 when healthy).
    pub pending: AtomicU64,
}

/// The sending side of the writer: cheap to clone, one per pipeline.
#[derive(Clone)]
pub struct DbHandle {
    tx: Sender<DbCommand>,
}

impl DbHandle {
    /// Queues a write; blocks while the writer's queue is full (back-pressure rather than
    /// unbounded memory).
    pub fn send(&self, cmd: DbCommand) -> Result<(), DbError> {
        self.tx.send(cmd).map_err(|_| DbError::WriterGone)
    }

    /// Waits until everything queued so far is committed.
    pub fn flush(&self) -> Result<(), DbError> {
        let (tx, rx) = bounded(1);
        self.send(DbCommand::Flush(tx))?;
        rx.recv().map_err(|_| DbError::WriterGone)
    }
}

/// Capacity of the writer's queue: enough for bursts of events without letting a stuck disk
/// take unbounded memory.
const QUEUE: usize = 4096;

/// Starts the writer thread on `conn`. It runs until every [`DbHandle`] is dropped, then commits
/// what is left and exits.
pub fn spawn_writer(
    conn: Connection,
    path: PathBuf,
    opts: WriterOptions,
    stats: Arc<WriterStats>,
) -> std::io::Result<(DbHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = bounded(QUEUE);
    let handle = std::thread::Builder::new()
        .name("db-writer".into())
        .spawn(move || {
            Writer {
                conn,
                path,
                opts,
                stats,
                rx,
            }
            .run()
        })?;
    Ok((DbHandle { tx }, handle))
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

struct Writer {
    conn: Connection,
    path: PathBuf,
    opts: WriterOptions,
    stats: Arc<WriterStats>,
    rx: Receiver<DbCommand>,
}

/// While commits fail (a full disk), the writes waiting for them stay in memory up to these
/// bounds. Events are small (~200 bytes) and coalesce by id, so this is hours of a busy camera;
/// snapshots are 10-30 KB each and go first.
const MAX_PENDING_EVENTS: usize = 20_000;
const MAX_PENDING_SNAPSHOT_BYTES: usize = 16 << 20;

/// A batch being collected: the latest state of each event and snapshot, and who waits for it.
#[derive(Default)]
struct Batch {
    events: std::collections::BTreeMap<i64, Event>,
    snapshots: std::collections::BTreeMap<i64, (Bytes, u32, u32)>,
    snapshot_bytes: usize,
    waiters: Vec<Sender<()>>,
    writes: usize,
    /// Writes given up to keep the batch within its bounds.
    dropped: u64,
}

impl Batch {
    fn add(&mut self, cmd: DbCommand) {
        match cmd {
            DbCommand::Event(e) => {
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
            DbCommand::Flush(w) => self.waiters.push(w),
        }
    }

    fn len(&self) -> usize {
        self.events.len() + self.snapshots.len()
    }

    fn is_empty(&self) -> bool {
        self.events.is_empty() && self.snapshots.is_empty() && self.waiters.is_empty()
    }
}

impl Writer {
    fn run(mut self) {
        let mut batch = Batch::default();
        let mut open = true;
        let mut last_retention = Instant::now();
        // Since when commits have been failing, and when that was last logged.
        let mut failing: Option<(Instant, Instant)> = None;
        while open || !batch.is_empty() {
            if open && batch.is_empty() {
                match self.rx.recv() {
                    Ok(cmd) => batch.add(cmd),
                    Err(_) => open = false,
                }
            }
            // Collect more until the batch is full or old enough.
            let deadline = Instant::now() + self.opts.batch;
            while open && batch.writes < self.opts.batch_max && batch.waiters.is_empty() {
                match self.rx.recv_deadline(deadline) {
                    Ok(cmd) => batch.add(cmd),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => open = false,
                }
            }
            match self.commit(&batch) {
                Ok(()) => {
                    if let Some((since, _)) = failing.take() {
                        tracing::info!(
                            path = %self.path.display(),
                            after_s = since.elapsed().as_secs(),
                            written = batch.len(),
                            dropped = batch.dropped,
                            "database writes work again; the writes held in memory are stored"
                        );
                    }
                    self.stats.pending.store(0, Ordering::Relaxed);
                    for w in batch.waiters.drain(..) {
                        let _ = w.send(());
                    }
                    batch = Batch::default();
                }
                Err(e) => {
                    // Keep the batch and try again: a full disk or a locked file usually
                    // clears up, and losing events is worse than waiting. Clients are still
                    // served meanwhile; the batch is bounded (see MAX_PENDING_*).
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    let now = Instant::now();
                    let log = match &mut failing {
                        None => {
                            failing = Some((now, now));
                            true
                        }
                        Some((_, logged)) if logged.elapsed() >= Duration::from_secs(30) => {
                            *logged = now;
                            true
                        }
                        Some(_) => false,
                    };
                    if log {
                        tracing::error!(
                            path = %self.path.display(),
                            error = %e,
                            pending = batch.len(),
                            dropped = batch.dropped,
                            "{}; events are kept in memory and the write retried every 0.5 s",
                            describe_write_error(&e)
                        );
                    }
                    if is_disk_full(&e) {
                        // Make room by policy, if a size limit allows it.
                        self.apply_retention();
                    }
                    std::thread::sleep(Duration::from_millis(500));
                    // While retrying, keep accepting writes so the pipeline does not stall.
                    while let Ok(cmd) = self.rx.try_recv() {
                        batch.add(cmd);
                    }
                    self.stats
                        .pending
                        .store(batch.len() as u64, Ordering::Relaxed);
                    let dropped = std::mem::take(&mut batch.dropped);
                    if dropped > 0 {
                        self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
                    }
                }
            }
            if last_retention.elapsed() > Duration::from_secs(60) {
                last_retention = Instant::now();
                self.apply_retention();
            }
        }
        self.apply_retention();
    }

    fn commit(&mut self, batch: &Batch) -> rusqlite::Result<()> {
        if batch.events.is_empty() && batch.snapshots.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let tx = self.conn.transaction()?;
        {
            let mut up = tx.prepare_cached(
                "INSERT INTO events (id, camera, label, track_id, start_ms, end_ms, top_score,
                                     box_x, box_y, box_w, box_h, best_ms, hits, stationary)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT (id) DO UPDATE SET
                    end_ms = excluded.end_ms, top_score = excluded.top_score,
                    box_x = excluded.box_x, box_y = excluded.box_y,
                    box_w = excluded.box_w, box_h = excluded.box_h,
                    best_ms = excluded.best_ms, hits = excluded.hits,
                    stationary = excluded.stationary",
            )?;
            for e in batch.events.values() {
                up.execute(params![
                    e.id,
                    e.camera,
                    e.label,
                    e.track_id as i64,
                    e.start_ms,
                    e.end_ms,
                    e.top_score as f64,
                    e.best_box.x as f64,
                    e.best_box.y as f64,
                    e.best_box.w as f64,
                    e.best_box.h as f64,
                    e.best_ms,
                    e.hits as i64,
                    e.stationary,
                ])?;
            }
            let mut snap = tx.prepare_cached(
                "INSERT INTO snapshots (event_id, jpeg, width, height) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (event_id) DO UPDATE SET
                    jpeg = excluded.jpeg, width = excluded.width, height = excluded.height",
            )?;
            for (id, (jpeg, w, h)) in &batch.snapshots {
                snap.execute(params![id, jpeg.as_ref(), w, h])?;
            }
        }
        tx.commit()?;
        let s = &self.stats;
        s.commits.fetch_add(1, Ordering::Relaxed);
        s.rows.fetch_add(
            (batch.events.len() + batch.snapshots.len()) as u64,
            Ordering::Relaxed,
        );
        s.commit_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Deletes events past the age and count limits (snapshots go with them). Only ended events
    /// are aged out.
    fn apply_retention(&mut self) {
        let mut deleted = 0;
        let res: rusqlite::Result<()> = (|| {
            if let Some(age) = self.opts.retention_ms {
                let cutoff = now_ms() - age;
                deleted += self.conn.execute(
                    "DELETE FROM events WHERE end_ms IS NOT NULL AND end_ms < ?1",
                    [cutoff],
                )?;
            }
            if self.opts.max_events > 0 {
                deleted += self.conn.execute(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY start_ms DESC, id DESC LIMIT -1 OFFSET ?1)",
                    [self.opts.max_events as i64],
                )?;
            }
            if self.opts.max_bytes > 0 {
                // Pages in use (free pages are reused by later writes, so the file stops
                // growing at about the limit). Delete the oldest ended events a slice at a time.
                loop {
                    let used: i64 = self.conn.query_row(
                        "SELECT (page_count - freelist_count) * page_size
                         FROM pragma_page_count, pragma_freelist_count, pragma_page_size",
                        [],
                        |r| r.get(0),
                    )?;
                    if used as u64 <= self.opts.max_bytes {
                        break;
                    }
                    let n = self.conn.execute(
                        "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE end_ms IS NOT NULL
                         ORDER BY start_ms, id LIMIT max(16, (SELECT count(*) FROM events) / 20))",
                        [],
                    )?;
                    if n == 0 {
                        break;
                    }
                    deleted += n;
                }
            }
            Ok(())
        })();
        match res {
            Ok(()) if deleted > 0 => {
                self.stats
                    .deleted_by_retention
                    .fetch_add(deleted as u64, Ordering::Relaxed);
                tracing::info!(deleted, "retention removed old events");
            }
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "retention failed"),
        }
    }
}

fn is_disk_full(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull)
}

/// What an operator should read in the log for a failed commit.
fn describe_write_error(e: &rusqlite::Error) -> &'static str {
    match e {
        _ if is_disk_full(e) => "database write failed: the disk is full",
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ReadOnly => {
            "database write failed: the file or its directory is read-only"
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            "database write failed: another process holds the database lock"
        }
        _ => "database write failed",
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, camera: &str, label: &str, start_ms: i64) -> Event {
        Event {
            id,
            camera: camera.into(),
            label: label.into(),
            track_id: id as u64,
            start_ms,
            end_ms: Some(start_ms + 1000),
            top_score: 0.75,
            best_box: BBox::new(1.0, 2.0, 3.0, 4.0),
            best_ms: start_ms + 10,
            hits: 7,
            stationary: false,
        }
    }

    fn writer(path: &Path) -> (DbHandle, std::thread::JoinHandle<()>, Arc<WriterStats>) {
        let conn = open(path).unwrap();
        let stats = Arc::new(WriterStats::default());
        let (h, j) = spawn_writer(
            conn,
            path.to_owned(),
            WriterOptions {
                batch: Duration::from_millis(20),
                batch_max: 100,
                retention_ms: None,
                max_events: 0,
                max_bytes: 0,
            },
            stats.clone(),
        )
        .unwrap();
        (h, j, stats)
    }

    /// (name, type, notnull, default, pk) of every column, and every index, of every table.
    fn schema(conn: &Connection) -> Vec<String> {
        let mut out = Vec::new();
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for t in tables {
            let mut stmt = conn.prepare(&format!("PRAGMA table_info({t})")).unwrap();
            let cols = stmt
                .query_map([], |r| {
                    Ok(format!(
                        "{t}.{}:{}:{}:{:?}:{}",
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, i64>(5)?
                    ))
                })
                .unwrap();
            out.extend(cols.map(Result::unwrap));
        }
        let idx = conn
            .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name")
            .unwrap()
            .query_map([], |r| Ok(format!("{}: {}", r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>();
        out.extend(idx);
        out
    }

    #[test]
    fn writer_batches_upserts_and_flush_makes_them_visible_to_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let (h, j, stats) = writer(&path);
        let mut e = event(1, "front", "person", 1000);
        e.end_ms = None;
        h.send(DbCommand::Event(e.clone())).unwrap();
        h.send(DbCommand::Snapshot {
            event_id: 1,
            jpeg: Bytes::from_static(b"\xff\xd8jpeg"),
            width: 32,
            height: 24,
        })
        .unwrap();
        e.end_ms = Some(5000);
        e.top_score = 0.9;
        h.send(DbCommand::Event(e.clone())).unwrap();
        h.flush().unwrap();

        let r = open_reader(&path).unwrap();
        assert_eq!(get_event(&r, 1).unwrap(), Some(e));
        assert_eq!(get_snapshot(&r, 1).unwrap().unwrap(), b"\xff\xd8jpeg");
        assert!(stats.commits.load(Ordering::Relaxed) >= 1);
        drop(h);
        j.join().unwrap();
    }

    #[test]
    fn query_filters_by_camera_label_time_and_pages_with_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let (h, j, _) = writer(&path);
        for i in 1..=10 {
            let cam = if i % 2 == 0 { "a" } else { "b" };
            let label = if i % 3 == 0 { "car" } else { "person" };
            h.send(DbCommand::Event(event(i, cam, label, i * 100)))
                .unwrap();
        }
        drop(h);
        j.join().unwrap();
        let r = open_reader(&path).unwrap();
        let ids = |q: EventQuery| -> Vec<i64> {
            query_events(&r, &q, 1000)
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect()
        };
        assert_eq!(
            ids(EventQuery {
                camera: Some("a".into()),
                ..Default::default()
            }),
            vec![10, 8, 6, 4, 2]
        );
        assert_eq!(
            ids(EventQuery {
                label: Some("car".into()),
                ..Default::default()
            }),
            vec![9, 6, 3]
        );
        assert_eq!(
            ids(EventQuery {
                from_ms: Some(300),
                to_ms: Some(600),
                ..Default::default()
            }),
            vec![5, 4, 3]
        );
        let page1 = ids(EventQuery {
            limit: Some(4),
            ..Default::default()
        });
        assert_eq!(page1, vec![10, 9, 8, 7]);
        let page2 = ids(EventQuery {
            limit: Some(4),
            before_id: Some(7),
            ..Default::default()
        });
        assert_eq!(page2, vec![6, 5, 4, 3]);
        // The caller's cap wins over an absurd limit.
        assert_eq!(
            query_events(
                &r,
                &EventQuery {
                    limit: Some(u32::MAX),
                    ..Default::default()
                },
                2
            )
            .unwrap()
            .len(),
            2
        );
    }

    #[test]
    fn v1_database_is_upgraded_on_open_keeping_events_and_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.db");
        {
            let conn = Connection::open(&old).unwrap();
            migrate(&conn, &old, 1).unwrap();
            conn.execute(
                "INSERT INTO events VALUES (7, 'front', 'person', 3, 100, 900, 0.8, 1, 2, 3, 4, 500, x'ffd8')",
                [],
            )
            .unwrap();
        }
        let upgraded = open(&old).unwrap();
        let fresh_path = dir.path().join("fresh.db");
        let fresh = open(&fresh_path).unwrap();
        assert_eq!(schema(&upgraded), schema(&fresh));
        let v: i64 = upgraded
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let e = get_event(&upgraded, 7).unwrap().unwrap();
        assert_eq!(
            (e.camera.as_str(), e.start_ms, e.end_ms, e.hits),
            ("front", 100, Some(900), 0)
        );
        assert_eq!(
            get_snapshot(&upgraded, 7).unwrap().unwrap(),
            vec![0xff, 0xd8]
        );
    }

    #[test]
    fn newer_schema_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        {
            let conn = open(&path).unwrap();
            conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        let err = open(&path).unwrap_err();
        assert!(matches!(err, DbError::TooNew { .. }));
        assert!(err.to_string().contains("upgrade ocellus"), "{err}");
    }

    #[test]
    fn foreign_database_is_not_touched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE accounts (id INTEGER)")
            .unwrap();
        assert!(matches!(open(&path).unwrap_err(), DbError::Foreign { .. }));
    }

    #[test]
    fn max_events_keeps_only_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let conn = open(&path).unwrap();
        let stats = Arc::new(WriterStats::default());
        let (h, j) = spawn_writer(
            conn,
            path.clone(),
            WriterOptions {
                batch: Duration::from_millis(5),
                batch_max: 10,
                retention_ms: None,
                max_events: 3,
                max_bytes: 0,
            },
            stats.clone(),
        )
        .unwrap();
        for i in 1..=5 {
            h.send(DbCommand::Event(event(i, "a", "person", i * 10)))
                .unwrap();
        }
        drop(h);
        j.join().unwrap();
        let r = open_reader(&path).unwrap();
        let ids: Vec<i64> = query_events(&r, &EventQuery::default(), 100)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![5, 4, 3]);
        assert_eq!(stats.deleted_by_retention.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn max_size_deletes_the_oldest_until_the_data_fits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let stats = Arc::new(WriterStats::default());
        let limit = 256 * 1024;
        let (h, j) = spawn_writer(
            open(&path).unwrap(),
            path.clone(),
            WriterOptions {
                batch: Duration::from_millis(5),
                batch_max: 64,
                retention_ms: None,
                max_events: 0,
                max_bytes: limit,
            },
            stats.clone(),
        )
        .unwrap();
        for i in 1..=200 {
            h.send(DbCommand::Event(event(i, "a", "person", i * 10)))
                .unwrap();
            h.send(DbCommand::Snapshot {
                event_id: i,
                jpeg: Bytes::from(vec![i as u8; 8 * 1024]),
                width: 4,
                height: 3,
            })
            .unwrap();
        }
        drop(h);
        j.join().unwrap();
        let r = open_reader(&path).unwrap();
        let used: i64 = r
            .query_row(
                "SELECT (page_count - freelist_count) * page_size
                 FROM pragma_page_count, pragma_freelist_count, pragma_page_size",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert!(used as u64 <= limit, "{used} bytes used");
        let ids: Vec<i64> = query_events(&r, &EventQuery::default(), 1000)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        // 200 x 8 KiB cannot fit in 256 KiB: the newest stay, the oldest went.
        assert!(ids.len() > 5 && ids.len() < 32, "{} kept", ids.len());
        assert_eq!(ids[0], 200);
        assert_eq!(
            stats.deleted_by_retention.load(Ordering::Relaxed) as usize,
            200 - ids.len()
        );
        // The snapshots went with their events.
        let snaps: i64 = r
            .query_row("SELECT count(*) FROM snapshots", [], |row| row.get(0))
            .unwrap();
        assert_eq!(snaps as usize, ids.len());
    }

    /// While commits fail, what waits for the disk is bounded; the newest writes are kept.
    #[test]
    fn a_failing_batch_stays_within_its_bounds() {
        let mut b = Batch::default();
        let n = MAX_PENDING_EVENTS as i64 + 10;
        for i in 1..=n {
            b.add(DbCommand::Event(event(i, "a", "person", i)));
        }
        assert_eq!(b.events.len(), MAX_PENDING_EVENTS);
        assert_eq!(b.dropped, 10);
        assert!(b.events.contains_key(&n) && !b.events.contains_key(&1));
        // Updating an event already held replaces it and drops nothing.
        b.add(DbCommand::Event(event(n, "a", "person", n)));
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
