//! Counts over time (docs/counts.md): per camera, per-minute buckets of line crossings (per line
//! and direction), zone occupancy (peak and mean objects, entries) and events started per label,
//! on the frames' clock. This file holds the values everyone shares; the pipeline gathers them
//! in `buckets.rs`, the REST and WebSocket queries are parsed and grouped in `query.rs`, and
//! `csv.rs` writes them out. What the pipeline hands on are additive deltas ([`CountRow`]s) that
//! the writer adds to the stored buckets, so a restart in the middle of a minute adds to that
//! minute instead of replacing it. Plain data and pure functions: no SQL, JSON framing or time
//! source here.

mod buckets;
mod csv;
mod query;

pub use buckets::Buckets;
pub use csv::{csv_rows, CSV_HEADER};
pub use query::{
    bucket_of, group, parse_query, BucketWidth, CountsAnswer, CountsQuery, ParamError, Point,
    PointValues, Series, MAX_POINTS, PARAMS,
};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// How often (the frames' clock) the counts gathered so far go to the database while a minute
/// is open: what a `kill -9` can lose, and how far the stored totals may lag the live ones.
pub const FLUSH_MS: i64 = 5_000;

/// What a series counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Line,
    Zone,
    Label,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Line => "line",
            Kind::Zone => "zone",
            Kind::Label => "label",
        }
    }
}

/// One bucket's values of one series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Values {
    /// Crossings of a counting line by objects with an event, each way.
    Line { left: u64, right: u64 },
    /// A zone: events whose object entered it, the most objects (with an event) in it at once,
    /// and object-milliseconds inside over milliseconds watched, whose ratio is the mean.
    Zone {
        entries: u64,
        peak: u64,
        object_ms: u64,
        observed_ms: u64,
    },
    /// Events started of a label.
    Label { events: u64 },
}

impl Values {
    pub fn kind(&self) -> Kind {
        match self {
            Values::Line { .. } => Kind::Line,
            Values::Zone { .. } => Kind::Zone,
            Values::Label { .. } => Kind::Label,
        }
    }

    /// Nothing counted yet, of `kind`.
    pub fn zero(kind: Kind) -> Self {
        match kind {
            Kind::Line => Values::Line { left: 0, right: 0 },
            Kind::Zone => Values::Zone {
                entries: 0,
                peak: 0,
                object_ms: 0,
                observed_ms: 0,
            },
            Kind::Label => Values::Label { events: 0 },
        }
    }

    /// Adds `other` (of the same kind; another kind is ignored): sums add, peaks take the
    /// larger. What the writer does to a stored bucket, and what a rollup does to an hour.
    pub fn merge(&mut self, other: &Values) {
        match (self, other) {
            (Values::Line { left, right }, Values::Line { left: l, right: r }) => {
                *left += l;
                *right += r;
            }
            (
                Values::Zone {
                    entries,
                    peak,
                    object_ms,
                    observed_ms,
                },
                Values::Zone {
                    entries: e,
                    peak: p,
                    object_ms: o,
                    observed_ms: w,
                },
            ) => {
                *entries += e;
                *peak = (*peak).max(*p);
                *object_ms += o;
                *observed_ms += w;
            }
            (Values::Label { events }, Values::Label { events: e }) => *events += e,
            _ => {}
        }
    }
}

/// Additions to one bucket of one series of a camera.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountRow {
    /// The line, zone or label.
    pub name: String,
    /// The bucket's start (a whole minute on the frames' clock).
    pub start_ms: i64,
    pub values: Values,
}

/// What a pipeline hands on about its counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CountsUpdate {
    pub camera: String,
    /// Additions to the stored buckets since the last update.
    pub rows: Vec<CountRow>,
    /// Minutes that closed since the last update, each with everything counted in it since the
    /// pipeline started: for live subscribers. In time order.
    pub closed: Vec<ClosedBucket>,
    /// The lines crossed since the last update with their totals after it (every line on the
    /// first update): the counters Home Assistant keeps statistics of.
    pub totals: Vec<LineTotal>,
}

/// A minute that closed, as the pipeline counted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosedBucket {
    pub start_ms: i64,
    pub rows: Vec<(String, Values)>,
}

impl ClosedBucket {
    /// Its rows as a client gets them.
    pub fn rows_out(&self) -> Vec<BucketRow> {
        self.rows
            .iter()
            .map(|(name, v)| BucketRow {
                kind: v.kind(),
                name: name.clone(),
                values: (*v).into(),
            })
            .collect()
    }
}

/// One series' values in a closed bucket, as a client gets them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BucketRow {
    pub kind: Kind,
    pub name: String,
    #[serde(flatten)]
    pub values: PointValues,
}

/// A line's crossings ever (kept across restarts), each way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LineTotal {
    pub line: String,
    pub left: u64,
    pub right: u64,
}

/// The start of the minute `ms` lies in.
pub fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(MINUTE_MS) * MINUTE_MS
}
