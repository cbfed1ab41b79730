//! Counters shared between the pipeline threads and their readers (summaries, /metrics, stats).
//!
//! Plain relaxed atomics: each counter is written by one thread and read as an approximate
//! snapshot, so no ordering between counters is needed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counters of the server side.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    pub clients: AtomicU64,
    pub clients_total: AtomicU64,
    pub clients_refused: AtomicU64,
    /// TCP connections closed at accept because too many HTTP connections were open.
    pub connections_refused: AtomicU64,
    pub messages_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Live frames clients missed because they fell behind.
    pub frames_dropped: AtomicU64,
    /// Other messages (events, detections, stats) clients missed.
    pub messages_dropped: AtomicU64,
    pub clients_dropped_slow: AtomicU64,
    pub client_errors: AtomicU64,
}

impl ServerMetrics {
    /// Every counter, as `/metrics` exports it; the destructuring names every field, so a new
    /// one does not compile until it is listed here.
    pub fn counters(&self) -> [Counter; 10] {
        let ServerMetrics {
            clients,
            clients_total,
            clients_refused,
            connections_refused,
            messages_sent,
            bytes_sent,
            frames_dropped,
            messages_dropped,
            clients_dropped_slow,
            client_errors,
        } = self;
        let c = |name, help, v: &AtomicU64| Counter {
            name,
            help,
            value: get(v),
        };
        [
            c(
                "ocellus_ws_clients",
                "WebSocket clients connected.",
                clients,
            ),
            c(
                "ocellus_ws_clients_total",
                "WebSocket clients accepted.",
                clients_total,
            ),
            c(
                "ocellus_ws_clients_refused_total",
                "WebSocket clients refused (limit).",
                clients_refused,
            ),
            c(
                "ocellus_ws_clients_dropped_slow_total",
                "Clients dropped because their socket stayed blocked.",
                clients_dropped_slow,
            ),
            c(
                "ocellus_ws_messages_sent_total",
                "Messages sent to clients.",
                messages_sent,
            ),
            c(
                "ocellus_ws_bytes_sent_total",
                "Payload bytes sent to clients.",
                bytes_sent,
            ),
            c(
                "ocellus_ws_frames_dropped_total",
                "Live frames clients missed by falling behind.",
                frames_dropped,
            ),
            c(
                "ocellus_ws_messages_dropped_total",
                "Other messages clients missed by falling behind.",
                messages_dropped,
            ),
            c(
                "ocellus_http_connections_refused_total",
                "TCP connections closed at accept because too many HTTP connections were open.",
                connections_refused,
            ),
            c(
                "ocellus_ws_client_errors_total",
                "Malformed or refused client messages.",
                client_errors,
            ),
        ]
    }
}

/// The MQTT client's counters (written by its task), for `/api/stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct MqttStats {
    pub connected: AtomicBool,
    /// Messages the broker acknowledged (QoS 1) or that went out (QoS 0).
    pub published: AtomicU64,
    /// Messages in the outbox, waiting for the broker.
    pub pending: AtomicU64,
    /// Event messages the task missed by falling behind the event bus; each time, the counts
    /// it publishes were read again from the database.
    pub lagged: AtomicU64,
    /// Snapshots not published because the database did not have them in time (commits
    /// failing, a full disk).
    pub snapshots_skipped: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// Per-camera pipeline counters.
#[derive(Debug, Default)]
pub struct CameraStats {
    /// Frames read from the source.
    pub captured: AtomicU64,
    /// Frames that went through motion/detection/tracking.
    pub processed: AtomicU64,
    /// Frames dropped because the detector was busy (live sources only).
    pub skipped: AtomicU64,
    /// Frames the object detector ran on.
    pub detector_runs: AtomicU64,
    /// Network passes on crops (`detector.regions`); a frame looked at whole counts none.
    pub detector_crops: AtomicU64,
    /// Detector failures on single frames (the frame is skipped, the pipeline goes on).
    pub detector_errors: AtomicU64,
    pub events_started: AtomicU64,
    pub events_ended: AtomicU64,
    /// Snapshot JPEG encodes.
    pub snapshot_encodes: AtomicU64,
    /// Live-stream JPEG encodes (one per frame and stream width being watched).
    pub stream_encodes: AtomicU64,
    /// Frames not encoded for the live stream because the encoder was still busy.
    pub stream_skipped: AtomicU64,
    /// Bytes of live video (fragmented MP4) and of live JPEG frames handed to viewers' sockets.
    pub video_bytes_sent: AtomicU64,
    pub jpeg_bytes_sent: AtomicU64,
    pub decode: StageTime,
    pub motion: StageTime,
    pub detect: StageTime,
    pub track: StageTime,
    pub encode: StageTime,
    /// Objects in each zone and crossings per line (empty without zones and lines).
    pub zones: std::sync::Mutex<crate::telemetry::live_counts::LiveCounts>,
}

/// One exported counter.
#[derive(Clone, Debug)]
pub struct Counter {
    /// The Prometheus name.
    pub name: &'static str,
    pub help: &'static str,
    pub value: u64,
}

impl CameraStats {
    /// Every counter, as `/metrics` exports it. The destructuring names every field, so a new
    /// counter does not compile until it is listed here.
    /// The timed stages, by name.
    pub fn stages(&self) -> [(&'static str, &StageTime); 5] {
        [
            ("decode", &self.decode),
            ("motion", &self.motion),
            ("detect", &self.detect),
            ("track", &self.track),
            ("encode", &self.encode),
        ]
    }

    pub fn counters(&self) -> [Counter; 13] {
        let CameraStats {
            captured,
            processed,
            skipped,
            detector_runs,
            detector_crops,
            detector_errors,
            events_started,
            events_ended,
            snapshot_encodes,
            stream_encodes,
            stream_skipped,
            video_bytes_sent,
            jpeg_bytes_sent,
            decode: _,
            motion: _,
            detect: _,
            track: _,
            encode: _,
            // Labelled by zone and line: exported as their own families.
            zones: _,
        } = self;
        let c = |name, help, v: &AtomicU64| Counter {
            name,
            help,
            value: get(v),
        };
        [
            c(
                "ocellus_frames_captured_total",
                "Frames read from the source.",
                captured,
            ),
            c(
                "ocellus_frames_processed_total",
                "Frames through motion, detection and tracking.",
                processed,
            ),
            c(
                "ocellus_frames_skipped_total",
                "Frames dropped because detection was busy (newest frame wins).",
                skipped,
            ),
            c(
                "ocellus_detector_runs_total",
                "Frames the object detector ran on.",
                detector_runs,
            ),
            c(
                "ocellus_detector_crops_total",
                "Network passes on crops around motion and tracks (detector.regions).",
                detector_crops,
            ),
            c(
                "ocellus_detector_errors_total",
                "Frames the detector failed on (skipped; the pipeline goes on).",
                detector_errors,
            ),
            c(
                "ocellus_events_started_total",
                "Events started.",
                events_started,
            ),
            c("ocellus_events_ended_total", "Events ended.", events_ended),
            c(
                "ocellus_snapshot_encodes_total",
                "Event snapshot JPEG encodes.",
                snapshot_encodes,
            ),
            c(
                "ocellus_jpeg_encodes_total",
                "Live-stream JPEG encodes (one per frame and watched width).",
                stream_encodes,
            ),
            c(
                "ocellus_stream_frames_skipped_total",
                "Frames not encoded because the encoder was busy.",
                stream_skipped,
            ),
            c(
                "ocellus_video_bytes_sent_total",
                "Live video (fragmented MP4) bytes sent to viewers.",
                video_bytes_sent,
            ),
            c(
                "ocellus_jpeg_bytes_sent_total",
                "Live JPEG frame bytes sent to viewers.",
                jpeg_bytes_sent,
            ),
        ]
    }
}

/// Total time spent in one stage and how often it ran.
#[derive(Debug, Default)]
pub struct StageTime {
    pub total_ns: AtomicU64,
    pub count: AtomicU64,
}

impl StageTime {
    pub fn add(&self, d: Duration) {
        self.total_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds the time since `start` and returns now, for timing consecutive stages.
    pub fn since(&self, start: Instant) -> Instant {
        let now = Instant::now();
        self.add(now - start);
        now
    }

    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.total_ns.load(Ordering::Relaxed))
    }

    /// Mean time per run, in milliseconds (0 when it never ran).
    pub fn mean_ms(&self) -> f64 {
        let n = self.count.load(Ordering::Relaxed);
        if n == 0 {
            0.0
        } else {
            self.total_ns.load(Ordering::Relaxed) as f64 / n as f64 / 1e6
        }
    }
}

pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
