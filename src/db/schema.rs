//! The database schema: its versioned upgrades, each in its own transaction, and the refusal of a
//! database that is newer than this binary or was made by another program.

use std::path::Path;

use rusqlite::{Connection, Transaction};

use crate::db::DbError;

/// Schema upgrades, in order: entry `i` takes the schema from version `i` to `i + 1`. Each runs
/// in its own transaction together with the `user_version` bump, so a crash leaves the database
/// at one version or the next, never in between.
const MIGRATIONS: &[fn(&Transaction) -> rusqlite::Result<()>] = &[
    v0_to_v1, v1_to_v2, v2_to_v3, v3_to_v4, v4_to_v5, v5_to_v6, v6_to_v7,
];

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

/// Events record the zones their object entered and the lines it crossed, as JSON arrays
/// (`["driveway"]`, `[{"line": "door", "direction": "left", "ms": 1234}]`); queries filter by
/// zone with `json_each`.
fn v3_to_v4(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE events ADD COLUMN zones TEXT NOT NULL DEFAULT '[]';
         ALTER TABLE events ADD COLUMN crossings TEXT NOT NULL DEFAULT '[]';",
    )
}

/// The MQTT outbox: messages for the broker, written in the same transactions as the events
/// they tell of, deleted when the broker acknowledges them (docs/mqtt.md). `seq` never goes
/// back (AUTOINCREMENT), so the order survives deletes.
fn v4_to_v5(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE mqtt_outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL,
            payload BLOB NOT NULL,
            retain INTEGER NOT NULL,
            created_ms INTEGER NOT NULL
        );",
    )
}

/// Counts over time (docs/counts.md): per camera, buckets of line crossings, zone occupancy
/// and events started per label, a minute wide (`span_ms` 60000) or, rolled up with age, an hour
/// (3600000); and each line's crossings ever, which retention never removes (the counters Home
/// Assistant keeps statistics of). `left`/`right` are SQL keywords, hence `crossed_left`.
fn v5_to_v6(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE line_counts (
            camera TEXT NOT NULL,
            line TEXT NOT NULL,
            start_ms INTEGER NOT NULL,
            span_ms INTEGER NOT NULL,
            crossed_left INTEGER NOT NULL,
            crossed_right INTEGER NOT NULL,
            PRIMARY KEY (camera, line, start_ms, span_ms)
        ) WITHOUT ROWID;
        CREATE TABLE zone_counts (
            camera TEXT NOT NULL,
            zone TEXT NOT NULL,
            start_ms INTEGER NOT NULL,
            span_ms INTEGER NOT NULL,
            entries INTEGER NOT NULL,
            peak INTEGER NOT NULL,
            object_ms INTEGER NOT NULL,
            observed_ms INTEGER NOT NULL,
            PRIMARY KEY (camera, zone, start_ms, span_ms)
        ) WITHOUT ROWID;
        CREATE TABLE label_counts (
            camera TEXT NOT NULL,
            label TEXT NOT NULL,
            start_ms INTEGER NOT NULL,
            span_ms INTEGER NOT NULL,
            events INTEGER NOT NULL,
            PRIMARY KEY (camera, label, start_ms, span_ms)
        ) WITHOUT ROWID;
        CREATE TABLE line_totals (
            camera TEXT NOT NULL,
            line TEXT NOT NULL,
            crossed_left INTEGER NOT NULL,
            crossed_right INTEGER NOT NULL,
            PRIMARY KEY (camera, line)
        ) WITHOUT ROWID;",
    )
}

/// Recordings (docs/recording.md): one row per segment file, by path relative to the
/// recordings directory; `open` while the recorder writes it.
fn v6_to_v7(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE recordings (
            path TEXT PRIMARY KEY,
            camera TEXT NOT NULL,
            start_ms INTEGER NOT NULL,
            end_ms INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            open INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX recordings_by_camera ON recordings (camera, start_ms);",
    )
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
