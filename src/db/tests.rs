//! Tests of the database as a whole: schema, writer, reads, outbox, counts, retention.

use super::*;
use crate::pipeline::values::{BBox, Event};
use bytes::Bytes;
use std::sync::atomic::Ordering;

pub(crate) fn event(id: i64, camera: &str, label: &str, start_ms: i64) -> Event {
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
        zones: Vec::new(),
        crossings: Vec::new(),
        clip: None,
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
            outbox: None,
            counts_retention_ms: None,
            counts_minutes_ms: None,
        },
        stats.clone(),
    )
    .unwrap();
    (h, j, stats)
}

/// The MQTT outbox keeps its order, loses what is acknowledged, and past its bounds gives
/// up the oldest messages, counted.
#[test]
fn outbox_is_ordered_trimmed_by_count_and_age_and_emptied_by_acks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.db");
    let conn = open(&path).unwrap();
    let stats = Arc::new(WriterStats::default());
    let opts = |max_messages| WriterOptions {
        batch: Duration::from_millis(20),
        batch_max: 100,
        retention_ms: None,
        max_events: 0,
        max_bytes: 0,
        outbox: Some(OutboxLimits {
            max_messages,
            max_age_ms: 3_600_000,
        }),
        counts_retention_ms: None,
        counts_minutes_ms: None,
    };
    let (h, j) = spawn_writer(conn, path.clone(), opts(5), stats.clone()).unwrap();
    let msg = |i: i64, age_ms: i64| {
        DbCommand::Outbox(OutboxMessage {
            topic: format!("t/{i}"),
            payload: vec![i as u8],
            retain: false,
            created_ms: now_ms() - age_ms,
        })
    };
    // Two older than an hour, then eight fresh ones: 5 kept, the newest.
    h.send(msg(0, 7_200_000)).unwrap();
    h.send(msg(1, 7_200_000)).unwrap();
    for i in 2..10 {
        h.send(msg(i, 0)).unwrap();
    }
    h.flush().unwrap();
    let reader = open_reader(&path).unwrap();
    let rows = |r: &Connection| -> Vec<(i64, String)> {
        r.prepare("SELECT seq, topic FROM mqtt_outbox ORDER BY seq")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let kept = rows(&reader);
    let topics: Vec<&str> = kept.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(topics, ["t/5", "t/6", "t/7", "t/8", "t/9"]);
    assert_eq!(stats.outbox_dropped.load(Ordering::Relaxed), 5);
    // Acknowledged ones go; a new message gets a higher seq than any before.
    h.send(DbCommand::OutboxSent(vec![kept[0].0, kept[1].0]))
        .unwrap();
    h.send(msg(10, 0)).unwrap();
    h.flush().unwrap();
    let left = rows(&reader);
    assert_eq!(left.len(), 4);
    assert_eq!(left[0].1, "t/7");
    assert!(left.last().unwrap().0 > kept.last().unwrap().0);
    drop(h);
    j.join().unwrap();
}

/// An event and its MQTT message are one command, so they are one transaction even when
/// the batch limit falls right after the event: with `batch_max = 1` every command is a
/// commit of its own, and each commit holds the event and its outbox row. (Sent as two
/// commands, as before, the event was committed alone and a crash then lost its message.)
#[test]
fn an_event_and_its_outbox_row_commit_together_at_the_batch_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atomic.db");
    let conn = open(&path).unwrap();
    let stats = Arc::new(WriterStats::default());
    let opts = WriterOptions {
        batch: Duration::from_secs(10),
        batch_max: 1,
        retention_ms: None,
        max_events: 0,
        max_bytes: 0,
        outbox: Some(OutboxLimits {
            max_messages: 1000,
            max_age_ms: 3_600_000,
        }),
        counts_retention_ms: None,
        counts_minutes_ms: None,
    };
    let (h, j) = spawn_writer(conn, path.clone(), opts, stats.clone()).unwrap();
    let reader = open_reader(&path).unwrap();
    let count = |sql: &str| -> i64 { reader.query_row(sql, [], |r| r.get(0)).unwrap() };
    for i in 1..=5 {
        let before = stats.commits.load(Ordering::Relaxed);
        h.send(DbCommand::Event {
            event: event(i, "a", "person", i * 10),
            outbox: Some(OutboxMessage::new("ocellus/box/events", vec![i as u8])),
        })
        .unwrap();
        h.flush().unwrap();
        assert_eq!(stats.commits.load(Ordering::Relaxed), before + 1);
        assert_eq!(count("SELECT count(*) FROM events"), i);
        assert_eq!(count("SELECT count(*) FROM mqtt_outbox"), i);
    }
    drop(h);
    j.join().unwrap();
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
    h.send(DbCommand::event_only(e.clone())).unwrap();
    h.send(DbCommand::Snapshot {
        event_id: 1,
        jpeg: Bytes::from_static(b"\xff\xd8jpeg"),
        width: 32,
        height: 24,
    })
    .unwrap();
    e.end_ms = Some(5000);
    e.top_score = 0.9;
    h.send(DbCommand::event_only(e.clone())).unwrap();
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
        h.send(DbCommand::event_only(event(i, cam, label, i * 100)))
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
            outbox: None,
            counts_retention_ms: None,
            counts_minutes_ms: None,
        },
        stats.clone(),
    )
    .unwrap();
    for i in 1..=5 {
        h.send(DbCommand::event_only(event(i, "a", "person", i * 10)))
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
            outbox: None,
            counts_retention_ms: None,
            counts_minutes_ms: None,
        },
        stats.clone(),
    )
    .unwrap();
    for i in 1..=200 {
        h.send(DbCommand::event_only(event(i, "a", "person", i * 10)))
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

fn line(left: u64, right: u64) -> crate::counts::Values {
    crate::counts::Values::Line { left, right }
}

fn counts_cmd(rows: Vec<(&str, i64, crate::counts::Values)>) -> DbCommand {
    DbCommand::Counts {
        camera: "front".into(),
        rows: rows
            .into_iter()
            .map(|(name, start_ms, values)| crate::counts::CountRow {
                name: name.into(),
                start_ms,
                values,
            })
            .collect(),
        outbox: Vec::new(),
    }
}

fn counts_query(
    kind: crate::counts::Kind,
    bucket: crate::counts::BucketWidth,
) -> crate::counts::CountsQuery {
    crate::counts::CountsQuery {
        camera: "front".into(),
        kind,
        name: None,
        from_ms: 0,
        to_ms: 10 * crate::counts::HOUR_MS,
        bucket,
        tz_offset_min: 0,
    }
}

/// Additions to one bucket add up (two commands, a restart in the middle of a minute), and
/// a rollup of minutes into hours keeps every total: crossings, entries, events and the
/// zone's watched time add, its peak is the highest; a late minute adds to its hour.
#[test]
fn counts_add_up_and_a_rollup_into_hours_keeps_every_total() {
    use crate::counts::{BucketWidth, Kind, Values, HOUR_MS, MINUTE_MS};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    let (h, j, _) = writer(&path);
    let zone = |entries, peak, object_ms, observed_ms| Values::Zone {
        entries,
        peak,
        object_ms,
        observed_ms,
    };
    h.send(counts_cmd(vec![
        ("door", 0, line(1, 0)),
        ("door", MINUTE_MS, line(2, 1)),
        ("door", HOUR_MS + 5 * MINUTE_MS, line(0, 4)),
        ("yard", 0, zone(1, 2, 30_000, 60_000)),
        ("yard", MINUTE_MS, zone(2, 3, 60_000, 60_000)),
        ("person", MINUTE_MS, Values::Label { events: 3 }),
    ]))
    .unwrap();
    h.flush().unwrap();
    // The same minute again: added to, not replaced.
    h.send(counts_cmd(vec![("door", MINUTE_MS, line(1, 0))]))
        .unwrap();
    h.flush().unwrap();
    drop(h);
    j.join().unwrap();

    let mut conn = open(&path).unwrap();
    let by_hour = |conn: &Connection, kind| {
        query_counts(conn, &counts_query(kind, BucketWidth::Hour)).unwrap()
    };
    let before: Vec<_> = [Kind::Line, Kind::Zone, Kind::Label]
        .map(|k| by_hour(&conn, k))
        .to_vec();
    let minutes = query_counts(&conn, &counts_query(Kind::Line, BucketWidth::Minute)).unwrap();
    assert_eq!(
        minutes[0].points.iter().map(|p| p.t).collect::<Vec<_>>(),
        [0, MINUTE_MS, HOUR_MS + 5 * MINUTE_MS]
    );
    assert_eq!(
        minutes[0].total,
        crate::counts::PointValues::Line { left: 4, right: 5 }
    );
    assert_eq!(line_totals(&conn, "front").unwrap()[0].left, 4);

    // Roll up everything before 2 h.
    let gone = counts::roll_up(&mut conn, 2 * HOUR_MS).unwrap();
    assert_eq!(gone, 6);
    let after: Vec<_> = [Kind::Line, Kind::Zone, Kind::Label]
        .map(|k| by_hour(&conn, k))
        .to_vec();
    assert_eq!(before, after, "a rollup changes no hour's values");
    let spans: Vec<i64> = conn
        .prepare("SELECT DISTINCT span_ms FROM line_counts")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(spans, [HOUR_MS]);
    let yard = &after[1][0].points[0].values;
    assert_eq!(
        *yard,
        crate::counts::PointValues::Zone {
            entries: 3,
            peak: 3,
            mean: 0.75,
            watched_ms: 120_000
        }
    );
    // A minute that comes late for a rolled-up hour is added to it at the next rollup.
    let tx = conn.transaction().unwrap();
    tx.execute(
        "INSERT INTO line_counts VALUES ('front', 'door', ?1, ?2, 5, 0)",
        [2 * MINUTE_MS, MINUTE_MS],
    )
    .unwrap();
    tx.commit().unwrap();
    counts::roll_up(&mut conn, 2 * HOUR_MS).unwrap();
    let hours = by_hour(&conn, Kind::Line);
    assert_eq!(
        hours[0].points[0].values,
        crate::counts::PointValues::Line { left: 9, right: 1 }
    );
    // The line's total was never touched by the rollup.
    assert_eq!(
        line_totals(&conn, "front").unwrap()[0],
        crate::counts::LineTotal {
            line: "door".into(),
            left: 4,
            right: 5
        }
    );
}

/// Count buckets past their retention go (checked as the writer ends); the lines' totals,
/// the counters Home Assistant keeps, stay.
#[test]
fn old_count_buckets_are_deleted_and_the_line_totals_stay() {
    use crate::counts::{Kind, DAY_MS};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let conn = open(&path).unwrap();
    let stats = Arc::new(WriterStats::default());
    let now = crate::counts::minute_of(now_ms());
    let (h, j) = spawn_writer(
        conn,
        path.clone(),
        WriterOptions {
            batch: Duration::from_millis(20),
            batch_max: 100,
            retention_ms: None,
            max_events: 0,
            max_bytes: 0,
            outbox: None,
            counts_retention_ms: Some(30 * DAY_MS),
            counts_minutes_ms: None,
        },
        stats.clone(),
    )
    .unwrap();
    h.send(counts_cmd(vec![
        ("door", now - 31 * DAY_MS, line(5, 5)),
        ("door", now - 29 * DAY_MS, line(1, 0)),
        (
            "person",
            now - 40 * DAY_MS,
            crate::counts::Values::Label { events: 2 },
        ),
    ]))
    .unwrap();
    drop(h);
    j.join().unwrap();
    let conn = open_reader(&path).unwrap();
    let q = crate::counts::CountsQuery {
        from_ms: now - 60 * DAY_MS,
        to_ms: now + DAY_MS,
        ..counts_query(Kind::Line, crate::counts::BucketWidth::Day)
    };
    let series = query_counts(&conn, &q).unwrap();
    assert_eq!(
        series[0].total,
        crate::counts::PointValues::Line { left: 1, right: 0 }
    );
    let labels = query_counts(
        &conn,
        &crate::counts::CountsQuery {
            kind: Kind::Label,
            ..q
        },
    )
    .unwrap();
    assert!(labels.is_empty(), "{labels:?}");
    assert_eq!(stats.counts_deleted.load(Ordering::Relaxed), 2);
    assert_eq!(line_totals(&conn, "front").unwrap()[0].left, 6);
}
