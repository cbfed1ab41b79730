//! SQLite ingest: events per second through Ocellus' writer thread (batched transactions)
//! against one transaction per event, into a real database file with the real schema.
//!
//! cargo run --release --example db_ingest -- [EVENTS]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ocellus::db::{self, DbCommand, WriterOptions, WriterStats};
use ocellus::pipeline::values::{BBox, Event};

fn event(i: i64) -> Event {
    Event {
        id: i,
        camera: format!("cam{}", i % 4),
        label: if i % 3 == 0 { "car" } else { "person" }.into(),
        track_id: i as u64,
        start_ms: 1_764_000_000_000 + i * 37,
        end_ms: Some(1_764_000_000_000 + i * 37 + 4000),
        top_score: 0.5 + (i % 50) as f32 / 100.0,
        best_box: BBox::new(10.0, 20.0, 30.0, 60.0),
        best_ms: 1_764_000_000_000 + i * 37 + 900,
        hits: 12,
        stationary: false,
        zones: Vec::new(),
        crossings: Vec::new(),
        clip: None,
    }
}

fn main() {
    let n: i64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().unwrap())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();

    // Batched: the writer thread as the daemon runs it.
    let path = dir.path().join("batched.db");
    let conn = db::open(&path).unwrap();
    let stats = Arc::new(WriterStats::default());
    let opts = WriterOptions {
        batch: Duration::from_millis(50),
        batch_max: 4096,
        retention_ms: None,
        max_events: 0,
        max_bytes: 0,
        outbox: None,
        counts_retention_ms: None,
        counts_minutes_ms: None,
    };
    let (h, j) = db::spawn_writer(conn, path.clone(), opts, stats.clone()).unwrap();
    let t0 = Instant::now();
    for i in 1..=n {
        h.send(DbCommand::event_only(event(i))).unwrap();
    }
    h.flush().unwrap();
    let batched = t0.elapsed();
    drop(h);
    j.join().unwrap();
    let commits = stats.commits.load(std::sync::atomic::Ordering::Relaxed);

    // One transaction per event, the way a simple script writes.
    let single_n = (n / 20).max(1000);
    let path = dir.path().join("single.db");
    let conn = db::open(&path).unwrap();
    let t0 = Instant::now();
    for i in 1..=single_n {
        let e = event(i);
        conn.execute(
            "INSERT INTO events (id, camera, label, track_id, start_ms, end_ms, top_score, box_x, box_y, box_w, box_h, best_ms, hits)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            rusqlite::params![e.id, e.camera, e.label, e.track_id as i64, e.start_ms, e.end_ms, e.top_score as f64,
                e.best_box.x as f64, e.best_box.y as f64, e.best_box.w as f64, e.best_box.h as f64, e.best_ms, e.hits as i64],
        )
        .unwrap();
    }
    let single = t0.elapsed();
    let b = n as f64 / batched.as_secs_f64();
    let s = single_n as f64 / single.as_secs_f64();
    println!(
        "batched {n} events in {:.3}s = {b:.0} events/s ({commits} commits); one transaction per event: {single_n} in {:.3}s = {s:.0} events/s; ratio {:.1}x",
        batched.as_secs_f64(),
        single.as_secs_f64(),
        b / s
    );
}
