//! The count tables' SQL: adding a pipeline's per-minute deltas to the stored buckets (and a
//! line's crossings to its totals), rolling minutes up into hours, and retention. Called by the
//! writer inside its transactions.

use rusqlite::{params, Connection};

use crate::counts::{Values, HOUR_MS, MINUTE_MS};

/// Adds `values` to the stored bucket of `camera`'s series `name` that starts at `start_ms` and
/// is `span_ms` wide (creating it), and a line's crossings to its totals too.
pub(super) fn add(
    tx: &rusqlite::Transaction,
    camera: &str,
    name: &str,
    start_ms: i64,
    span_ms: i64,
    values: &Values,
) -> rusqlite::Result<()> {
    let (table, cells): (&CountTable, Vec<i64>) = match *values {
        Values::Line { left, right } => (&COUNT_TABLES[0], vec![left as i64, right as i64]),
        Values::Zone {
            entries,
            peak,
            object_ms,
            observed_ms,
        } => (
            &COUNT_TABLES[1],
            vec![
                entries as i64,
                peak as i64,
                object_ms as i64,
                observed_ms as i64,
            ],
        ),
        Values::Label { events } => (&COUNT_TABLES[2], vec![events as i64]),
    };
    let CountTable {
        table: t,
        name: series,
        columns,
        sums,
        ..
    } = table;
    let marks: String = (5..5 + cells.len()).map(|i| format!(", ?{i}")).collect();
    let sql = format!(
        "INSERT INTO {t} (camera, {series}, start_ms, span_ms, {columns})
         VALUES (?1, ?2, ?3, ?4{marks}) ON CONFLICT DO UPDATE SET {sums}"
    );
    let mut stmt = tx.prepare_cached(&sql)?;
    let head: [&dyn rusqlite::ToSql; 4] = [&camera, &name, &start_ms, &span_ms];
    let cell_params = cells.iter().map(|c| c as &dyn rusqlite::ToSql);
    stmt.execute(rusqlite::params_from_iter(
        head.into_iter().chain(cell_params),
    ))?;
    if let (Values::Line { left, right }, MINUTE_MS) = (*values, span_ms) {
        tx.prepare_cached(
            "INSERT INTO line_totals (camera, line, crossed_left, crossed_right)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO UPDATE SET crossed_left = crossed_left + excluded.crossed_left,
                crossed_right = crossed_right + excluded.crossed_right",
        )?
        .execute(params![camera, name, left as i64, right as i64])?;
    }
    Ok(())
}

/// A count table: its series column, its value columns (in `Values`' order), how a group of
/// buckets sums up (a rollup), and how an addition adds to a stored bucket (every upsert).
struct CountTable {
    table: &'static str,
    name: &'static str,
    columns: &'static str,
    aggregates: &'static str,
    sums: &'static str,
}

const COUNT_TABLES: [CountTable; 3] = [
    CountTable {
        table: "line_counts",
        name: "line",
        columns: "crossed_left, crossed_right",
        aggregates: "sum(crossed_left), sum(crossed_right)",
        sums: "crossed_left = crossed_left + excluded.crossed_left,
               crossed_right = crossed_right + excluded.crossed_right",
    },
    CountTable {
        table: "zone_counts",
        name: "zone",
        columns: "entries, peak, object_ms, observed_ms",
        aggregates: "sum(entries), max(peak), sum(object_ms), sum(observed_ms)",
        sums: "entries = entries + excluded.entries, peak = max(peak, excluded.peak),
               object_ms = object_ms + excluded.object_ms,
               observed_ms = observed_ms + excluded.observed_ms",
    },
    CountTable {
        table: "label_counts",
        name: "label",
        columns: "events",
        aggregates: "sum(events)",
        sums: "events = events + excluded.events",
    },
];

/// Rolls the minute buckets that start before `cutoff_ms` (a whole hour) up into hour buckets,
/// in one transaction: sums add, peaks take the larger, and an hour rolled up before (a late
/// minute) is added to. Returns how many minute buckets went.
pub(super) fn roll_up(conn: &mut Connection, cutoff_ms: i64) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let mut gone = 0;
    for CountTable {
        table,
        name,
        columns,
        aggregates,
        sums,
    } in COUNT_TABLES
    {
        tx.execute(
            &format!(
                "INSERT INTO {table} (camera, {name}, start_ms, span_ms, {columns})
                 SELECT camera, {name}, (start_ms / {HOUR_MS}) * {HOUR_MS} AS hour, {HOUR_MS}, {aggregates}
                 FROM {table} WHERE span_ms = {MINUTE_MS} AND start_ms < ?1
                 GROUP BY camera, {name}, hour
                 ON CONFLICT DO UPDATE SET {sums}"
            ),
            [cutoff_ms],
        )?;
        gone += tx.execute(
            &format!("DELETE FROM {table} WHERE span_ms = {MINUTE_MS} AND start_ms < ?1"),
            [cutoff_ms],
        )?;
    }
    tx.commit()?;
    Ok(gone)
}

/// Deletes the buckets of every count table that ended at or before `ms`; returns how many.
pub(super) fn delete_ended_before(conn: &Connection, ms: i64) -> rusqlite::Result<usize> {
    let mut n = 0;
    for t in &COUNT_TABLES {
        n += conn.execute(
            &format!("DELETE FROM {} WHERE start_ms + span_ms <= ?1", t.table),
            [ms],
        )?;
    }
    Ok(n)
}
