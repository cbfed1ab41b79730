//! Counts as CSV (`format=csv`): one row per bucket and series.

use super::*;

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
pub(crate) fn utc(ms: i64) -> String {
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
}
