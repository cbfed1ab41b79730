//! The daemon's stats at one moment, as one typed snapshot. The stats task builds one every
//! second (with rates since the previous) and sends it as the `stats` WebSocket message; `GET
//! /api/stats` and systemd's `STATUS=` line show the latest; `/metrics` takes a fresh one, so a
//! scrape never sees counters a second old. Every counter kept per camera and by the database
//! writer is in it, and `/metrics` exports each (a test checks).

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::capture::live::SourceStatus;
use crate::db::WriterStats;
use crate::hub::CameraHub;
use crate::metrics::{get, Counter};
use crate::protocol::CameraStatus;

#[derive(Clone, Debug, Serialize)]
pub struct StatsSnapshot {
    /// Always `stats`: the snapshot is the WebSocket message as it is.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub uptime_s: u64,
    /// WebSocket clients connected.
    pub clients: u64,
    pub cameras: Vec<CameraSnapshot>,
    pub db: DbSnapshot,
    /// The MQTT client (absent without `[mqtt]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<crate::mqtt::MqttSnapshot>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CameraSnapshot {
    #[serde(flatten)]
    pub camera: CameraStatus,
    pub captured: u64,
    pub processed: u64,
    pub skipped: u64,
    /// Rates over the last second (0 in a snapshot without a previous one).
    pub captured_fps: f64,
    pub processed_fps: f64,
    /// Mean detector time per run since start.
    pub detect_ms: f64,
    /// The object detector and what runs it (`null`: motion only).
    pub detector: Option<crate::detect::DetectorInfo>,
    pub events_started: u64,
    pub stream_encodes: u64,
    /// Objects with an event in each of the camera's zones now.
    pub zones: Vec<crate::zones::ZoneCount>,
    /// Crossings of each of the camera's lines, each way, since start and in the last hour.
    pub lines: Vec<crate::zones::LineCount>,
    /// Every per-camera counter, under its Prometheus name (the fields above are some of them).
    #[serde(skip)]
    pub counters: Vec<Counter>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DbSnapshot {
    pub commits: u64,
    pub rows: u64,
    pub errors: u64,
    /// Writes held in memory while commits fail (a full disk); 0 when healthy.
    pub pending: u64,
    pub dropped: u64,
    pub deleted_by_retention: u64,
}

impl DbSnapshot {
    /// Each figure under its Prometheus name; `pending` is a gauge, the others counters.
    pub fn counters(&self) -> [Counter; 6] {
        let c = |name, help, value| Counter { name, help, value };
        [
            c(
                "ocellus_db_commits_total",
                "Database transactions committed.",
                self.commits,
            ),
            c("ocellus_db_rows_total", "Rows written.", self.rows),
            c(
                "ocellus_db_errors_total",
                "Failed commits (retried).",
                self.errors,
            ),
            c(
                "ocellus_db_pending_writes",
                "Writes held in memory while commits fail (a full disk); 0 when healthy.",
                self.pending,
            ),
            c(
                "ocellus_db_dropped_total",
                "Writes given up because the backlog held while commits failed was full.",
                self.dropped,
            ),
            c(
                "ocellus_db_deleted_by_retention_total",
                "Events deleted by the retention limits (age, count).",
                self.deleted_by_retention,
            ),
        ]
    }
}

/// Per-camera frame counts at one moment, for rates.
pub struct Sample {
    at: Instant,
    counts: Vec<(u64, u64)>,
}

impl Sample {
    pub fn now(cameras: &[Arc<CameraHub>]) -> Self {
        Self {
            at: Instant::now(),
            counts: cameras
                .iter()
                .map(|c| (get(&c.stats.captured), get(&c.stats.processed)))
                .collect(),
        }
    }
}

/// What a snapshot is taken of.
pub struct Sources<'a> {
    pub cameras: &'a [Arc<CameraHub>],
    pub started: Instant,
    /// WebSocket clients connected now.
    pub clients: u64,
    pub writer: &'a WriterStats,
    /// The MQTT client and its broker's URL, when `[mqtt]` is set.
    pub mqtt: Option<(&'a crate::mqtt::MqttStats, &'a str)>,
}

impl StatsSnapshot {
    /// The stats now; with `prev`, frame rates since then.
    pub fn take(src: &Sources, prev: Option<&Sample>) -> (Self, Sample) {
        let now = Sample::now(src.cameras);
        let dt = prev.map(|p| (now.at - p.at).as_secs_f64()).unwrap_or(0.0);
        let rate = |i: usize, f: fn(&(u64, u64)) -> u64| match prev {
            Some(p) if dt > 0.0 && i < p.counts.len() => {
                let per_s = f(&now.counts[i]).saturating_sub(f(&p.counts[i])) as f64 / dt;
                (per_s * 10.0).round() / 10.0
            }
            _ => 0.0,
        };
        let cameras = src
            .cameras
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let counters: Vec<Counter> = c.stats.counters().into();
                let (zones, lines) = {
                    let counts = c.stats.zones.lock().unwrap_or_else(|p| p.into_inner());
                    (counts.zones.clone(), counts.lines.clone())
                };
                CameraSnapshot {
                    camera: c.state.current(),
                    captured: get(&c.stats.captured),
                    processed: get(&c.stats.processed),
                    skipped: get(&c.stats.skipped),
                    captured_fps: rate(i, |t| t.0),
                    processed_fps: rate(i, |t| t.1),
                    detect_ms: (c.stats.detect.mean_ms() * 100.0).round() / 100.0,
                    detector: c.detector.clone(),
                    events_started: get(&c.stats.events_started),
                    stream_encodes: get(&c.stats.stream_encodes),
                    zones,
                    lines,
                    counters,
                }
            })
            .collect();
        let w = src.writer;
        let snapshot = Self {
            kind: "stats",
            uptime_s: src.started.elapsed().as_secs(),
            clients: src.clients,
            cameras,
            db: DbSnapshot {
                commits: get(&w.commits),
                rows: get(&w.rows),
                errors: get(&w.errors),
                pending: get(&w.pending),
                dropped: get(&w.dropped),
                deleted_by_retention: get(&w.deleted_by_retention),
            },
            mqtt: src
                .mqtt
                .map(|(m, url)| m.snapshot(url, get(&w.outbox_dropped))),
        };
        (snapshot, now)
    }

    /// systemd's `STATUS=` line: "2/2 cameras connected, 19.8 fps processed, 3 clients, 41
    /// events".
    pub fn status_line(&self) -> String {
        let connected = self
            .cameras
            .iter()
            .filter(|c| c.camera.state == SourceStatus::Connected.as_str())
            .count();
        let fps: f64 = self.cameras.iter().map(|c| c.processed_fps).sum();
        let events: u64 = self.cameras.iter().map(|c| c.events_started).sum();
        format!(
            "{connected}/{} cameras connected, {fps:.1} fps processed, {} clients, {events} events",
            self.cameras.len(),
            self.clients,
        )
    }
}
