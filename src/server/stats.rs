//! The daemon's stats at one moment, as one typed snapshot, and the task that takes one every
//! second (with rates since the previous): it sends it as the `stats` WebSocket message and
//! keeps it as the latest, which `GET /api/stats`, systemd's `STATUS=` line and MQTT show;
//! `/metrics` takes a fresh one, so a scrape never sees counters a second old (the box's health
//! in it is the task's last reading). Every counter kept per camera and by the database writer
//! is in it, and `/metrics` exports each (a test checks).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::capture::live::SourceStatus;
use crate::db::WriterStats;
use crate::server::hub::CameraHub;
use crate::server::protocol::CameraStatus;
use crate::telemetry::health::{Health, HealthProbe};
use crate::telemetry::metrics::{get, Counter, MqttStats, ServerMetrics};

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
    /// The box: CPU, load, memory, disk, temperature, throttling.
    pub health: Health,
    /// The MQTT client (absent without `[mqtt]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<MqttSnapshot>,
}

/// The MQTT client at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct MqttSnapshot {
    pub connected: bool,
    pub broker: String,
    pub published: u64,
    pub pending: u64,
    /// Outbox messages given up by its bounds before the broker took them.
    pub dropped: u64,
    /// Event messages missed by falling behind (the counts were re-read each time).
    pub lagged: u64,
    /// Snapshots not published because the database did not have them in time.
    pub snapshots_skipped: u64,
    pub last_error: Option<String>,
}

impl MqttSnapshot {
    fn of(m: &MqttStats, broker: &str, dropped: u64) -> Self {
        Self {
            connected: m.connected.load(Ordering::Relaxed),
            broker: broker.to_string(),
            published: get(&m.published),
            pending: get(&m.pending),
            dropped,
            lagged: get(&m.lagged),
            snapshots_skipped: get(&m.snapshots_skipped),
            last_error: m
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
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
    pub detector: Option<crate::pipeline::detect::DetectorInfo>,
    pub events_started: u64,
    pub stream_encodes: u64,
    /// Viewers of the live video and of the live JPEG frames now.
    pub viewers: ByKind,
    /// Bytes sent to them since start.
    pub bytes_sent: ByKind,
    /// Objects with an event in each of the camera's zones now.
    pub zones: Vec<crate::telemetry::live_counts::ZoneCount>,
    /// Crossings of each of the camera's lines, each way, since start and in the last hour.
    pub lines: Vec<crate::telemetry::live_counts::LineCount>,
    /// Every per-camera counter, under its Prometheus name (the fields above are some of them).
    #[serde(skip)]
    pub counters: Vec<Counter>,
}

/// A figure for each kind of live picture.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ByKind {
    pub video: u64,
    pub jpeg: u64,
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

/// What a snapshot is taken of: the counters the stages keep, shared with them.
pub struct Sources {
    pub cameras: Vec<Arc<CameraHub>>,
    pub started: Instant,
    /// The server's counters (WebSocket clients connected).
    pub server: Arc<ServerMetrics>,
    pub writer: Arc<WriterStats>,
    /// The MQTT client's counters and its broker's URL, when `[mqtt]` is set.
    pub mqtt: Option<(Arc<MqttStats>, String)>,
    /// The database file, whose file system's free space the health reports.
    pub db_path: std::path::PathBuf,
}

impl Sources {
    /// The stats now, with the box's `health` as read; with `prev`, frame rates since then.
    pub fn take(&self, prev: Option<&Sample>, health: Health) -> (StatsSnapshot, Sample) {
        StatsSnapshot::take(self, prev, health)
    }
}

/// How often a detector that is not the configured one (a missing model) is said again in the
/// log, so that it is not lost in a long journal.
const WARN_AGAIN_S: u64 = 300;

/// The stats task: every second a snapshot, sent to `feed` as JSON and kept in `latest`. Runs
/// until aborted.
pub(crate) async fn run(
    sources: Arc<Sources>,
    feed: broadcast::Sender<Utf8Bytes>,
    latest: watch::Sender<Arc<StatsSnapshot>>,
) {
    let (_, mut prev) = sources.take(None, Health::default());
    // /proc and /sys reads and a statvfs: cheap, but file I/O, so on the blocking pool. Each
    // tick takes the reading that has finished and starts the next, so a read that never
    // returns (a hung network file system) leaves the last health and never stalls the stats.
    let read = |mut p: HealthProbe| tokio::task::spawn_blocking(move || (p.read(), p));
    let mut reading = Some(read(HealthProbe::new(&sources.db_path)));
    let mut health = Health::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut seconds = 0u64;
    loop {
        tick.tick().await;
        seconds += 1;
        if let Some(done) = reading.take_if(|r| r.is_finished()) {
            match done.await {
                Ok((h, p)) => {
                    health = h;
                    reading = Some(read(p));
                }
                Err(e) => tracing::error!(error = %e, "reading the box's health failed"),
            }
        }
        if seconds.is_multiple_of(WARN_AGAIN_S) {
            for c in &sources.cameras {
                if let Some(w) = c.detector.as_ref().and_then(|d| d.warning.as_ref()) {
                    tracing::warn!(camera = %c.id, "camera {}: {w}", c.id);
                }
            }
        }
        let (snapshot, now) = sources.take(Some(&prev), health.clone());
        match serde_json::to_string(&snapshot) {
            Ok(json) => {
                let _ = feed.send(Utf8Bytes::from(json));
            }
            Err(e) => tracing::error!(error = %e, "cannot serialise the stats"),
        }
        latest.send_replace(Arc::new(snapshot));
        prev = now;
    }
}

impl StatsSnapshot {
    /// The stats now; with `prev`, frame rates since then.
    fn take(src: &Sources, prev: Option<&Sample>, health: Health) -> (Self, Sample) {
        let now = Sample::now(&src.cameras);
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
                let mut counters: Vec<Counter> = c.stats.counters().into();
                let viewers = ByKind {
                    video: c.video.as_ref().map_or(0, |v| v.viewers() as u64),
                    jpeg: c
                        .frames
                        .iter()
                        .map(|(_, f)| f.receiver_count() as u64)
                        .sum(),
                };
                counters.push(Counter {
                    name: "ocellus_video_viewers",
                    help: "Viewers of the camera's live video now.",
                    value: viewers.video,
                });
                counters.push(Counter {
                    name: "ocellus_jpeg_viewers",
                    help: "Viewers of the camera's live JPEG frames now.",
                    value: viewers.jpeg,
                });
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
                    viewers,
                    bytes_sent: ByKind {
                        video: get(&c.stats.video_bytes_sent),
                        jpeg: get(&c.stats.jpeg_bytes_sent),
                    },
                    zones,
                    lines,
                    counters,
                }
            })
            .collect();
        let w = &src.writer;
        let snapshot = Self {
            kind: "stats",
            uptime_s: src.started.elapsed().as_secs(),
            clients: get(&src.server.clients),
            cameras,
            db: DbSnapshot {
                commits: get(&w.commits),
                rows: get(&w.rows),
                errors: get(&w.errors),
                pending: get(&w.pending),
                dropped: get(&w.dropped),
                deleted_by_retention: get(&w.deleted_by_retention),
            },
            health,
            mqtt: src
                .mqtt
                .as_ref()
                .map(|(m, url)| MqttSnapshot::of(m, url, get(&w.outbox_dropped))),
        };
        (snapshot, now)
    }

    /// systemd's `STATUS=` line: "2/2 cameras connected, 19.8 fps processed, 3 clients, 41
    /// events".
    pub fn status_line(&self) -> String {
        let connected = self
            .cameras
            .iter()
            .filter(|c| c.camera.state == SourceStatus::Connected)
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
