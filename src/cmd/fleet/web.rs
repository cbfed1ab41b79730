//! The fleet view's HTTP side: the fleet dashboard, its REST API (devices, the event feed with
//! filters, snapshots, counters) and `/ws`, which tells each dashboard what was just stored.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ingest::IngestStats;
use crate::db::fleet::FleetEventQuery;
use crate::db::{self, ReadPool};
use crate::server::extract::{ApiPath, ApiQuery};
use crate::server::state::ApiError;
use crate::server::{require_token, TokenGuard};

/// What the fleet's handlers share.
pub(crate) struct FleetState {
    pub readers: Arc<ReadPool>,
    /// One JSON line per stored message: `{"type": "event" | "device" | "place", ...}`.
    pub feed: broadcast::Sender<Utf8Bytes>,
    pub ingest: Arc<IngestStats>,
    pub broker: String,
    pub started: Instant,
    pub shutdown: CancellationToken,
    /// The dashboards' sockets: shutdown waits for them to send their close frames.
    pub clients: TaskTracker,
}

pub(crate) fn router(state: Arc<FleetState>, token: TokenGuard) -> Router {
    let guarded = Router::new()
        .route("/api/devices", get(devices))
        .route("/api/events", get(events))
        .route("/api/events/{device}/{id}/snapshot.jpg", get(snapshot))
        .route("/api/places", get(places))
        .route("/api/counts", get(counts))
        .route("/api/fleet", get(fleet))
        .route("/ws", get(ws))
        .route_layer(middleware::from_fn_with_state(token, require_token));
    Router::new()
        .merge(guarded)
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .merge(crate::server::dashboard::fleet_routes())
        .with_state(state)
}

async fn devices(State(s): State<Arc<FleetState>>) -> Result<Response, ApiError> {
    Ok(Json(s.readers.run(db::fleet::devices).await?).into_response())
}

async fn events(
    State(s): State<Arc<FleetState>>,
    ApiQuery(q): ApiQuery<FleetEventQuery>,
) -> Result<Response, ApiError> {
    let page = s.readers.run(move |c| db::fleet::events(c, &q)).await?;
    let next_before_ms = page.last().and_then(|e| e.event["start_ms"].as_i64());
    Ok(Json(serde_json::json!({"events": page, "next_before_ms": next_before_ms})).into_response())
}

async fn snapshot(
    State(s): State<Arc<FleetState>>,
    ApiPath((device, id)): ApiPath<(String, i64)>,
) -> Result<Response, ApiError> {
    let d = device.clone();
    let jpeg = s
        .readers
        .run(move |c| db::fleet::snapshot(c, &d, id))
        .await?;
    crate::server::rest::jpeg_or_404(jpeg, || format!("no snapshot for event {id} of {device}"))
}

async fn places(State(s): State<Arc<FleetState>>) -> Result<Response, ApiError> {
    Ok(Json(s.readers.run(db::fleet::places).await?).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelCountsRange {
    from_ms: Option<i64>,
    to_ms: Option<i64>,
}

/// Events per device, camera and label over a range (default: the last 24 hours).
async fn counts(
    State(s): State<Arc<FleetState>>,
    ApiQuery(q): ApiQuery<LabelCountsRange>,
) -> Result<Response, ApiError> {
    let to = q.to_ms.unwrap_or_else(|| db::now_ms() + 1);
    let from = q.from_ms.unwrap_or(to - 86_400_000);
    let rows = s
        .readers
        .run(move |c| db::fleet::label_counts(c, from, to))
        .await?;
    let rows: Vec<_> = rows
        .into_iter()
        .map(|(device, camera, label, events)| {
            serde_json::json!({"device": device, "camera": camera, "label": label, "events": events})
        })
        .collect();
    Ok(Json(serde_json::json!({"from_ms": from, "to_ms": to, "rows": rows})).into_response())
}

/// The fleet view itself: its broker connection and what it has stored.
async fn fleet(State(s): State<Arc<FleetState>>) -> Json<serde_json::Value> {
    let i = &s.ingest;
    Json(serde_json::json!({
        "broker": s.broker,
        "connected": i.connected.load(Ordering::Relaxed),
        "stored": i.stored.load(Ordering::Relaxed),
        "skipped": i.skipped.load(Ordering::Relaxed),
        "last_error": *i.last_error.lock().unwrap_or_else(|p| p.into_inner()),
        "uptime_s": s.started.elapsed().as_secs(),
    }))
}

async fn ws(State(s): State<Arc<FleetState>>, up: WebSocketUpgrade) -> Response {
    let feed = s.feed.subscribe();
    let stop = s.shutdown.clone();
    let open = s.clients.token();
    up.max_message_size(64 * 1024)
        .on_upgrade(move |socket| async move {
            client(socket, feed, stop).await;
            drop(open);
        })
}

/// A dashboard's socket: every stored message's line, `lagged` with the count when it fell
/// behind (it reloads from the API then), closed with 1001 at shutdown.
async fn client(
    mut socket: WebSocket,
    mut feed: broadcast::Receiver<Utf8Bytes>,
    stop: CancellationToken,
) {
    let hello = serde_json::json!({"type": "hello", "fleet": true}).to_string();
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    let send_timeout = Duration::from_secs(10);
    loop {
        let out = tokio::select! {
            biased;
            _ = stop.cancelled() => {
                let _ = socket.send(Message::Close(Some(axum::extract::ws::CloseFrame {
                    code: 1001,
                    reason: "fleet view stopping".into(),
                }))).await;
                return;
            }
            m = socket.next() => match m {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
            r = feed.recv() => match r {
                Ok(line) => Message::Text(line),
                Err(broadcast::error::RecvError::Lagged(n)) => Message::Text(
                    serde_json::json!({"type": "lagged", "missed": n}).to_string().into(),
                ),
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        match tokio::time::timeout(send_timeout, socket.send(out)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}
