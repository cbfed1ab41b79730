//! The REST API: events (paged, filtered), one event, its snapshot, counts over time, the
//! cameras, the latest stats; and `/healthz`. Every handler reads the shared state; queries go through the read
//! pool, never the writer.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::db;
use crate::pipeline::values::EventQuery;
use crate::server::extract::{ApiPath, ApiQuery};
use crate::server::protocol::CameraInfo;
use crate::server::state::{ApiError, AppState};
use crate::server::stats::StatsSnapshot;
use crate::telemetry::metrics::get as load;

/// The `/api` routes (behind the token, when one is set).
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/events", get(list_events))
        .route("/api/events/{id}", get(get_event))
        .route("/api/events/{id}/snapshot.jpg", get(get_snapshot))
        .route("/api/counts", get(counts))
        .route("/api/counts/cameras", get(count_cameras))
        .route("/api/cameras", get(cameras))
        .route("/api/stats", get(stats))
}

/// One page of events and the cursor for the next.
#[derive(Serialize)]
struct EventPage {
    events: Vec<crate::pipeline::values::Event>,
    next_before_id: Option<i64>,
}

async fn list_events(
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Response, ApiError> {
    let (events, next_before_id) = state.query_events(q).await?;
    Ok(Json(EventPage {
        events,
        next_before_id,
    })
    .into_response())
}

/// The cameras whose counts can be asked for: the configured ones and those with stored counts.
async fn count_cameras(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    Ok(Json(state.count_cameras().await?).into_response())
}

/// Counts over time (docs/counts.md): JSON series, or CSV with `format=csv`.
async fn counts(
    State(state): State<Arc<AppState>>,
    ApiQuery(params): ApiQuery<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let csv = params.iter().any(|(k, v)| k == "format" && v == "csv");
    let answer = state.query_counts(params).await?;
    if csv {
        let body = format!(
            "{}{}",
            crate::counts::CSV_HEADER,
            crate::counts::csv_rows(&answer.camera, &answer.series)
        );
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"ocellus-counts.csv\"",
                ),
            ],
            body,
        )
            .into_response());
    }
    Ok(Json(answer).into_response())
}

async fn get_event(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Response, ApiError> {
    match state.readers.run(move |c| db::get_event(c, id)).await? {
        Some(mut e) => {
            state.link_clip(&mut e);
            Ok(Json(e).into_response())
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no event {id}"),
        )),
    }
}

async fn get_snapshot(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Response, ApiError> {
    let jpeg = state.readers.run(move |c| db::get_snapshot(c, id)).await?;
    jpeg_or_404(jpeg, || format!("no snapshot for event {id}"))
}

/// A stored JPEG as a response (cached for a minute: a snapshot does not change under its
/// URL), or 404 saying what is missing.
pub(crate) fn jpeg_or_404(
    jpeg: Option<Vec<u8>>,
    missing: impl FnOnce() -> String,
) -> Result<Response, ApiError> {
    match jpeg {
        Some(jpeg) => Ok((
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "max-age=60"),
            ],
            jpeg,
        )
            .into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", missing())),
    }
}

async fn cameras(State(state): State<Arc<AppState>>) -> Json<Vec<CameraInfo>> {
    Json(state.camera_infos())
}

async fn stats(State(state): State<Arc<AppState>>) -> Json<StatsSnapshot> {
    Json(StatsSnapshot::clone(&state.latest_stats()))
}

/// Liveness for probes and load balancers: 200 while serving, 503 once stopping.
pub(crate) async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let cameras: BTreeMap<String, crate::server::protocol::SourceStatus> = state
        .cameras()
        .iter()
        .map(|c| (c.id.clone(), c.state.status()))
        .collect();
    let status = if state.shutdown.is_cancelled() {
        "stopping"
    } else {
        "ok"
    };
    let code = if state.shutdown.is_cancelled() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    // What is running but not as configured (a missing model: HOG instead of the DNN).
    let warnings: Vec<String> = state
        .cameras()
        .iter()
        .filter_map(|c| {
            let w = c.detector.as_ref()?.warning.as_ref()?;
            Some(format!("camera {}: {w}", c.id))
        })
        .collect();
    (
        code,
        Json(serde_json::json!({
            "status": status,
            "uptime_s": state.started().elapsed().as_secs(),
            "cameras": cameras,
            "db_errors": load(&state.writer().errors),
            "db_pending": load(&state.writer().pending),
            "warnings": warnings,
        })),
    )
        .into_response()
}
