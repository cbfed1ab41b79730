//! The one writer thread: it owns the read-write connection, takes commands from a bounded
//! channel, commits them in batches, keeps them in memory (bounded) while the disk refuses
//! them, and applies retention.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use rusqlite::{params, Connection};

use super::batch::Batch;
use super::command::DbCommand;
use super::counts;
use super::recordings;
use crate::base::clock::now_ms;
use crate::counts::{HOUR_MS, MINUTE_MS};
use crate::db::DbError;

/// Bounds of the MQTT outbox; `None` in a writer without MQTT.
#[derive(Clone, Copy, Debug)]
pub struct OutboxLimits {
    pub max_messages: u64,
    pub max_age_ms: i64,
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
    /// The MQTT outbox's bounds, when MQTT is on.
    pub outbox: Option<OutboxLimits>,
    /// Count buckets older than this are deleted (`None`: kept).
    pub counts_retention_ms: Option<i64>,
    /// Minute buckets older than this are rolled up into hours (`None`: never).
    pub counts_minutes_ms: Option<i64>,
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
            outbox: None,
            counts_retention_ms: (by_age && storage.counts_retention_days > 0)
                .then(|| storage.counts_retention_days as i64 * 86_400_000),
            counts_minutes_ms: (by_age && storage.counts_minutes_days > 0)
                .then(|| storage.counts_minutes_days as i64 * 86_400_000),
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
    /// MQTT outbox messages given up by its bounds (count, age) before the broker took them.
    pub outbox_dropped: AtomicU64,
    /// Count buckets deleted by their retention, and minute buckets rolled up into hours.
    pub counts_deleted: AtomicU64,
    pub counts_rolled_up: AtomicU64,
}

/// The sending side of the writer: cheap to clone, one per pipeline.
#[derive(Clone)]
pub struct DbHandle {
    tx: Sender<DbCommand>,
}

impl DbHandle {
    /// A handle whose commands go to `tx`, for tests that look at the commands themselves.
    #[cfg(test)]
    pub(crate) fn from_sender(tx: Sender<DbCommand>) -> Self {
        Self { tx }
    }

    /// Queues a write; blocks while the writer's queue is full (back-pressure rather than
    /// unbounded memory).
    pub fn send(&self, cmd: DbCommand) -> Result<(), DbError> {
        self.tx.send(cmd).map_err(|_| DbError::WriterGone)
    }

    /// Queues the deletion of acknowledged outbox rows if the queue has room, and gives them
    /// back if not (for async callers, which must not block).
    pub fn try_send_acks(&self, seqs: Vec<i64>) -> Result<(), Vec<i64>> {
        self.tx
            .try_send(DbCommand::OutboxSent(seqs))
            .map_err(|e| match e.into_inner() {
                DbCommand::OutboxSent(seqs) => seqs,
                _ => Vec::new(),
            })
    }

    /// Waits until everything queued so far is committed.
    pub fn flush(&self) -> Result<(), DbError> {
        let (tx, rx) = bounded(1);
        self.send(DbCommand::Flush(tx))?;
        rx.recv().map_err(|_| DbError::WriterGone)
    }
}

/// Drops the outbox's oldest messages beyond its bounds; returns how many.
fn trim_outbox(tx: &rusqlite::Transaction, limits: OutboxLimits) -> rusqlite::Result<usize> {
    let old = tx.execute(
        "DELETE FROM mqtt_outbox WHERE created_ms < ?1",
        [now_ms() - limits.max_age_ms],
    )?;
    let over = tx.execute(
        "DELETE FROM mqtt_outbox WHERE seq IN (SELECT seq FROM mqtt_outbox ORDER BY seq DESC LIMIT -1 OFFSET ?1)",
        [limits.max_messages as i64],
    )?;
    Ok(old + over)
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

struct Writer {
    conn: Connection,
    path: PathBuf,
    opts: WriterOptions,
    stats: Arc<WriterStats>,
    rx: Receiver<DbCommand>,
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
                    self.stored(&mut batch, failing.take());
                    batch = Batch::default();
                }
                Err(e) => self.failed(&mut batch, &e, &mut failing),
            }
            if last_retention.elapsed() > Duration::from_secs(60) {
                last_retention = Instant::now();
                self.apply_retention();
            }
        }
        self.apply_retention();
    }

    /// After `batch` was committed: says so if commits had been failing since `failing`, and
    /// wakes who waited for it.
    fn stored(&self, batch: &mut Batch, failing: Option<(Instant, Instant)>) {
        if let Some((since, _)) = failing {
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
    }

    /// After `batch` failed to commit with `e`: logs it (at once, then every 30 s while
    /// `failing`), makes room where the disk is full, waits and takes in what came meanwhile.
    fn failed(
        &mut self,
        batch: &mut Batch,
        e: &rusqlite::Error,
        failing: &mut Option<(Instant, Instant)>,
    ) {
        // Keep the batch and try again: a full disk or a locked file usually
        // clears up, and losing events is worse than waiting. Clients are still
        // served meanwhile; the batch is bounded (see MAX_PENDING_*).
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let log = match failing {
            None => {
                *failing = Some((now, now));
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
                describe_write_error(e)
            );
        }
        if is_disk_full(e) {
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

    fn commit(&mut self, batch: &Batch) -> rusqlite::Result<()> {
        if batch.no_writes() {
            return Ok(());
        }
        let started = Instant::now();
        let tx = self.conn.transaction()?;
        {
            let mut up = tx.prepare_cached(concat!(
                "INSERT INTO events (",
                event_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
                 ON CONFLICT (id) DO UPDATE SET
                    end_ms = excluded.end_ms, top_score = excluded.top_score,
                    box_x = excluded.box_x, box_y = excluded.box_y,
                    box_w = excluded.box_w, box_h = excluded.box_h,
                    best_ms = excluded.best_ms, hits = excluded.hits,
                    stationary = excluded.stationary, zones = excluded.zones,
                    crossings = excluded.crossings"
            ))?;
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
                    serde_json::to_string(&e.zones).unwrap_or_else(|_| "[]".into()),
                    serde_json::to_string(&e.crossings).unwrap_or_else(|_| "[]".into()),
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
            let mut out = tx.prepare_cached(
                "INSERT INTO mqtt_outbox (topic, payload, retain, created_ms) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for m in &batch.outbox {
                out.execute(params![m.topic, m.payload, m.retain, m.created_ms])?;
            }
            let mut sent = tx.prepare_cached("DELETE FROM mqtt_outbox WHERE seq = ?1")?;
            for seq in &batch.sent {
                sent.execute([seq])?;
            }
            for ((camera, _, name, start_ms), values) in &batch.counts {
                counts::add(&tx, camera, name, *start_ms, MINUTE_MS, values)?;
            }
            for (path, row) in &batch.segments {
                match row {
                    Some(row) => recordings::upsert(&tx, row)?,
                    None => recordings::delete(&tx, path)?,
                }
            }
        }
        if !batch.outbox.is_empty() {
            if let Some(limits) = self.opts.outbox {
                let dropped = trim_outbox(&tx, limits)?;
                self.stats
                    .outbox_dropped
                    .fetch_add(dropped as u64, Ordering::Relaxed);
            }
        }
        tx.commit()?;
        let s = &self.stats;
        s.commits.fetch_add(1, Ordering::Relaxed);
        s.rows.fetch_add(
            (batch.events.len() + batch.snapshots.len() + batch.counts.len()) as u64,
            Ordering::Relaxed,
        );
        s.commit_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Rolls minute buckets up into hours past `counts_minutes_ms`, and deletes buckets past
    /// `counts_retention_ms` (the lines' totals stay).
    fn counts_retention(&mut self) -> rusqlite::Result<()> {
        let now = now_ms();
        if let Some(age) = self.opts.counts_minutes_ms {
            let cutoff = (now - age).div_euclid(HOUR_MS) * HOUR_MS;
            let n = counts::roll_up(&mut self.conn, cutoff)?;
            self.stats
                .counts_rolled_up
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        if let Some(age) = self.opts.counts_retention_ms {
            let n = counts::delete_ended_before(&self.conn, now - age)?;
            if n > 0 {
                tracing::info!(deleted = n, "retention removed old count buckets");
            }
            self.stats
                .counts_deleted
                .fetch_add(n as u64, Ordering::Relaxed);
        }
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
            self.counts_retention()?;
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
