//! The HTTP side of the daemon on one port: REST API, `/healthz`, `/metrics`, the `/ws` upgrade
//! (with token, Origin and client-count checks), and the shared state every handler reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::db;
use crate::hub::CameraHub;
use crate::metrics::get as load;
use crate::models::EventQuery;
use crate::protocol::CameraInfo;
use crate::state::{ApiError, AppState};
use crate::stats::StatsSnapshot;

pub fn router(state: Arc<AppState>) -> Router {
    let guarded = Router::new()
        .merge(crate::ws::routes())
        .route("/api/events", get(list_events))
        .route("/api/events/{id}", get(get_event))
        .route("/api/events/{id}/snapshot.jpg", get(get_snapshot))
        .route("/api/cameras", get(cameras))
        .route("/api/stats", get(stats))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(guarded)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(crate::dashboard::routes())
        .with_state(state)
}

/// HTTP connections (not yet upgraded to WebSocket) served at once; more are closed on accept.
/// WebSocket clients count against `server.max_clients` instead, once upgraded.
pub const MAX_HTTP_CONNECTIONS: usize = 256;
/// A client must send its whole request head within this time (slow-loris and half-open
/// connections are closed).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `state.shutdown` fires, then lets requests in flight finish (at most 5 s).
///
/// axum's own `serve` sets no timer on hyper, so a connection that never finishes its request
/// head would be held forever; this loop bounds both how many connections wait and how long.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<AppState>) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let app = router(state.clone());
    let slots = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
    let conns = tokio_util::task::TaskTracker::new();
    let shutdown = state.shutdown.clone();
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, or the peer gave up before accept: not fatal.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            state
                .metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%addr, "too many open HTTP connections; closed at once");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc =
            app.clone()
                .map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(addr));
                    req
                });
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%addr, error = %e, "connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
    }
    conns.close();
    if tokio::time::timeout(Duration::from_secs(5), conns.wait())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still open after 5 s; closing them");
    }
    Ok(())
}

/// Compares without stopping at the first difference, so timing does not reveal the token.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token from `Authorization: Bearer ...` or `?token=...` (browsers cannot set headers on
/// WebSockets).
fn presented_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(t) = v.strip_prefix("Bearer ") {
            return Some(t.trim().to_string());
        }
    }
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

async fn require_token(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(want) = &state.cfg.token {
        let got = presented_token(req.headers(), req.uri().query());
        if !got.is_some_and(|g| same_secret(g.as_bytes(), want.expose().as_bytes())) {
            return ApiError(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a token is required: Authorization: Bearer TOKEN, or ?token=TOKEN".into(),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// One page of events and the cursor for the next.
#[derive(Serialize)]
struct EventPage {
    events: Vec<crate::models::Event>,
    next_before_id: Option<i64>,
}

async fn list_events(
    State(state): State<Arc<AppState>>,
    q: Result<Query<EventQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let (events, next_before_id) = state.query_events(q).await?;
    Ok(Json(EventPage {
        events,
        next_before_id,
    })
    .into_response())
}

async fn get_event(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    match state.readers.run(move |c| db::get_event(c, id)).await? {
        Some(e) => Ok(Json(e).into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no event {id}"),
        )),
    }
}

async fn get_snapshot(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    match state.readers.run(move |c| db::get_snapshot(c, id)).await? {
        Some(jpeg) => Ok((
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "max-age=60"),
            ],
            jpeg,
        )
            .into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no snapshot for event {id}"),
        )),
    }
}

async fn cameras(State(state): State<Arc<AppState>>) -> Json<Vec<CameraInfo>> {
    Json(state.camera_infos())
}

async fn stats(State(state): State<Arc<AppState>>) -> Json<StatsSnapshot> {
    Json(StatsSnapshot::clone(&state.stats()))
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let cameras: BTreeMap<String, String> = state
        .cameras
        .iter()
        .map(|c| (c.id.clone(), c.state.status().as_str().to_string()))
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
    (
        code,
        Json(serde_json::json!({
            "status": status,
            "uptime_s": state.started.elapsed().as_secs(),
            "cameras": cameras,
            "db_errors": load(&state.writer.errors),
            "db_pending": load(&state.writer.pending),
        })),
    )
        .into_response()
}

/// Prometheus text exposition.
async fn metrics(
    State(state): State<Arc<AppState>>,
    ConnectInfo(_addr): ConnectInfo<SocketAddr>,
) -> Response {
    let mut out = String::with_capacity(4096);
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let per_cam = |f: &dyn Fn(&CameraHub) -> f64| -> Vec<(String, f64)> {
        state
            .cameras
            .iter()
            .map(|c| (format!("{{camera=\"{}\"}}", c.id), f(c)))
            .collect()
    };
    // The counters, from one fresh snapshot: every per-camera counter, then the database's.
    let (snapshot, _) = StatsSnapshot::take(&state, None);
    if let Some(first) = snapshot.cameras.first() {
        for (i, counter) in first.counters.iter().enumerate() {
            let samples = snapshot
                .cameras
                .iter()
                .map(|c| {
                    (
                        format!("{{camera=\"{}\"}}", c.id),
                        c.counters[i].value as f64,
                    )
                })
                .collect();
            family(counter.name, "counter", counter.help, samples);
        }
    }
    for counter in snapshot.db.counters() {
        let kind = if counter.name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        family(
            counter.name,
            kind,
            counter.help,
            vec![(String::new(), counter.value as f64)],
        );
    }
    family(
        "ocellus_camera_up",
        "gauge",
        "1 when the camera's source is connected.",
        per_cam(&|c| (c.state.status() == crate::live::SourceStatus::Connected) as u8 as f64),
    );
    let mut stages = Vec::new();
    let mut runs = Vec::new();
    for c in &state.cameras {
        for (stage, t) in [
            ("decode", &c.stats.decode),
            ("motion", &c.stats.motion),
            ("detect", &c.stats.detect),
            ("track", &c.stats.track),
            ("encode", &c.stats.encode),
        ] {
            let labels = format!("{{camera=\"{}\",stage=\"{stage}\"}}", c.id);
            stages.push((labels.clone(), t.total().as_secs_f64()));
            runs.push((labels, load(&t.count) as f64));
        }
    }
    family(
        "ocellus_stage_seconds_total",
        "counter",
        "Time spent per pipeline stage.",
        stages,
    );
    family(
        "ocellus_stage_runs_total",
        "counter",
        "Runs per pipeline stage.",
        runs,
    );
    let m = &state.metrics;
    let one = |v: &AtomicU64| vec![(String::new(), load(v) as f64)];
    family(
        "ocellus_ws_clients",
        "gauge",
        "WebSocket clients connected.",
        one(&m.clients),
    );
    family(
        "ocellus_ws_clients_total",
        "counter",
        "WebSocket clients accepted.",
        one(&m.clients_total),
    );
    family(
        "ocellus_ws_clients_refused_total",
        "counter",
        "WebSocket clients refused (limit).",
        one(&m.clients_refused),
    );
    family(
        "ocellus_ws_clients_dropped_slow_total",
        "counter",
        "Clients dropped because their socket stayed blocked.",
        one(&m.clients_dropped_slow),
    );
    family(
        "ocellus_ws_messages_sent_total",
        "counter",
        "Messages sent to clients.",
        one(&m.messages_sent),
    );
    family(
        "ocellus_ws_bytes_sent_total",
        "counter",
        "Payload bytes sent to clients.",
        one(&m.bytes_sent),
    );
    family(
        "ocellus_ws_frames_dropped_total",
        "counter",
        "Live frames clients missed by falling behind.",
        one(&m.frames_dropped),
    );
    family(
        "ocellus_ws_messages_dropped_total",
        "counter",
        "Other messages clients missed by falling behind.",
        one(&m.messages_dropped),
    );
    family(
        "ocellus_http_connections_refused_total",
        "counter",
        "TCP connections closed at accept because too many HTTP connections were open.",
        one(&m.connections_refused),
    );
    family(
        "ocellus_ws_client_errors_total",
        "counter",
        "Malformed or refused client messages.",
        one(&m.client_errors),
    );
    family(
        "ocellus_uptime_seconds",
        "gauge",
        "Seconds since start.",
        vec![(String::new(), state.started.elapsed().as_secs_f64())],
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::test_headers as headers;

    #[test]
    fn token_comes_from_bearer_header_or_query() {
        assert_eq!(
            presented_token(&headers(&[("authorization", "Bearer abc")]), None).as_deref(),
            Some("abc")
        );
        assert_eq!(
            presented_token(&HeaderMap::new(), Some("x=1&token=a%2Bb")).as_deref(),
            Some("a+b")
        );
        assert_eq!(presented_token(&HeaderMap::new(), Some("x=1")), None);
        assert!(same_secret(b"secret-token", b"secret-token"));
        assert!(!same_secret(b"secret-token", b"secret-tokex"));
        assert!(!same_secret(b"short", b"longer"));
    }
}
