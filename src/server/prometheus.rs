//! `/metrics`: the Prometheus text exposition, rendered from tables: the per-camera counters and
//! the database's from a fresh stats snapshot, the stage timings, the server's counters.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::capture::live::SourceStatus;
use crate::server::state::AppState;
use crate::server::stats::{MqttSnapshot, StatsSnapshot};
use crate::telemetry::health::Health;
use crate::telemetry::metrics::{get as load, Counter};

/// One metric family: its samples as (labels, value).
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(String, f64)>,
}

impl Family {
    /// A counter, or a gauge when its name does not end in `_total` (Prometheus' convention).
    fn of(c: &Counter, samples: Vec<(String, f64)>) -> Self {
        let kind = if c.name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        Self {
            name: c.name,
            kind,
            help: c.help,
            samples,
        }
    }

    fn unlabelled(c: &Counter) -> Self {
        Self::of(c, vec![(String::new(), c.value as f64)])
    }
}

/// Prometheus text exposition.
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&state),
    )
        .into_response()
}

fn render(state: &AppState) -> String {
    let snapshot = state.fresh_stats();
    let mut families = camera_families(&snapshot);
    families.extend(place_families(&snapshot));
    families.extend(health_families(&snapshot.health));
    families.extend(stage_families(state));
    if let Some(m) = &snapshot.mqtt {
        families.extend(mqtt_families(m));
    }
    families.extend(state.metrics().counters().iter().map(Family::unlabelled));
    families.extend(snapshot.db.counters().iter().map(Family::unlabelled));
    families.push(Family {
        name: "ocellus_uptime_seconds",
        kind: "gauge",
        help: "Seconds since start.",
        samples: vec![(String::new(), state.started().elapsed().as_secs_f64())],
    });

    let mut out = String::with_capacity(4096);
    for f in families {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}",
            f.name, f.help, f.name, f.kind
        );
        for (labels, v) in f.samples {
            let _ = writeln!(out, "{}{labels} {v}", f.name);
        }
    }
    out
}

fn camera_label(id: &str) -> String {
    format!("{{camera=\"{id}\"}}")
}

/// Every per-camera counter, each with one sample per camera, and whether each camera is up.
fn camera_families(snapshot: &StatsSnapshot) -> Vec<Family> {
    let mut families = Vec::new();
    if let Some(first) = snapshot.cameras.first() {
        for (i, counter) in first.counters.iter().enumerate() {
            let samples = snapshot
                .cameras
                .iter()
                .map(|c| (camera_label(&c.camera.id), c.counters[i].value as f64))
                .collect();
            families.push(Family::of(counter, samples));
        }
    }
    families.push(Family {
        name: "ocellus_camera_up",
        kind: "gauge",
        help: "1 when the camera's source is connected.",
        samples: snapshot
            .cameras
            .iter()
            .map(|c| {
                let up = c.camera.state == SourceStatus::Connected;
                (camera_label(&c.camera.id), f64::from(u8::from(up)))
            })
            .collect(),
    });
    families
}

/// Objects per zone and crossings per line and direction.
fn place_families(snapshot: &StatsSnapshot) -> [Family; 2] {
    let (mut in_zone, mut crossings) = (Vec::new(), Vec::new());
    for c in &snapshot.cameras {
        let id = &c.camera.id;
        for z in &c.zones {
            in_zone.push((
                format!("{{camera=\"{id}\",zone=\"{}\"}}", z.name),
                z.objects as f64,
            ));
        }
        for l in &c.lines {
            for (direction, n) in [("left", l.left), ("right", l.right)] {
                crossings.push((
                    format!(
                        "{{camera=\"{id}\",line=\"{}\",direction=\"{direction}\"}}",
                        l.name
                    ),
                    n as f64,
                ));
            }
        }
    }
    [
        Family {
            name: "ocellus_zone_objects",
            kind: "gauge",
            help: "Objects with an event in the zone now.",
            samples: in_zone,
        },
        Family {
            name: "ocellus_line_crossings_total",
            kind: "counter",
            help: "Objects with an event that crossed the line, by direction.",
            samples: crossings,
        },
    ]
}

/// Time spent and runs per pipeline stage and camera.
fn stage_families(state: &AppState) -> [Family; 2] {
    let (mut seconds, mut runs) = (Vec::new(), Vec::new());
    for c in state.cameras() {
        for (stage, t) in c.stats.stages() {
            let labels = format!("{{camera=\"{}\",stage=\"{stage}\"}}", c.id);
            seconds.push((labels.clone(), t.total().as_secs_f64()));
            runs.push((labels, load(&t.count) as f64));
        }
    }
    [
        Family {
            name: "ocellus_stage_seconds_total",
            kind: "counter",
            help: "Time spent per pipeline stage.",
            samples: seconds,
        },
        Family {
            name: "ocellus_stage_runs_total",
            kind: "counter",
            help: "Runs per pipeline stage.",
            samples: runs,
        },
    ]
}

/// The box's health: what it has (a figure the box cannot give has no sample).
fn health_families(h: &Health) -> Vec<Family> {
    let mut families = cpu_memory_families(h);
    families.extend(disk_thermal_families(h));
    families
}

/// A gauge family of the box's health.
fn gauge(name: &'static str, help: &'static str, samples: Vec<(String, f64)>) -> Family {
    Family {
        name,
        kind: "gauge",
        help,
        samples,
    }
}

/// One unlabelled sample, or none when the value is unknown.
fn one(v: Option<f64>) -> Vec<(String, f64)> {
    v.map(|v| (String::new(), v)).into_iter().collect()
}

fn bytes(v: Option<u64>) -> Vec<(String, f64)> {
    one(v.map(|v| v as f64))
}

/// The cores, CPU use, load and memory (the box's and the daemon's).
fn cpu_memory_families(h: &Health) -> Vec<Family> {
    vec![
        gauge(
            "ocellus_host_cpus",
            "Cores online.",
            vec![(String::new(), h.cpus as f64)],
        ),
        gauge(
            "ocellus_host_cpu_percent",
            "The box's CPU use over the last second, 100 = every core busy.",
            one(h.cpu_percent),
        ),
        gauge(
            "ocellus_process_cpu_percent",
            "The daemon's CPU use over the last second, 100 = one core.",
            one(h.process_cpu_percent),
        ),
        gauge(
            "ocellus_host_load",
            "Load average, by period.",
            h.load
                .map(|l| {
                    ["1m", "5m", "15m"]
                        .iter()
                        .zip(l)
                        .map(|(p, v)| (format!("{{period=\"{p}\"}}"), v))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        gauge(
            "ocellus_host_memory_total_bytes",
            "The box's memory.",
            bytes(h.memory_total_bytes),
        ),
        gauge(
            "ocellus_host_memory_available_bytes",
            "Memory available without swapping (MemAvailable).",
            bytes(h.memory_available_bytes),
        ),
        gauge(
            "ocellus_process_resident_bytes",
            "The daemon's resident memory.",
            bytes(h.process_rss_bytes),
        ),
    ]
}

/// The database's file system, temperatures and a Pi's throttling flags.
fn disk_thermal_families(h: &Health) -> Vec<Family> {
    vec![
        gauge(
            "ocellus_db_disk_free_bytes",
            "Free space on the database's file system.",
            bytes(h.disk_free_bytes),
        ),
        gauge(
            "ocellus_db_disk_total_bytes",
            "Size of the database's file system.",
            bytes(h.disk_total_bytes),
        ),
        gauge(
            "ocellus_host_temperature_celsius",
            "Temperature per thermal zone.",
            h.thermal
                .iter()
                .map(|t| (format!("{{zone=\"{}\"}}", t.zone), t.celsius))
                .collect(),
        ),
        gauge(
            "ocellus_host_throttled",
            "A Raspberry Pi's firmware throttling flags (1 = set), now and since boot.",
            h.throttled
                .map(|t| {
                    t.flags()
                        .iter()
                        .map(|(f, on)| (format!("{{flag=\"{f}\"}}"), f64::from(u8::from(*on))))
                        .collect()
                })
                .unwrap_or_default(),
        ),
    ]
}

/// The MQTT client's state.
fn mqtt_families(m: &MqttSnapshot) -> Vec<Family> {
    [
        (
            "ocellus_mqtt_connected",
            "gauge",
            "1 while connected to the MQTT broker.",
            u64::from(m.connected),
        ),
        (
            "ocellus_mqtt_published_total",
            "counter",
            "Messages the MQTT broker acknowledged.",
            m.published,
        ),
        (
            "ocellus_mqtt_pending_messages",
            "gauge",
            "Messages in the MQTT outbox, waiting for the broker.",
            m.pending,
        ),
        (
            "ocellus_mqtt_dropped_total",
            "counter",
            "MQTT outbox messages given up by its bounds (count, age).",
            m.dropped,
        ),
        (
            "ocellus_mqtt_lagged_total",
            "counter",
            "Event messages the MQTT client missed by falling behind; the counts were re-read from the database.",
            m.lagged,
        ),
        (
            "ocellus_mqtt_snapshots_skipped_total",
            "counter",
            "Snapshots not published because the database did not have them in time.",
            m.snapshots_skipped,
        ),
    ]
    .into_iter()
    .map(|(name, kind, help, v)| Family {
        name,
        kind,
        help,
        samples: vec![(String::new(), v as f64)],
    })
    .collect()
}
