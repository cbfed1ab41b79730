//! The fleet view's own database: every device's state, events, snapshots and counters as they
//! arrive through the broker, keyed by device. Written by one thread in batches; a message is
//! acknowledged to the broker only once its batch is committed, so a fleet view killed at any
//! moment gets again from its persistent session whatever it had not stored.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::db::DbError;
use crate::pipeline::values::{Event, EventKind};

/// The fleet schema's version (`PRAGMA user_version`); a newer file is refused.
const FLEET_SCHEMA_VERSION: i64 = 1;
/// `PRAGMA application_id` of a fleet database ("OCLF"), so that a box's database (or any
/// other SQLite file) is never taken for one.
const FLEET_APPLICATION_ID: i64 = 0x4f43_4c46;

/// What the fleet view learns from one message.
#[derive(Clone, Debug, PartialEq)]
pub enum FleetWrite {
    /// `<prefix>/<device>/available`: online or offline (the last will says offline).
    Available { device: String, online: bool },
    /// `<prefix>/<device>/events`: an event's start, update or end.
    Event {
        device: String,
        kind: EventKind,
        event: Event,
    },
    /// `<prefix>/<device>/stats`: the box's stats object as it sent it.
    Stats { device: String, json: String },
    /// `<prefix>/<device>/info`: what the box says of itself (version, dashboard address).
    Info { device: String, json: String },
    /// `<prefix>/<device>/<camera>/<label>/snapshot`: the latest event's best moment.
    Snapshot {
        device: String,
        camera: String,
        label: String,
        jpeg: Vec<u8>,
    },
    /// A retained counter: a line's crossings each way, a zone's objects, a label's open events.
    Place {
        device: String,
        camera: String,
        kind: PlaceKind,
        name: String,
        value: i64,
    },
}

impl FleetWrite {
    pub fn device(&self) -> &str {
        match self {
            FleetWrite::Available { device, .. }
            | FleetWrite::Event { device, .. }
            | FleetWrite::Stats { device, .. }
            | FleetWrite::Info { device, .. }
            | FleetWrite::Snapshot { device, .. }
            | FleetWrite::Place { device, .. } => device,
        }
    }
}

/// Which counter a [`FleetWrite::Place`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaceKind {
    LineLeft,
    LineRight,
    Zone,
    Label,
}

impl PlaceKind {
    fn as_str(self) -> &'static str {
        match self {
            PlaceKind::LineLeft => "line_left",
            PlaceKind::LineRight => "line_right",
            PlaceKind::Zone => "zone",
            PlaceKind::Label => "label",
        }
    }
}

/// Opens (creating) the fleet database read-write.
pub fn open(path: &Path) -> Result<Connection, DbError> {
    let failed = |source| DbError::Open {
        path: path.to_owned(),
        source,
    };
    let conn = Connection::open(path).map_err(failed)?;
    super::configure(&conn).map_err(failed)?;
    let pragma = |name: &str| -> Result<i64, DbError> {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .map_err(failed)
    };
    let (app, version) = (pragma("application_id")?, pragma("user_version")?);
    let tables: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(failed)?;
    if app != FLEET_APPLICATION_ID && (version != 0 || tables != 0) {
        return Err(DbError::NotFleet {
            path: path.to_owned(),
        });
    }
    if version > FLEET_SCHEMA_VERSION {
        return Err(DbError::TooNew {
            path: path.to_owned(),
            found: version,
            supported: FLEET_SCHEMA_VERSION,
        });
    }
    conn.execute_batch(
        "BEGIN;
         CREATE TABLE IF NOT EXISTS devices (
             device TEXT PRIMARY KEY,
             online INTEGER NOT NULL DEFAULT 0,
             since_ms INTEGER NOT NULL,
             seen_ms INTEGER NOT NULL,
             stats TEXT,
             stats_ms INTEGER,
             info TEXT
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS events (
             device TEXT NOT NULL,
             id INTEGER NOT NULL,
             camera TEXT NOT NULL,
             label TEXT NOT NULL,
             start_ms INTEGER NOT NULL,
             end_ms INTEGER,
             top_score REAL NOT NULL,
             zones TEXT NOT NULL,
             event TEXT NOT NULL,
             received_ms INTEGER NOT NULL,
             PRIMARY KEY (device, id)
         ) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS events_by_start ON events (start_ms DESC);
         CREATE TABLE IF NOT EXISTS snapshots (
             device TEXT NOT NULL,
             id INTEGER NOT NULL,
             jpeg BLOB NOT NULL,
             PRIMARY KEY (device, id)
         );
         CREATE TABLE IF NOT EXISTS places (
             device TEXT NOT NULL,
             camera TEXT NOT NULL,
             kind TEXT NOT NULL,
             name TEXT NOT NULL,
             value INTEGER NOT NULL,
             updated_ms INTEGER NOT NULL,
             PRIMARY KEY (device, camera, kind, name)
         ) WITHOUT ROWID;
         PRAGMA user_version = 1;
         PRAGMA application_id = 1329810502;
         COMMIT;",
    )
    .map_err(failed)?;
    Ok(conn)
}

/// Makes sure `device` has a row (first seen now).
fn touch(tx: &Transaction, device: &str, now: i64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO devices (device, online, since_ms, seen_ms) VALUES (?1, 0, ?2, ?2)
         ON CONFLICT (device) DO UPDATE SET seen_ms = ?2",
        params![device, now],
    )?;
    Ok(())
}

/// Applies one message in `tx`. Idempotent: a message delivered twice leaves what once did.
pub fn apply(tx: &Transaction, w: &FleetWrite, now: i64) -> rusqlite::Result<()> {
    touch(tx, w.device(), now)?;
    match w {
        FleetWrite::Available { device, online } => {
            // `since` moves only when the state changes (a retained message read again on
            // reconnection says nothing new).
            tx.execute(
                "UPDATE devices SET since_ms = CASE WHEN online = ?2 THEN since_ms ELSE ?3 END,
                 online = ?2 WHERE device = ?1",
                params![device, *online, now],
            )?;
        }
        FleetWrite::Event {
            device,
            kind: _,
            event,
        } => store_event(tx, device, event, now)?,
        FleetWrite::Stats { device, json } => {
            tx.execute(
                "UPDATE devices SET stats = ?2, stats_ms = ?3 WHERE device = ?1",
                params![device, json, now],
            )?;
        }
        FleetWrite::Info { device, json } => {
            tx.execute(
                "UPDATE devices SET info = ?2 WHERE device = ?1",
                params![device, json],
            )?;
        }
        FleetWrite::Snapshot {
            device,
            camera,
            label,
            jpeg,
        } => {
            // The box publishes the latest event's snapshot of that camera and label.
            tx.execute(
                "INSERT OR REPLACE INTO snapshots (device, id, jpeg)
                 SELECT device, id, ?4 FROM events
                 WHERE device = ?1 AND camera = ?2 AND label = ?3
                 ORDER BY id DESC LIMIT 1",
                params![device, camera, label, jpeg],
            )?;
        }
        FleetWrite::Place {
            device,
            camera,
            kind,
            name,
            value,
        } => {
            tx.execute(
                "INSERT INTO places (device, camera, kind, name, value, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (device, camera, kind, name)
                 DO UPDATE SET value = ?5, updated_ms = ?6",
                params![device, camera, kind.as_str(), name, value, now],
            )?;
        }
    }
    Ok(())
}

/// Stores a box's event message, the first copy or a later one: a late copy of an update must
/// not undo an end already stored, and the top score only grows.
fn store_event(tx: &Transaction, device: &str, event: &Event, now: i64) -> rusqlite::Result<()> {
    let json = serde_json::to_string(event).unwrap_or_default();
    let zones = serde_json::to_string(&event.zones).unwrap_or_default();
    tx.execute(
        "INSERT INTO events (device, id, camera, label, start_ms, end_ms, top_score, zones,
             event, received_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (device, id) DO UPDATE SET
             event = CASE WHEN events.end_ms IS NOT NULL AND excluded.end_ms IS NULL
                 THEN events.event ELSE excluded.event END,
             zones = CASE WHEN events.end_ms IS NOT NULL AND excluded.end_ms IS NULL
                 THEN events.zones ELSE excluded.zones END,
             end_ms = COALESCE(excluded.end_ms, events.end_ms),
             top_score = MAX(events.top_score, excluded.top_score)",
        params![
            device,
            event.id,
            event.camera,
            event.label,
            event.start_ms,
            event.end_ms,
            f64::from(event.top_score),
            zones,
            json,
            now
        ],
    )?;
    Ok(())
}

/// Most messages in one transaction.
const BATCH_MAX: usize = 1000;

/// The fleet writer: takes `(message, ack)` pairs from `rx`, applies everything waiting in one
/// transaction, and after the commit hands each batch's acks and messages to `committed` (which
/// acknowledges them to the broker and tells the dashboards). A commit that fails (a full disk)
/// is retried every second with the same batch: nothing is acknowledged that is not stored.
/// Once `stopping` is cancelled a failed batch is given up instead (unacknowledged, the broker's
/// session sends it again after a restart), so a stop on a full disk stays within the unit's
/// timeout. Ends when `rx` closes.
pub fn spawn_writer<A: Send + 'static>(
    mut conn: Connection,
    mut rx: tokio::sync::mpsc::Receiver<(FleetWrite, A)>,
    mut committed: impl FnMut(Vec<(FleetWrite, A)>) + Send + 'static,
    stopping: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("fleet-writer".into())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut batch = vec![first];
                while batch.len() < BATCH_MAX {
                    match rx.try_recv() {
                        Ok(x) => batch.push(x),
                        Err(_) => break,
                    }
                }
                if commit_or_give_up(&mut conn, &batch, &stopping) {
                    committed(batch);
                }
            }
        })
}

/// How long a failed commit waits before it is tried again, in steps that watch the stop.
const RETRY: std::time::Duration = std::time::Duration::from_secs(1);
const RETRY_STEP: std::time::Duration = std::time::Duration::from_millis(50);

/// Commits `batch` in one transaction, retrying every [`RETRY`] while it fails; returns false
/// when it gave up because `stopping` was cancelled.
fn commit_or_give_up<A>(
    conn: &mut Connection,
    batch: &[(FleetWrite, A)],
    stopping: &CancellationToken,
) -> bool {
    loop {
        let now = crate::base::clock::now_ms();
        let result = (|| {
            let tx = conn.transaction()?;
            for (w, _) in batch {
                apply(&tx, w, now)?;
            }
            tx.commit()
        })();
        let Err(e) = result else {
            return true;
        };
        if stopping.is_cancelled() {
            tracing::error!(error = %e, messages = batch.len(), "fleet database: commit failed while stopping; not acknowledged, the broker sends them again");
            return false;
        }
        tracing::error!(error = %e, messages = batch.len(), "fleet database: commit failed; retrying in 1 s, nothing is acknowledged meanwhile");
        let until = std::time::Instant::now() + RETRY;
        while std::time::Instant::now() < until && !stopping.is_cancelled() {
            std::thread::sleep(RETRY_STEP);
        }
    }
}

/// A device as the fleet dashboard lists it.
#[derive(Clone, Debug, Serialize)]
pub struct Device {
    pub device: String,
    pub online: bool,
    /// When it went online or offline (as the fleet view saw it).
    pub since_ms: i64,
    /// The last message from it.
    pub seen_ms: i64,
    /// Its latest stats object, as it sent it.
    pub stats: Option<serde_json::Value>,
    pub stats_ms: Option<i64>,
    /// What it says of itself: `version`, `dashboard_url`.
    pub info: Option<serde_json::Value>,
    /// Events stored from it.
    pub events: i64,
}

pub fn devices(conn: &Connection) -> Result<Vec<Device>, DbError> {
    let mut st = conn.prepare(
        "SELECT d.device, d.online, d.since_ms, d.seen_ms, d.stats, d.stats_ms, d.info,
                (SELECT COUNT(*) FROM events e WHERE e.device = d.device)
         FROM devices d ORDER BY d.device",
    )?;
    let json = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
    let rows = st.query_map([], |r| {
        Ok(Device {
            device: r.get(0)?,
            online: r.get(1)?,
            since_ms: r.get(2)?,
            seen_ms: r.get(3)?,
            stats: json(r.get(4)?),
            stats_ms: r.get(5)?,
            info: json(r.get(6)?),
            events: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Filters for the fleet's event feed, newest first; `before` pages on (start_ms, device, id).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetEventQuery {
    pub device: Option<String>,
    pub camera: Option<String>,
    pub label: Option<String>,
    /// Events whose object entered this zone.
    pub zone: Option<String>,
    /// Started at or after (ms).
    pub from_ms: Option<i64>,
    /// Started before (ms).
    pub to_ms: Option<i64>,
    /// The paging cursor: the `start_ms` of the last event of the previous page.
    pub before_ms: Option<i64>,
    pub limit: Option<u32>,
}

/// One event of the fleet feed.
#[derive(Clone, Debug, Serialize)]
pub struct FleetEvent {
    pub device: String,
    #[serde(flatten)]
    pub event: serde_json::Value,
    pub has_snapshot: bool,
    /// The event's clip on its box: the box's `dashboard_url` joined with the event's `clip`,
    /// when the box records that camera and says where it is served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_url: Option<String>,
}

/// `clip` (a path on the box, `/api/events/{id}/clip.mp4`) under the box's dashboard URL,
/// which may carry a path of its own behind a reverse proxy (`https://gw/garage/`).
fn clip_url(dashboard_url: Option<&str>, clip: Option<&str>) -> Option<String> {
    let base = dashboard_url?
        .split(['?', '#'])
        .next()?
        .trim_end_matches('/');
    let clip = clip?;
    (!base.is_empty() && clip.starts_with('/')).then(|| format!("{base}{clip}"))
}

pub fn events(conn: &Connection, q: &FleetEventQuery) -> Result<Vec<FleetEvent>, DbError> {
    let limit = i64::from(q.limit.unwrap_or(100).clamp(1, 500));
    // A zone filter matches the JSON array's element exactly ("\"name\"").
    let zone = q
        .zone
        .as_ref()
        .map(|z| format!("%{}%", serde_json::to_string(z).unwrap_or_default()));
    let mut st = conn.prepare(
        "SELECT e.device, e.event, s.id IS NOT NULL, json_extract(d.info, '$.dashboard_url')
         FROM events e
         LEFT JOIN snapshots s ON s.device = e.device AND s.id = e.id
         LEFT JOIN devices d ON d.device = e.device
         WHERE (?1 IS NULL OR e.device = ?1) AND (?2 IS NULL OR e.camera = ?2)
           AND (?3 IS NULL OR e.label = ?3) AND (?4 IS NULL OR e.zones LIKE ?4)
           AND (?5 IS NULL OR e.start_ms >= ?5) AND (?6 IS NULL OR e.start_ms < ?6)
           AND (?7 IS NULL OR e.start_ms < ?7)
         ORDER BY e.start_ms DESC, e.device, e.id DESC LIMIT ?8",
    )?;
    let rows = st.query_map(
        params![
            q.device,
            q.camera,
            q.label,
            zone,
            q.from_ms,
            q.to_ms,
            q.before_ms,
            limit
        ],
        |r| {
            let text: String = r.get(1)?;
            let event: serde_json::Value =
                serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
            let base: Option<String> = r.get(3)?;
            Ok(FleetEvent {
                device: r.get(0)?,
                clip_url: clip_url(base.as_deref(), event["clip"].as_str()),
                event,
                has_snapshot: r.get(2)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn snapshot(conn: &Connection, device: &str, id: i64) -> Result<Option<Vec<u8>>, DbError> {
    Ok(conn
        .query_row(
            "SELECT jpeg FROM snapshots WHERE device = ?1 AND id = ?2",
            params![device, id],
            |r| r.get(0),
        )
        .optional()?)
}

/// One counter of one device's camera.
#[derive(Clone, Debug, Serialize)]
pub struct Place {
    pub device: String,
    pub camera: String,
    pub kind: String,
    pub name: String,
    pub value: i64,
    pub updated_ms: i64,
}

pub fn places(conn: &Connection) -> Result<Vec<Place>, DbError> {
    let mut st = conn.prepare(
        "SELECT device, camera, kind, name, value, updated_ms FROM places
         ORDER BY device, camera, kind, name",
    )?;
    let rows = st.query_map([], |r| {
        Ok(Place {
            device: r.get(0)?,
            camera: r.get(1)?,
            kind: r.get(2)?,
            name: r.get(3)?,
            value: r.get(4)?,
            updated_ms: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Events per device, camera and label that started in [from_ms, to_ms): the fleet's counts.
pub fn label_counts(
    conn: &Connection,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(String, String, String, i64)>, DbError> {
    let mut st = conn.prepare(
        "SELECT device, camera, label, COUNT(*) FROM events
         WHERE start_ms >= ?1 AND start_ms < ?2 GROUP BY device, camera, label
         ORDER BY device, camera, label",
    )?;
    let rows = st.query_map(params![from_ms, to_ms], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::values::BBox;
    use std::collections::BTreeMap;

    fn event(id: i64, end: Option<i64>, score: f32) -> Event {
        Event {
            id,
            camera: "gate".into(),
            label: "person".into(),
            track_id: 1,
            start_ms: 1000 + id,
            end_ms: end,
            top_score: score,
            best_box: BBox::new(1.0, 2.0, 3.0, 4.0),
            best_ms: 1000,
            hits: 5,
            stationary: false,
            zones: vec!["door".into()],
            crossings: Vec::new(),
            clip: None,
        }
    }

    fn write(conn: &mut Connection, writes: &[FleetWrite], now: i64) {
        let tx = conn.transaction().unwrap();
        for w in writes {
            apply(&tx, w, now).unwrap();
        }
        tx.commit().unwrap();
    }

    #[test]
    fn an_event_delivered_twice_or_out_of_order_is_stored_once_and_keeps_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("fleet.db")).unwrap();
        let ev = |kind, e| FleetWrite::Event {
            device: "pi-1".into(),
            kind,
            event: e,
        };
        write(
            &mut conn,
            &[
                ev(EventKind::Start, event(7, None, 0.5)),
                ev(EventKind::End, event(7, Some(5000), 0.9)),
                // The broker's second copy of the start, and a late update.
                ev(EventKind::Start, event(7, None, 0.5)),
                ev(EventKind::Update, event(7, None, 0.7)),
                // The same id from another device is another event.
                FleetWrite::Event {
                    device: "pi-2".into(),
                    kind: EventKind::Start,
                    event: event(7, None, 0.6),
                },
            ],
            10,
        );
        let all = events(&conn, &FleetEventQuery::default()).unwrap();
        assert_eq!(all.len(), 2);
        let one = events(
            &conn,
            &FleetEventQuery {
                device: Some("pi-1".into()),
                zone: Some("door".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].event["end_ms"], 5000);
        let none = events(
            &conn,
            &FleetEventQuery {
                zone: Some("doo".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(none.is_empty(), "a zone matches by its whole name");
        drop(conn);
        // Opened again it is the same database; a box's database is refused.
        assert_eq!(
            devices(&open(&dir.path().join("fleet.db")).unwrap())
                .unwrap()
                .len(),
            2
        );
        let boxdb = dir.path().join("box.db");
        drop(super::super::open(&boxdb).unwrap());
        assert!(matches!(open(&boxdb), Err(DbError::NotFleet { .. })));
    }

    #[test]
    fn availability_moves_since_only_on_a_change_and_a_snapshot_goes_to_the_latest_event() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("fleet.db")).unwrap();
        let avail = |online| FleetWrite::Available {
            device: "pi-1".into(),
            online,
        };
        write(&mut conn, &[avail(true)], 100);
        write(&mut conn, &[avail(true)], 200);
        let d = &devices(&conn).unwrap()[0];
        assert!(d.online);
        assert_eq!((d.since_ms, d.seen_ms), (100, 200));
        write(&mut conn, &[avail(false)], 300);
        let d = &devices(&conn).unwrap()[0];
        assert_eq!((d.online, d.since_ms), (false, 300));

        let start = |id| FleetWrite::Event {
            device: "pi-1".into(),
            kind: EventKind::Start,
            event: event(id, None, 0.5),
        };
        write(
            &mut conn,
            &[
                start(1),
                start(2),
                FleetWrite::Snapshot {
                    device: "pi-1".into(),
                    camera: "gate".into(),
                    label: "person".into(),
                    jpeg: vec![0xff, 0xd8],
                },
            ],
            400,
        );
        assert_eq!(snapshot(&conn, "pi-1", 2).unwrap(), Some(vec![0xff, 0xd8]));
        assert_eq!(snapshot(&conn, "pi-1", 1).unwrap(), None);
    }

    #[test]
    fn an_event_with_a_clip_links_it_on_its_box_and_one_without_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open(&dir.path().join("fleet.db")).unwrap();
        let info = |device: &str, url: &str| FleetWrite::Info {
            device: device.into(),
            json: serde_json::json!({"version": "0.1.0", "dashboard_url": url}).to_string(),
        };
        let ev = |device: &str, id, clip: bool| FleetWrite::Event {
            device: device.into(),
            kind: EventKind::Start,
            event: Event {
                clip: clip.then(|| format!("/api/events/{id}/clip.mp4")),
                ..event(id, None, 0.5)
            },
        };
        write(
            &mut conn,
            &[
                info("pi-1", "https://gw.example/garage/?x=1"),
                ev("pi-1", 1, true),
                ev("pi-1", 2, false),
                // A box that does not say where it is served: no link to give.
                ev("pi-2", 3, true),
            ],
            100,
        );
        let links: BTreeMap<i64, Option<String>> = events(&conn, &FleetEventQuery::default())
            .unwrap()
            .into_iter()
            .map(|e| (e.event["id"].as_i64().unwrap(), e.clip_url))
            .collect();
        assert_eq!(
            links,
            BTreeMap::from([
                (
                    1,
                    Some("https://gw.example/garage/api/events/1/clip.mp4".into())
                ),
                (2, None),
                (3, None),
            ])
        );
    }

    #[test]
    fn a_commit_that_keeps_failing_is_given_up_when_stopping_and_nothing_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("fleet.db")).unwrap();
        // Every write fails, as on a full disk.
        conn.pragma_update(None, "query_only", true).unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (acked_tx, acked) = std::sync::mpsc::channel();
        let stopping = CancellationToken::new();
        let writer = spawn_writer(
            conn,
            rx,
            move |batch| acked_tx.send(batch.len()).unwrap(),
            stopping.clone(),
        )
        .unwrap();
        let w = FleetWrite::Available {
            device: "pi-1".into(),
            online: true,
        };
        tx.blocking_send((w, ())).unwrap();
        // It keeps retrying, acknowledging nothing, until the stop.
        assert!(acked
            .recv_timeout(std::time::Duration::from_millis(1500))
            .is_err());
        assert!(!writer.is_finished());
        stopping.cancel();
        drop(tx);
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || done_tx.send(writer.join().is_ok()).unwrap());
        assert_eq!(
            done.recv_timeout(std::time::Duration::from_secs(10)),
            Ok(true),
            "the writer did not end after the stop"
        );
        assert!(
            acked.try_recv().is_err(),
            "a batch that was not stored was acknowledged"
        );
    }
}
