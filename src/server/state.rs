//! What the HTTP and WebSocket handlers share: the server state (cameras, channels, readers,
//! counters) and the error every handler answers with.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::{broadcast, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::db::{self, DbError, ReadPool, WriterStats};
use crate::pipeline::values::EventQuery;
use crate::server::hub::CameraHub;
use crate::server::protocol::CameraInfo;
use crate::server::stats::{Sources, StatsSnapshot};
use crate::telemetry::metrics::ServerMetrics;

/// Everything the handlers share.
pub struct AppState {
    pub cfg: ServerConfig,
    /// Event messages as JSON, from every camera's bus, for the `events` topic.
    pub event_feed: broadcast::Sender<Utf8Bytes>,
    /// The stats task's snapshots as JSON, for the `stats` topic.
    pub stats_feed: broadcast::Sender<Utf8Bytes>,
    /// Closed count buckets as JSON, from every camera's bus, for the `counts` topic.
    pub counts_feed: broadcast::Sender<Utf8Bytes>,
    /// The stats task's latest snapshot (a fresh one without rates before its first tick).
    pub latest_stats: watch::Receiver<Arc<StatsSnapshot>>,
    /// The cameras, the server's and the writer's counters, the start time: what snapshots
    /// are taken of (`/metrics` takes a fresh one).
    pub sources: Arc<Sources>,
    pub readers: Arc<ReadPool>,
    pub client_slots: Arc<Semaphore>,
    /// Fires when the server should close its connections (after the pipelines have stopped).
    pub shutdown: CancellationToken,
    /// The WebSocket clients' tasks: shutdown waits for them to send their close frames, which
    /// a task still running when the runtime ends never does.
    pub clients: TaskTracker,
    /// Where clips are cut from, when a camera records.
    pub(crate) clips: Option<Arc<crate::record::ClipSettings>>,
}

impl AppState {
    /// Sets the event's `clip` when its camera records.
    pub(crate) fn link_clip(&self, e: &mut crate::pipeline::values::Event) {
        if self
            .clips
            .as_ref()
            .and_then(|c| c.cameras.get(&e.camera))
            .is_some_and(|c| c.trigger.records())
        {
            e.clip = Some(crate::record::clip_path(e.id));
        }
    }

    /// The stats task's latest snapshot.
    pub fn latest_stats(&self) -> Arc<StatsSnapshot> {
        self.latest_stats.borrow().clone()
    }

    /// A snapshot of the stats now, without rates, with the stats task's last health reading.
    pub fn fresh_stats(&self) -> StatsSnapshot {
        let health = self.latest_stats.borrow().health.clone();
        self.sources.take(None, health).0
    }

    /// The database writer's counters.
    pub fn writer(&self) -> &WriterStats {
        &self.sources.writer
    }

    pub fn cameras(&self) -> &[Arc<CameraHub>] {
        &self.sources.cameras
    }

    /// The server's counters.
    pub fn metrics(&self) -> &ServerMetrics {
        &self.sources.server
    }

    pub fn started(&self) -> Instant {
        self.sources.started
    }

    /// Runs an event query with the configured cap; shared by REST and WebSocket. Returns the
    /// events and the cursor of the next page.
    pub async fn query_events(
        &self,
        q: EventQuery,
    ) -> Result<(Vec<crate::pipeline::values::Event>, Option<i64>), DbError> {
        let max = self.cfg.query_max_limit;
        let limit = q.limit.unwrap_or(100).min(max) as usize;
        let mut events = self
            .readers
            .run(move |conn| db::query_events(conn, &q, max))
            .await?;
        events.iter_mut().for_each(|e| self.link_clip(e));
        let next = (events.len() == limit && limit > 0)
            .then(|| events.last().map(|e| e.id))
            .flatten();
        Ok((events, next))
    }

    /// The cameras whose counts can be asked for: the configured ones, in their order, then
    /// those with stored counts only (history outlives a camera).
    pub async fn count_cameras(&self) -> Result<Vec<String>, DbError> {
        let mut cameras: Vec<String> = self.cameras().iter().map(|c| c.id.clone()).collect();
        for c in self.readers.run(db::count_cameras).await? {
            if !cameras.contains(&c) {
                cameras.push(c);
            }
        }
        Ok(cameras)
    }

    /// Runs a counts query given as its parameters (REST and WebSocket alike): a
    /// [`CountsError::Param`] names the parameter that is wrong.
    pub async fn query_counts(
        &self,
        params: Vec<(String, String)>,
    ) -> Result<crate::counts::CountsAnswer, CountsError> {
        let cameras = self.count_cameras().await.map_err(CountsError::Db)?;
        let cameras: Vec<&str> = cameras.iter().map(String::as_str).collect();
        let q = crate::counts::parse_query(
            params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &cameras,
            crate::base::clock::now_ms(),
        )
        .map_err(CountsError::Param)?;
        let series = self
            .readers
            .run({
                let q = q.clone();
                move |conn| db::query_counts(conn, &q)
            })
            .await
            .map_err(CountsError::Db)?;
        Ok(crate::counts::CountsAnswer::new(&q, series))
    }

    pub fn camera(&self, id: &str) -> Option<&Arc<CameraHub>> {
        self.cameras().iter().find(|c| c.id == id)
    }

    pub fn camera_infos(&self) -> Vec<CameraInfo> {
        self.cameras().iter().map(|c| c.info()).collect()
    }
}

/// Why a counts query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum CountsError {
    #[error(transparent)]
    Param(crate::counts::ParamError),
    #[error(transparent)]
    Db(DbError),
}

impl From<CountsError> for ApiError {
    fn from(e: CountsError) -> Self {
        match e {
            CountsError::Param(p) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", p.to_string())
            }
            CountsError::Db(e) => e.into(),
        }
    }
}

/// An API error: a status and a JSON body `{"error": code, "message": ...}`.
pub(crate) struct ApiError {
    pub status: StatusCode,
    /// A stable, machine-readable code.
    pub code: &'static str,
    /// What a person reads.
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.code, "message": self.message })),
        )
            .into_response()
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        tracing::error!(error = %e, "database query failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "db_error", e.to_string())
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
