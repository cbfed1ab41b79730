//! Counts over time (docs/counts.md): per camera, per-minute buckets of line crossings (per line
//! and direction), zone occupancy (peak and mean objects, entries) and events started per label,
//! on the frames' clock. The pipeline fills a [`Buckets`] from what it already counts; what it
//! hands on are additive deltas ([`CountRow`]s) that the writer adds to the stored buckets, so a
//! restart in the middle of a minute adds to that minute instead of replacing it. Plain data and
//! pure functions: no SQL, JSON framing or time source here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::zones::{Crossing, Direction, Zones};

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

/// How often (the frames' clock) the counts gathered so far go to the database while a minute
/// is open: what a `kill -9` can lose, and how far the stored totals may lag the live ones.
pub const FLUSH_MS: i64 = 5_000;

/// A gap between two frames longer than this is not watched time (the camera was away): the
/// zones' mean occupancy counts only the time the camera was seen.
const MAX_FRAME_GAP_MS: i64 = 2_000;

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
    /// Crossings of a counting line by objects with an event, each way (see [`Direction`]).
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

/// A minute's totals per (kind, name).
type MinuteTotals = BTreeMap<(Kind, String), Values>;

/// One camera's counts being gathered: the open minute's totals, the additions not yet handed
/// on, and the lines' totals.
#[derive(Debug)]
pub struct Buckets {
    camera: String,
    /// Each zone with its watched time in the open minute not yet added to `pending` (added
    /// in place every frame, folded in when an update is taken or the minute closes: no
    /// allocation on the per-frame path).
    zones: Vec<(String, Values)>,
    /// The open minute and its totals.
    open: Option<(i64, MinuteTotals)>,
    /// Additions since the last update, per (kind, name, minute).
    pending: BTreeMap<(Kind, String, i64), Values>,
    closed: Vec<ClosedBucket>,
    totals: BTreeMap<String, (u64, u64)>,
    /// Lines whose total changed since the last update.
    totals_changed: Vec<String>,
    /// When the last update was taken, and the last frame's time.
    flushed_ms: Option<i64>,
    last_frame_ms: Option<i64>,
}

impl Buckets {
    /// A camera's buckets, its lines' totals starting from `totals` (the database's, so the
    /// counters survive a restart; lines not in it start at 0).
    pub fn new(camera: &str, zones: &[String], lines: &[String], totals: &[LineTotal]) -> Self {
        let totals: BTreeMap<String, (u64, u64)> = lines
            .iter()
            .map(|l| {
                let t = totals.iter().find(|t| &t.line == l);
                (l.clone(), t.map_or((0, 0), |t| (t.left, t.right)))
            })
            .collect();
        Self {
            camera: camera.to_string(),
            zones: zones
                .iter()
                .map(|z| (z.clone(), Values::zero(Kind::Zone)))
                .collect(),
            open: None,
            pending: BTreeMap::new(),
            closed: Vec::new(),
            totals_changed: totals.keys().cloned().collect(),
            totals,
            flushed_ms: None,
            last_frame_ms: None,
        }
    }

    /// The buckets of a camera's `zones` and lines.
    pub fn for_zones(camera: &str, zones: &Zones, totals: &[LineTotal]) -> Self {
        let zone_names: Vec<String> = zones.zone_names().map(str::to_string).collect();
        let line_names: Vec<String> = zones.line_names().map(str::to_string).collect();
        Self::new(camera, &zone_names, &line_names, totals)
    }

    fn add(&mut self, name: &str, ms: i64, values: Values) {
        let minute = minute_of(ms);
        let kind = values.kind();
        self.pending
            .entry((kind, name.to_string(), minute))
            .or_insert_with(|| Values::zero(kind))
            .merge(&values);
        if let Some((open, totals)) = &mut self.open {
            if *open == minute {
                totals
                    .entry((kind, name.to_string()))
                    .or_insert_with(|| Values::zero(kind))
                    .merge(&values);
            }
        }
    }

    /// A crossing by an object with an event, in the minute of its own time.
    pub fn crossed(&mut self, c: &Crossing) {
        let (left, right) = match c.direction {
            Direction::Left => (1, 0),
            Direction::Right => (0, 1),
        };
        if let Some(t) = self.totals.get_mut(&c.line) {
            t.0 += left;
            t.1 += right;
            if !self.totals_changed.contains(&c.line) {
                self.totals_changed.push(c.line.clone());
            }
        }
        self.add(&c.line, c.ms, Values::Line { left, right });
    }

    /// An event's object entered `zone` at `ms`.
    pub fn entered(&mut self, zone: &str, ms: i64) {
        let v = Values::Zone {
            entries: 1,
            peak: 0,
            object_ms: 0,
            observed_ms: 0,
        };
        self.add(zone, ms, v);
    }

    /// An event of `label` started (at its object's first sighting, `ms`).
    pub fn event_started(&mut self, label: &str, ms: i64) {
        self.add(label, ms, Values::Label { events: 1 });
    }

    /// A frame at `ms` with `occupancy` objects (with an event) in each zone, in the zones'
    /// order: the time since the previous frame is watched time, with these objects inside.
    /// Opens a new minute when `ms` is in one; returns whether an update is due (a minute
    /// closed, or [`FLUSH_MS`] passed since the last one).
    pub fn frame(&mut self, ms: i64, occupancy: &[u64]) -> bool {
        let minute = minute_of(ms);
        if self.open.as_ref().map(|(m, _)| *m) != Some(minute) {
            self.fold_zones();
            self.close_open();
            self.open = Some((minute, BTreeMap::new()));
        }
        let dt = self
            .last_frame_ms
            .map_or(0, |prev| ms - prev)
            .clamp(0, MAX_FRAME_GAP_MS) as u64;
        self.last_frame_ms = Some(ms);
        for ((_, acc), &n) in self.zones.iter_mut().zip(occupancy) {
            acc.merge(&Values::Zone {
                entries: 0,
                peak: n,
                object_ms: n * dt,
                observed_ms: dt,
            });
        }
        let flushed = *self.flushed_ms.get_or_insert(ms);
        !self.closed.is_empty() || ms - flushed >= FLUSH_MS
    }

    /// Adds the zones' watched time gathered in the open minute to it.
    fn fold_zones(&mut self) {
        let Some(minute) = self.open.as_ref().map(|(m, _)| *m) else {
            return;
        };
        let mut zones = std::mem::take(&mut self.zones);
        for (zone, acc) in &mut zones {
            let v = std::mem::replace(acc, Values::zero(Kind::Zone));
            if v != Values::zero(Kind::Zone) {
                self.add(zone, minute, v);
            }
        }
        self.zones = zones;
    }

    fn close_open(&mut self) {
        if let Some((start_ms, rows)) = self.open.take() {
            let rows: Vec<(String, Values)> =
                rows.into_iter().map(|((_, name), v)| (name, v)).collect();
            if !rows.is_empty() {
                self.closed.push(ClosedBucket { start_ms, rows });
            }
        }
    }

    /// Takes what is to be handed on, as of the frame at `ms`. With `end` (the source ended or
    /// the daemon stops) the open minute closes too. `None` when there is nothing.
    pub fn take(&mut self, ms: i64, end: bool) -> Option<CountsUpdate> {
        self.fold_zones();
        if end {
            self.close_open();
        }
        self.flushed_ms = Some(ms);
        let totals = std::mem::take(&mut self.totals_changed)
            .into_iter()
            .filter_map(|line| {
                let &(left, right) = self.totals.get(&line)?;
                Some(LineTotal { line, left, right })
            })
            .collect::<Vec<_>>();
        if self.pending.is_empty() && self.closed.is_empty() && totals.is_empty() {
            return None;
        }
        Some(CountsUpdate {
            camera: self.camera.clone(),
            rows: std::mem::take(&mut self.pending)
                .into_iter()
                .map(|((_, name, start_ms), values)| CountRow {
                    name,
                    start_ms,
                    values,
                })
                .collect(),
            closed: std::mem::take(&mut self.closed),
            totals,
        })
    }
}

/// The width of the buckets a query asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BucketWidth {
    #[serde(rename = "1m")]
    Minute,
    #[serde(rename = "15m")]
    Quarter,
    #[serde(rename = "1h")]
    Hour,
    #[serde(rename = "1d")]
    Day,
}

impl BucketWidth {
    pub fn ms(self) -> i64 {
        match self {
            BucketWidth::Minute => MINUTE_MS,
            BucketWidth::Quarter => 15 * MINUTE_MS,
            BucketWidth::Hour => HOUR_MS,
            BucketWidth::Day => DAY_MS,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "1m" => BucketWidth::Minute,
            "15m" => BucketWidth::Quarter,
            "1h" => BucketWidth::Hour,
            "1d" => BucketWidth::Day,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BucketWidth::Minute => "1m",
            BucketWidth::Quarter => "15m",
            BucketWidth::Hour => "1h",
            BucketWidth::Day => "1d",
        }
    }
}

/// A query for one or more series of one camera.
#[derive(Clone, Debug, PartialEq)]
pub struct CountsQuery {
    pub camera: String,
    /// What to count: lines, zones or labels, and which (`None`: every one of that kind).
    pub kind: Kind,
    pub name: Option<String>,
    /// `[from, to)`, milliseconds on the frames' clock.
    pub from_ms: i64,
    pub to_ms: i64,
    pub bucket: BucketWidth,
    /// Minutes east of UTC of the days (and hours) the buckets are cut into: a browser's
    /// `-getTimezoneOffset()`.
    pub tz_offset_min: i32,
}

/// At most this many buckets in one answer (a year of hours is 8,784).
pub const MAX_POINTS: i64 = 20_000;

/// The start of the bucket of `width` that `ms` lies in, with days and hours cut at
/// `tz_offset_min` east of UTC.
pub fn bucket_of(ms: i64, width: BucketWidth, tz_offset_min: i32) -> i64 {
    let shift = i64::from(tz_offset_min) * MINUTE_MS;
    (ms + shift).div_euclid(width.ms()) * width.ms() - shift
}

/// One bucket of one series in an answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    pub t: i64,
    #[serde(flatten)]
    pub values: PointValues,
}

/// A bucket's values as an answer gives them: a zone's mean is worked out.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PointValues {
    Line {
        left: u64,
        right: u64,
    },
    Zone {
        entries: u64,
        peak: u64,
        /// Mean objects inside over the time watched in the bucket (0 when not watched).
        mean: f64,
        watched_ms: u64,
    },
    Label {
        events: u64,
    },
}

impl From<Values> for PointValues {
    fn from(v: Values) -> Self {
        match v {
            Values::Line { left, right } => PointValues::Line { left, right },
            Values::Zone {
                entries,
                peak,
                object_ms,
                observed_ms,
            } => PointValues::Zone {
                entries,
                peak,
                mean: if observed_ms > 0 {
                    (object_ms as f64 / observed_ms as f64 * 1000.0).round() / 1000.0
                } else {
                    0.0
                },
                watched_ms: observed_ms,
            },
            Values::Label { events } => PointValues::Label { events },
        }
    }
}

/// One series of an answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Series {
    pub kind: Kind,
    pub name: String,
    /// Buckets with something in them, in time order (a missing bucket counted nothing).
    pub points: Vec<Point>,
    /// The series' sums over the range (a zone's peak: the highest).
    pub total: PointValues,
}

/// Groups stored buckets (`(name, start_ms, values)`, any widths of at most `query.bucket`, in
/// any order) into the query's buckets: one series per name, in name order.
pub fn group(
    query: &CountsQuery,
    rows: impl IntoIterator<Item = (String, i64, Values)>,
) -> Vec<Series> {
    let mut by_name: BTreeMap<String, BTreeMap<i64, Values>> = BTreeMap::new();
    for (name, start, v) in rows {
        let t = bucket_of(start, query.bucket, query.tz_offset_min);
        by_name
            .entry(name)
            .or_default()
            .entry(t)
            .or_insert_with(|| Values::zero(query.kind))
            .merge(&v);
    }
    by_name
        .into_iter()
        .map(|(name, buckets)| {
            let mut total = Values::zero(query.kind);
            for v in buckets.values() {
                total.merge(v);
            }
            Series {
                kind: query.kind,
                name,
                points: buckets
                    .into_iter()
                    .map(|(t, v)| Point {
                        t,
                        values: v.into(),
                    })
                    .collect(),
                total: total.into(),
            }
        })
        .collect()
}

/// A bad parameter of a counts query: which, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct ParamError {
    pub param: String,
    pub message: String,
}

fn bad(param: &str, message: impl Into<String>) -> ParamError {
    ParamError {
        param: param.to_string(),
        message: message.into(),
    }
}

/// The parameters a counts query takes (REST and WebSocket alike); `format` is REST's. (The
/// token guard takes `token` out of the query before a handler sees it.)
pub const PARAMS: [&str; 9] = [
    "camera", "line", "zone", "label", "from", "to", "bucket", "tz", "format",
];

/// Reads a counts query from its parameters as a client writes them (a query string, or a
/// WebSocket message's fields as text): `camera` (one of `cameras`), one of `line`, `zone` or
/// `label` (a name, or `*` for every one), `from` and `to` (milliseconds on the frames' clock;
/// default: the 24 hours before `now_ms`), `bucket` (`1m`, `15m`, `1h` or `1d`; default: what
/// keeps the range within a few hundred buckets) and `tz` (minutes east of UTC the days are cut
/// at, -840 to 840; default 0). Every error names its parameter.
pub fn parse_query<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    cameras: &[&str],
    now_ms: i64,
) -> Result<CountsQuery, ParamError> {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in pairs {
        if !PARAMS.contains(&k) {
            return Err(bad(
                k,
                format!(
                    "unknown parameter; the parameters are {}",
                    PARAMS.join(", ")
                ),
            ));
        }
        if seen.insert(k, v).is_some() {
            return Err(bad(k, "given twice"));
        }
    }
    let camera = match seen.get("camera") {
        Some(&c) if cameras.contains(&c) => c.to_string(),
        Some(&c) => {
            return Err(bad(
                "camera",
                format!("no camera {c:?}; the cameras are {}", cameras.join(", ")),
            ))
        }
        None if cameras.len() == 1 => cameras[0].to_string(),
        None => return Err(bad("camera", "missing (there are several cameras)")),
    };
    let mut kinds = [
        ("line", Kind::Line),
        ("zone", Kind::Zone),
        ("label", Kind::Label),
    ]
    .into_iter()
    .filter_map(|(p, k)| seen.get(p).map(|&v| (p, k, v)));
    let (kind, name) = match (kinds.next(), kinds.next()) {
        (Some((p, k, v)), None) => {
            if v.is_empty() {
                return Err(bad(p, "empty; give a name, or * for every one"));
            }
            (k, (v != "*").then(|| v.to_string()))
        }
        (None, _) => return Err(bad("line", "one of line, zone or label is needed")),
        (Some(_), Some((p, _, _))) => {
            return Err(bad(p, "only one of line, zone or label at a time"))
        }
    };
    let ms = |p: &str| -> Result<Option<i64>, ParamError> {
        seen.get(p)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| bad(p, format!("{v:?} is not a time in milliseconds")))
            })
            .transpose()
    };
    let to_ms = ms("to")?.unwrap_or(now_ms);
    let from_ms = ms("from")?.unwrap_or(to_ms - DAY_MS);
    if from_ms >= to_ms {
        return Err(bad("from", format!("{from_ms} is not before to ({to_ms})")));
    }
    let span = to_ms - from_ms;
    let bucket = match seen.get("bucket") {
        Some(&b) => BucketWidth::parse(b)
            .ok_or_else(|| bad("bucket", format!("{b:?}: use 1m, 15m, 1h or 1d")))?,
        None if span <= 6 * HOUR_MS => BucketWidth::Minute,
        None if span <= 3 * DAY_MS => BucketWidth::Quarter,
        None if span <= 60 * DAY_MS => BucketWidth::Hour,
        None => BucketWidth::Day,
    };
    if span / bucket.ms() > MAX_POINTS {
        return Err(bad(
            "bucket",
            format!(
                "{} buckets of {} from {from_ms} to {to_ms}; at most {MAX_POINTS}: use wider buckets",
                span / bucket.ms(),
                bucket.as_str()
            ),
        ));
    }
    let tz_offset_min = match seen.get("tz") {
        Some(v) => v
            .parse::<i32>()
            .ok()
            .filter(|m| (-840..=840).contains(m))
            .ok_or_else(|| bad("tz", format!("{v:?}: minutes east of UTC, -840 to 840")))?,
        None => 0,
    };
    if let Some(&f) = seen.get("format") {
        if f != "json" && f != "csv" {
            return Err(bad("format", format!("{f:?}: use json or csv")));
        }
    }
    Ok(CountsQuery {
        camera,
        kind,
        name,
        from_ms,
        to_ms,
        bucket,
        tz_offset_min,
    })
}

/// The answer to a counts query.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CountsAnswer {
    pub camera: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub bucket: BucketWidth,
    pub tz: i32,
    pub series: Vec<Series>,
}

impl CountsAnswer {
    pub fn new(q: &CountsQuery, series: Vec<Series>) -> Self {
        Self {
            camera: q.camera.clone(),
            from_ms: q.from_ms,
            to_ms: q.to_ms,
            bucket: q.bucket,
            tz: q.tz_offset_min,
            series,
        }
    }
}

/// The CSV header of [`csv_rows`]: one row per bucket and series, the columns of other kinds
/// empty.
pub const CSV_HEADER: &str =
    "camera,kind,name,start_ms,start_utc,left,right,entries,peak,mean,watched_ms,events\n";

/// `series` of `camera` as CSV rows (no header), in series then time order.
pub fn csv_rows(camera: &str, series: &[Series]) -> String {
    let mut out = String::new();
    for s in series {
        for p in &s.points {
            let values = match &p.values {
                PointValues::Line { left, right } => format!("{left},{right},,,,,"),
                PointValues::Zone {
                    entries,
                    peak,
                    mean,
                    watched_ms,
                } => format!(",,{entries},{peak},{mean},{watched_ms},"),
                PointValues::Label { events } => format!(",,,,,,{events}"),
            };
            out.push_str(&format!(
                "{},{},{},{},{},{values}\n",
                csv_field(camera),
                s.kind.as_str(),
                csv_field(&s.name),
                p.t,
                utc(p.t)
            ));
        }
    }
    out
}

/// A CSV field, quoted when it holds a comma, a quote or a line break. Names of lines and zones
/// are letters, digits, `-` and `_`; labels and camera ids may hold more.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `ms` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (a replay's clock starts at 1970).
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crossing(line: &str, direction: Direction, ms: i64) -> Crossing {
        Crossing {
            line: line.into(),
            direction,
            ms,
        }
    }

    fn buckets() -> Buckets {
        Buckets::new(
            "front",
            &["yard".into()],
            &["door".into()],
            &[LineTotal {
                line: "door".into(),
                left: 10,
                right: 4,
            }],
        )
    }

    #[test]
    fn crossings_go_to_the_minute_of_their_own_time_and_the_totals_continue() {
        let mut b = buckets();
        b.frame(59_000, &[0]);
        b.crossed(&crossing("door", Direction::Left, 59_500));
        b.crossed(&crossing("door", Direction::Right, 61_000));
        b.crossed(&crossing("door", Direction::Left, 61_100));
        let u = b.take(61_200, false).unwrap();
        let door: Vec<_> = u.rows.iter().filter(|r| r.name == "door").collect();
        assert_eq!(
            door.iter()
                .map(|r| (r.start_ms, r.values))
                .collect::<Vec<_>>(),
            [
                (0, Values::Line { left: 1, right: 0 }),
                (60_000, Values::Line { left: 1, right: 1 })
            ]
        );
        assert_eq!(
            u.totals,
            [LineTotal {
                line: "door".into(),
                left: 12,
                right: 5
            }]
        );
        // Nothing new: nothing to hand on.
        assert!(b.take(61_300, false).is_none());
    }

    #[test]
    fn zone_time_counts_the_gaps_between_frames_with_the_objects_inside() {
        let mut b = buckets();
        b.take(0, false);
        for (ms, n) in [(0, 0), (100, 2), (200, 2), (300, 1), (10_000, 1)] {
            b.frame(ms, &[n]);
        }
        let u = b.take(10_000, false).unwrap();
        let yard = u.rows.iter().find(|r| r.name == "yard").unwrap();
        // 100 ms each with 2, 2, 1 objects; the 9.7 s gap counts as 2 s (the camera was away).
        assert_eq!(
            yard.values,
            Values::Zone {
                entries: 0,
                peak: 2,
                object_ms: 200 + 200 + 100 + 2_000,
                observed_ms: 2_300
            }
        );
    }

    #[test]
    fn an_update_is_due_every_flush_interval_and_when_a_minute_closes() {
        let mut b = buckets();
        assert!(!b.frame(1_000, &[0]));
        b.take(1_000, false);
        assert!(!b.frame(1_000 + FLUSH_MS - 1, &[0]));
        assert!(b.frame(1_000 + FLUSH_MS, &[0]));
        b.take(1_000 + FLUSH_MS, false);
        b.event_started("person", 7_000);
        assert!(!b.frame(8_000, &[1]));
        // The next minute: the first one closes, with everything counted in it.
        assert!(b.frame(60_000, &[1]));
        let u = b.take(60_000, false).unwrap();
        assert_eq!(u.closed.len(), 1);
        assert_eq!(u.closed[0].start_ms, 0);
        assert!(u.closed[0]
            .rows
            .contains(&("person".into(), Values::Label { events: 1 })));
        // At the end the open minute closes too.
        let u = b.take(60_100, true).unwrap();
        assert_eq!(u.closed[0].start_ms, 60_000);
    }

    #[test]
    fn buckets_group_into_wider_ones_and_days_follow_the_time_zone() {
        let q = CountsQuery {
            camera: "front".into(),
            kind: Kind::Line,
            name: None,
            from_ms: 0,
            to_ms: 10 * DAY_MS,
            bucket: BucketWidth::Day,
            tz_offset_min: 120,
        };
        let rows = vec![
            // 21:30 and 22:30 UTC on day 0: 23:30 and 00:30 at UTC+2, two local days.
            (
                "door".to_string(),
                21 * HOUR_MS + 30 * MINUTE_MS,
                Values::Line { left: 1, right: 0 },
            ),
            (
                "door".to_string(),
                22 * HOUR_MS + 30 * MINUTE_MS,
                Values::Line { left: 2, right: 1 },
            ),
            // An hour's rollup in the second local day.
            (
                "door".to_string(),
                23 * HOUR_MS,
                Values::Line { left: 3, right: 0 },
            ),
        ];
        let s = group(&q, rows);
        assert_eq!(s.len(), 1);
        let pts: Vec<_> = s[0]
            .points
            .iter()
            .map(|p| (p.t, p.values.clone()))
            .collect();
        assert_eq!(
            pts,
            [
                (-2 * HOUR_MS, PointValues::Line { left: 1, right: 0 }),
                (22 * HOUR_MS, PointValues::Line { left: 5, right: 1 }),
            ]
        );
        assert_eq!(s[0].total, PointValues::Line { left: 6, right: 1 });
    }

    #[test]
    fn a_bad_parameter_is_named() {
        let cams = ["front", "back"];
        let q = |pairs: &[(&'static str, &'static str)]| {
            parse_query(pairs.iter().copied(), &cams, 10 * DAY_MS)
        };
        let param = |pairs: &[(&'static str, &'static str)]| q(pairs).unwrap_err().param;
        assert_eq!(param(&[("line", "door")]), "camera");
        assert_eq!(param(&[("camera", "side"), ("line", "door")]), "camera");
        assert_eq!(param(&[("camera", "front")]), "line");
        assert_eq!(
            param(&[("camera", "front"), ("line", "a"), ("zone", "b")]),
            "zone"
        );
        assert_eq!(param(&[("camera", "front"), ("line", "")]), "line");
        assert_eq!(
            param(&[("camera", "front"), ("line", "a"), ("from", "x")]),
            "from"
        );
        assert_eq!(
            param(&[
                ("camera", "front"),
                ("line", "a"),
                ("from", "5"),
                ("to", "5")
            ]),
            "from"
        );
        assert_eq!(
            param(&[("camera", "front"), ("line", "a"), ("bucket", "2h")]),
            "bucket"
        );
        assert_eq!(
            param(&[
                ("camera", "front"),
                ("line", "a"),
                ("from", "-8640000000"),
                ("bucket", "1m")
            ]),
            "bucket"
        );
        assert_eq!(
            param(&[("camera", "front"), ("line", "a"), ("tz", "900")]),
            "tz"
        );
        assert_eq!(
            param(&[("camera", "front"), ("line", "a"), ("format", "xml")]),
            "format"
        );
        assert_eq!(
            param(&[("camera", "front"), ("line", "a"), ("limit", "3")]),
            "limit"
        );
        assert_eq!(
            param(&[("camera", "front"), ("line", "a"), ("line", "b")]),
            "line"
        );
        // The defaults: the last 24 hours in quarters of an hour, every line.
        let ok = q(&[("camera", "back"), ("line", "*")]).unwrap();
        assert_eq!(
            (ok.kind, ok.name, ok.from_ms, ok.to_ms, ok.bucket),
            (
                Kind::Line,
                None,
                9 * DAY_MS,
                10 * DAY_MS,
                BucketWidth::Quarter
            )
        );
    }

    #[test]
    fn csv_rows_have_the_columns_of_their_kind_and_utc_times() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_767_225_599_000), "2025-12-31T23:59:59Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        let s = Series {
            kind: Kind::Line,
            name: "door".into(),
            points: vec![Point {
                t: 60_000,
                values: PointValues::Line { left: 2, right: 1 },
            }],
            total: PointValues::Line { left: 2, right: 1 },
        };
        assert_eq!(
            csv_rows("a,b", &[s]),
            "\"a,b\",line,door,60000,1970-01-01T00:01:00Z,2,1,,,,,\n"
        );
        assert_eq!(CSV_HEADER.split(',').count(), 12);
    }

    #[test]
    fn a_zone_bucket_says_its_mean_over_the_time_watched() {
        let v: PointValues = Values::Zone {
            entries: 3,
            peak: 4,
            object_ms: 90_000,
            observed_ms: 60_000,
        }
        .into();
        assert_eq!(
            v,
            PointValues::Zone {
                entries: 3,
                peak: 4,
                mean: 1.5,
                watched_ms: 60_000
            }
        );
    }
}
