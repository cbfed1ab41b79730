//! Counts queries from REST and WebSocket: the parameters parsed and checked, the stored
//! minutes grouped into the buckets asked for.

use serde::{Deserialize, Serialize};

use super::*;

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
    let seen = known_params(pairs)?;
    let camera = camera_param(&seen, cameras)?;
    let (kind, name) = series_param(&seen)?;
    let (from_ms, to_ms, bucket) = range_params(&seen, now_ms)?;
    let tz_offset_min = tz_param(&seen)?;
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

/// A query's parameters by name, once each.
type Params<'a> = BTreeMap<&'a str, &'a str>;

/// The parameters, refusing one that is unknown or given twice.
fn known_params<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Params<'a>, ParamError> {
    let mut seen: Params = BTreeMap::new();
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
    Ok(seen)
}

/// `camera`: one of `cameras`; may be left out when there is one.
fn camera_param(seen: &Params, cameras: &[&str]) -> Result<String, ParamError> {
    Ok(match seen.get("camera") {
        Some(&c) if cameras.contains(&c) => c.to_string(),
        Some(&c) => {
            return Err(bad(
                "camera",
                format!("no camera {c:?}; the cameras are {}", cameras.join(", ")),
            ))
        }
        None if cameras.len() == 1 => cameras[0].to_string(),
        None => return Err(bad("camera", "missing (there are several cameras)")),
    })
}

/// Which series: exactly one of `line`, `zone` or `label`, a name or `*` (every one: `None`).
fn series_param(seen: &Params) -> Result<(Kind, Option<String>), ParamError> {
    let mut kinds = [
        ("line", Kind::Line),
        ("zone", Kind::Zone),
        ("label", Kind::Label),
    ]
    .into_iter()
    .filter_map(|(p, k)| seen.get(p).map(|&v| (p, k, v)));
    Ok(match (kinds.next(), kinds.next()) {
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
    })
}

/// `from`, `to` and `bucket`: the range (default: the day before `now_ms`) and the bucket
/// width (default: by the range's span), within [`MAX_POINTS`] buckets.
fn range_params(seen: &Params, now_ms: i64) -> Result<(i64, i64, BucketWidth), ParamError> {
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
    Ok((from_ms, to_ms, bucket))
}

/// `tz`: minutes east of UTC the days are cut at (default 0).
fn tz_param(seen: &Params) -> Result<i32, ParamError> {
    Ok(match seen.get("tz") {
        Some(v) => v
            .parse::<i32>()
            .ok()
            .filter(|m| (-840..=840).contains(m))
            .ok_or_else(|| bad("tz", format!("{v:?}: minutes east of UTC, -840 to 840")))?,
        None => 0,
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

#[cfg(test)]
mod tests {
    use super::*;

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
