//! What the HTTP and WebSocket handlers share: the server state (cameras, channels, readers,
//! counters) and the error every handler answers with.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::{broadcast, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::db::{self, ReadPool, WriterStats};
use crate::errors::DbError;
use crate::hub::CameraHub;
use crate::metrics::{get, Counter};
use crate::models::EventQuery;
use crate::protocol::CameraInfo;
use crate::stats::{Sample, Sources, StatsSnapshot};

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

/// Everything the handlers share.
pub struct AppState {
    pub cfg: ServerConfig,
    pub cameras: Vec<Arc<CameraHub>>,
    pub events: broadcast::Sender<Utf8Bytes>,
    pub stats: broadcast::Sender<Utf8Bytes>,
    pub readers: Arc<ReadPool>,
    pub writer: Arc<WriterStats>,
    pub metrics: ServerMetrics,
    pub client_slots: Arc<Semaphore>,
    pub started: Instant,
    /// The latest stats, refreshed every second by the stats task.
    pub latest_stats: std::sync::Mutex<Option<Arc<StatsSnapshot>>>,
    /// Fires when the server should close its connections (after the pipelines have stopped).
    pub shutdown: CancellationToken,
    /// The MQTT client's state and its broker's URL, when `[mqtt]` is set.
    pub mqtt: Option<(Arc<crate::mqtt::MqttStats>, String)>,
}

impl AppState {
    /// The stats task's latest snapshot; a fresh one (without rates) before its first.
    pub fn stats(&self) -> Arc<StatsSnapshot> {
        let latest = self
            .latest_stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        latest.unwrap_or_else(|| Arc::new(self.take_stats(None).0))
    }

    /// A snapshot of the stats now; with `prev`, frame rates since then.
    pub fn take_stats(&self, prev: Option<&Sample>) -> (StatsSnapshot, Sample) {
        let sources = Sources {
            cameras: &self.cameras,
            started: self.started,
            clients: get(&self.metrics.clients),
            writer: &self.writer,
            mqtt: self.mqtt.as_ref().map(|(m, url)| (&**m, url.as_str())),
        };
        StatsSnapshot::take(&sources, prev)
    }

    /// Runs an event query with the configured cap; shared by REST and WebSocket. Returns the
    /// events and the cursor of the next page.
    pub async fn query_events(
        &self,
        q: EventQuery,
    ) -> Result<(Vec<crate::models::Event>, Option<i64>), DbError> {
        let max = self.cfg.query_max_limit;
        let limit = q.limit.unwrap_or(100).min(max) as usize;
        let events = self
            .readers
            .run(move |conn| db::query_events(conn, &q, max))
            .await?;
        let next = (events.len() == limit && limit > 0)
            .then(|| events.last().map(|e| e.id))
            .flatten();
        Ok((events, next))
    }

    pub fn camera(&self, id: &str) -> Option<&Arc<CameraHub>> {
        self.cameras.iter().find(|c| c.id == id)
    }

    pub fn camera_infos(&self) -> Vec<CameraInfo> {
        self.cameras.iter().map(|c| c.state.info()).collect()
    }
}

/// An API error: a status and a JSON body `{"error": code, "message": ...}`.
pub struct ApiError(pub StatusCode, pub &'static str, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(serde_json::json!({ "error": self.1, "message": self.2 })),
        )
            .into_response()
    }
}

impl From<crate::errors::DbError> for ApiError {
    fn from(e: crate::errors::DbError) -> Self {
        tracing::error!(error = %e, "database query failed");
        ApiError(StatusCode::SERVICE_UNAVAILABLE, "db_error", e.to_string())
    }
}

/// A header map from name/value pairs, for the handlers' unit tests.
#[cfg(test)]
pub(crate) fn test_headers(pairs: &[(&'static str, &str)]) -> axum::http::HeaderMap {
    let mut h = axum::http::HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, axum::http::HeaderValue::from_str(v).unwrap());
    }
    h
}
