//! `replay --expect`: compares a replay's events with a file of expected events and explains the
//! difference, so a config or model change can be regression-tested before it is deployed.
//!
//! The file is either a JSON object `{"tolerance_ms": 1000, "events": [...], "counts": {...}}`
//! or the JSON lines that `ocellus replay --json` prints (so a known-good run can be recorded
//! as it is). Each expected event needs `label` and `start_ms`; `end_ms` is checked when given.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::pipeline::values::Event;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// How far start and end times may be off, in milliseconds; `--tolerance-ms` when absent.
    #[serde(default)]
    pub tolerance_ms: Option<i64>,
    /// Events that must be found; when given, any other event is unexpected.
    #[serde(default)]
    pub events: Vec<ExpectedEvent>,
    /// Exact number of events per label.
    #[serde(default)]
    pub counts: BTreeMap<String, usize>,
}

/// One expected event; other fields (as printed by `--json`) are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct ExpectedEvent {
    pub label: String,
    pub start_ms: i64,
    #[serde(default)]
    pub end_ms: Option<i64>,
}

/// An expectations file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ExpectError {
    #[error("cannot read expectations {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("expectations {}: {source}", path.display())]
    Parse { path: PathBuf, source: ParseError },
}

/// A line of an expectations file that is neither the object form nor an event.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {source} (want a JSON object with \"events\", or one event per line as printed by --json)")]
pub struct ParseError {
    pub line: usize,
    pub source: serde_json::Error,
}

/// The events did not meet the expectation: the difference, readable as it is.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Mismatch(pub String);

impl Expectation {
    pub fn load(path: &Path) -> Result<Expectation, ExpectError> {
        let text = std::fs::read_to_string(path).map_err(|source| ExpectError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|source| ExpectError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    pub fn parse(text: &str) -> Result<Expectation, ParseError> {
        let trimmed = text.trim_start();
        // A single object with any of our keys is the object form; otherwise JSON lines.
        if trimmed.starts_with('{') {
            if let Ok(exp) = serde_json::from_str::<Expectation>(trimmed) {
                return Ok(exp);
            }
        }
        let mut events = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let e: ExpectedEvent = serde_json::from_str(line).map_err(|source| ParseError {
                line: i + 1,
                source,
            })?;
            events.push(e);
        }
        Ok(Expectation {
            events,
            ..Default::default()
        })
    }
    /// The labels whose event count differs from the expected one: (label, expected, found).
    fn wrong_counts(&self, actual: &[Event]) -> Vec<(&String, usize, usize)> {
        let mut counts = BTreeMap::<&str, usize>::new();
        for a in actual {
            *counts.entry(a.label.as_str()).or_default() += 1;
        }
        self.counts
            .iter()
            .map(|(label, want)| {
                (
                    label,
                    *want,
                    counts.get(label.as_str()).copied().unwrap_or(0),
                )
            })
            .filter(|(_, want, got)| want != got)
            .collect()
    }

    /// A summary when `actual` meets the expectation, else the difference.
    pub fn compare(&self, actual: &[Event], default_tolerance_ms: i64) -> Result<String, Mismatch> {
        let tol = self.tolerance_ms.unwrap_or(default_tolerance_ms);
        let mut expected: Vec<&ExpectedEvent> = self.events.iter().collect();
        expected.sort_by_key(|e| (e.start_ms, e.label.clone()));
        let (used, missing) = match_events(&expected, actual, tol);
        let unexpected: Vec<&Event> = if self.events.is_empty() {
            Vec::new()
        } else {
            actual
                .iter()
                .zip(&used)
                .filter(|(_, u)| !**u)
                .map(|(a, _)| a)
                .collect()
        };
        let wrong_counts = self.wrong_counts(actual);
        if missing.is_empty() && unexpected.is_empty() && wrong_counts.is_empty() {
            return Ok(format!(
                "expectation met: {} expected events matched within {tol} ms{}",
                expected.len(),
                if self.counts.is_empty() {
                    String::new()
                } else {
                    format!(", counts {:?}", self.counts)
                }
            ));
        }
        let mut out = format!(
            "expectation failed ({} missing, {} unexpected, {} wrong counts; tolerance {tol} ms):\n",
            missing.len(),
            unexpected.len(),
            wrong_counts.len()
        );
        for e in missing {
            let _ = writeln!(
                out,
                "  - {:<10} {}   expected, not found",
                e.label,
                span(e.start_ms, e.end_ms)
            );
        }
        for a in unexpected {
            let _ = writeln!(
                out,
                "  + {:<10} {}   found, not expected (track {}, score {:.2})",
                a.label,
                span(a.start_ms, a.end_ms),
                a.track_id,
                a.top_score
            );
        }
        for (label, want, got) in wrong_counts {
            let _ = writeln!(out, "  # {label:<10} expected {want} events, found {got}");
        }
        Err(Mismatch(out))
    }
}

/// Each of `expected` (in start order) matched to the nearest unused actual event of its label
/// within `tol` ms: which actual events were used, and the expected ones left unmatched.
fn match_events<'a>(
    expected: &[&'a ExpectedEvent],
    actual: &[Event],
    tol: i64,
) -> (Vec<bool>, Vec<&'a ExpectedEvent>) {
    let mut used = vec![false; actual.len()];
    let mut missing = Vec::new();
    for exp in expected {
        let best = actual
            .iter()
            .enumerate()
            .filter(|(i, a)| {
                !used[*i]
                    && a.label == exp.label
                    && (a.start_ms - exp.start_ms).abs() <= tol
                    && match (exp.end_ms, a.end_ms) {
                        (Some(x), Some(y)) => (x - y).abs() <= tol,
                        (Some(_), None) => false,
                        (None, _) => true,
                    }
            })
            .min_by_key(|(i, a)| ((a.start_ms - exp.start_ms).abs(), *i));
        match best {
            Some((i, _)) => used[i] = true,
            None => missing.push(*exp),
        }
    }
    (used, missing)
}

fn span(start: i64, end: Option<i64>) -> String {
    match end {
        Some(end) => format!(
            "{:>8.1}s - {:>7.1}s",
            start as f64 / 1000.0,
            end as f64 / 1000.0
        ),
        None => format!("{:>8.1}s - {:>7}", start as f64 / 1000.0, "?"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::values::BBox;

    fn ev(label: &str, start: i64, end: i64) -> Event {
        Event {
            id: 1,
            camera: "c".into(),
            label: label.into(),
            track_id: 1,
            start_ms: start,
            end_ms: Some(end),
            top_score: 0.8,
            best_box: BBox::default(),
            best_ms: start,
            hits: 3,
            stationary: false,
            zones: Vec::new(),
            crossings: Vec::new(),
            clip: None,
        }
    }

    #[test]
    fn json_lines_from_replay_are_an_expectation() {
        let exp = Expectation::parse(
            "{\"id\":1,\"label\":\"person\",\"start_ms\":100,\"end_ms\":900,\"top_score\":0.5}\n\n{\"label\":\"car\",\"start_ms\":5}\n",
        )
        .unwrap();
        assert_eq!(exp.events.len(), 2);
        assert_eq!(exp.events[0].end_ms, Some(900));
    }

    #[test]
    fn matching_events_within_tolerance_pass() {
        let exp = Expectation::parse(
            r#"{"tolerance_ms": 200, "events": [{"label":"person","start_ms":1000,"end_ms":3000}], "counts": {"person": 1}}"#,
        )
        .unwrap();
        assert!(exp.compare(&[ev("person", 1150, 2900)], 0).is_ok());
    }

    #[test]
    fn diff_names_missing_unexpected_and_wrong_counts() {
        let exp = Expectation::parse(
            r#"{"tolerance_ms": 200, "events": [{"label":"person","start_ms":1000,"end_ms":3000}], "counts": {"person": 1}}"#,
        )
        .unwrap();
        let diff = exp
            .compare(&[ev("person", 1500, 3000), ev("person", 8000, 9000)], 0)
            .unwrap_err()
            .to_string();
        assert!(
            diff.contains("1 missing, 2 unexpected, 1 wrong counts"),
            "{diff}"
        );
        assert!(
            diff.contains("- person") && diff.contains("+ person"),
            "{diff}"
        );
        assert!(diff.contains("expected 1 events, found 2"), "{diff}");
    }

    #[test]
    fn garbage_is_a_readable_error() {
        let err = Expectation::parse("not json").unwrap_err();
        assert_eq!(err.line, 1);
        assert!(err.to_string().starts_with("line 1:"), "{err}");
    }
}
