//! One WebSocket client: its subscriptions, requests, heartbeats and back-pressure.
//!
//! Each client is one task that `select!`s on its socket, its subscriptions, a ping timer and the
//! shutdown token. A client that falls behind a broadcast channel is told how much it missed
//! (`lagged`) and carries on from the newest message; a client whose socket accepts nothing for
//! `send_timeout_s` is dropped. Neither slows the pipeline or other clients.
//!
//! The upgrade is done here rather than by axum's extractor so that the client owns its socket:
//! tokio-tungstenite reads it and writes the control frames, and the daemon's own messages go out
//! through [`wire::Wire`] without a per-client copy of their payload.

mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use axum::extract::{ConnectInfo, Request as HttpRequest, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::stream::Stream;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamMap;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use wire::{Opcode, Wire};

use crate::server::protocol::{
    parse_request, stream_width, Request, ServerMsg, Topic, PROTOCOL_VERSION, STREAM_WIDTHS,
};
use crate::server::state::{ApiError, AppState, CountsError};

/// What a subscription yields.
enum Item {
    Text(Utf8Bytes),
    Frame(Bytes),
    Lagged(u64),
}

type Sub = Pin<Box<dyn Stream<Item = Item> + Send>>;

fn text_stream(rx: tokio::sync::broadcast::Receiver<Utf8Bytes>) -> Sub {
    Box::pin(BroadcastStream::new(rx).map(|r| match r {
        Ok(t) => Item::Text(t),
        Err(BroadcastStreamRecvError::Lagged(n)) => Item::Lagged(n),
    }))
}

fn frame_stream(rx: tokio::sync::broadcast::Receiver<Bytes>) -> Sub {
    Box::pin(BroadcastStream::new(rx).map(|r| match r {
        Ok(b) => Item::Frame(b),
        Err(BroadcastStreamRecvError::Lagged(n)) => Item::Lagged(n),
    }))
}

/// Most messages forwarded in one go before flushing the socket.
const BATCH: usize = 32;

/// A client's connection: tungstenite over the upgraded HTTP connection (TCP or TLS).
type Socket = WebSocketStream<Wire<TokioIo<hyper::upgrade::Upgraded>>>;

/// Read buffer per client. Clients send small JSON requests and pongs; tungstenite zero-fills
/// the free part of this buffer on every read attempt, and this task attempts a read each time
/// it wakes for a frame, so the default 128 KiB cost a 128 KiB memset per frame per client (a
/// fifth of the daemon's CPU with 100 clients). Larger messages, up to `max_message_bytes`,
/// still arrive: the buffer grows to the length a frame header announces.
const READ_BUFFER: usize = 4096;

/// The `/ws` route (the caller puts it behind the token check).
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/ws", get(upgrade))
}

/// Whether a browser page from `origin` may open `/ws`: the daemon's own page (same host and
/// port as the request), or one of `allowed_origins`. Clients that send no Origin (not browsers)
/// are allowed; the token is their gate.
pub(crate) fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    if allowed.iter().any(|a| a.trim_end_matches('/') == origin) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

/// Checks done before a WebSocket upgrade: Origin, shutdown, client limit. On success the
/// permit holds the client's slot for as long as it is connected.
pub(crate) fn check_upgrade(
    state: &AppState,
    headers: &HeaderMap,
    addr: SocketAddr,
) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    if !origin_allowed(headers, &state.cfg.allowed_origins) {
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or("(none)");
        tracing::warn!(%addr, origin, "refused /ws from {addr}: foreign origin {origin}");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "this origin may not open /ws",
        ));
    }
    if state.shutdown.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the daemon is stopping",
        ));
    }
    state.client_slots.clone().try_acquire_owned().map_err(|_| {
        state
            .metrics()
            .clients_refused
            .fetch_add(1, Ordering::Relaxed);
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_clients",
            format!("at most {} clients", state.cfg.max_clients),
        )
    })
}

pub(crate) async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    mut req: HttpRequest,
) -> Response {
    let accept = match accept_key(req.headers()) {
        Ok(key) => key,
        Err(refusal) => return refusal.into_response(),
    };
    let permit = match check_upgrade(&state, req.headers(), addr) {
        Ok(p) => p,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "not_upgradable",
            "this connection cannot be upgraded to a WebSocket",
        )
        .into_response();
    };
    let max = state.cfg.max_message_bytes;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .read_buffer_size(READ_BUFFER);
    let clients = state.clients.clone();
    clients.spawn(async move {
        let io = match on_upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "websocket upgrade failed");
                return;
            }
        };
        let socket =
            WebSocketStream::from_raw_socket(Wire::new(io), Role::Server, Some(config)).await;
        let m = &state.metrics();
        m.clients.fetch_add(1, Ordering::Relaxed);
        m.clients_total.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%addr, "client connected");
        Client::new(state.clone(), addr).run(socket).await;
        state.metrics().clients.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(%addr, "client gone");
        drop(permit);
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::SEC_WEBSOCKET_ACCEPT, accept),
        ],
    )
        .into_response()
}

/// Why a request to `/ws` is not an opening handshake the daemon takes.
#[derive(Debug, PartialEq)]
enum BadHandshake {
    /// Not a WebSocket upgrade at all, or one without its key (`400`).
    NotWebSocket(&'static str),
    /// A WebSocket version other than 13 (`426`, naming 13 as RFC 6455, 4.4 asks).
    Version,
}

impl IntoResponse for BadHandshake {
    fn into_response(self) -> Response {
        match self {
            BadHandshake::NotWebSocket(what) => {
                ApiError::new(StatusCode::BAD_REQUEST, "not_websocket", what).into_response()
            }
            BadHandshake::Version => {
                let mut r = ApiError::new(
                    StatusCode::UPGRADE_REQUIRED,
                    "websocket_version",
                    "only WebSocket version 13 is spoken",
                )
                .into_response();
                r.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
                r
            }
        }
    }
}

/// The `Sec-WebSocket-Accept` answering a valid RFC 6455 opening handshake, or why it is not one.
fn accept_key(headers: &HeaderMap) -> Result<HeaderValue, BadHandshake> {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, "websocket") {
        return Err(BadHandshake::NotWebSocket(
            "/ws takes a WebSocket upgrade (Connection: upgrade, Upgrade: websocket)",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(BadHandshake::Version);
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(BadHandshake::NotWebSocket("Sec-WebSocket-Key is missing"));
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    HeaderValue::from_str(&accept).map_err(|_| BadHandshake::NotWebSocket("bad Sec-WebSocket-Key"))
}

/// Allows `rate` requests per second with bursts of `rate`.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32) -> Self {
        Self {
            rate: rate.max(1) as f64,
            tokens: rate.max(1) as f64,
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + (now - self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Client {
    state: Arc<AppState>,
    addr: SocketAddr,
    subs: StreamMap<String, Sub>,
    /// Per frames subscription with a `max_fps`: minimum interval between frames (ms) and the
    /// last sent timestamp.
    frame_pacing: HashMap<String, (i64, Option<i64>)>,
    queries: TokenBucket,
    /// Messages waiting for the next flush, payloads shared with the broadcast.
    out: Vec<(Opcode, Bytes)>,
}

enum Flow {
    Continue,
    Close(Option<CloseFrame>),
}

fn close_frame(code: CloseCode, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.into(),
    }
}

impl Client {
    fn new(state: Arc<AppState>, addr: SocketAddr) -> Self {
        let qps = state.cfg.queries_per_second;
        Self {
            state,
            addr,
            subs: StreamMap::new(),
            frame_pacing: HashMap::new(),
            queries: TokenBucket::new(qps),
            out: Vec::new(),
        }
    }

    async fn run(mut self, mut ws: Socket) {
        let cameras = self.state.camera_infos();
        let server = format!("ocellus {}", env!("CARGO_PKG_VERSION"));
        self.push(ServerMsg::Hello {
            protocol: PROTOCOL_VERSION,
            server: &server,
            cameras: &cameras,
            stream_widths: &STREAM_WIDTHS,
        });
        let ping_every = Duration::from_secs(self.state.cfg.ping_interval_s.max(1));
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let mut last_heard = Instant::now();
        let shutdown = self.state.shutdown.clone();
        // Created once: a fresh `cancelled()` per wake-up would add and remove a waiter on the
        // token, under its lock, for every frame.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);

        let close = loop {
            if !self.flush(&mut ws).await {
                break None;
            }
            let flow = tokio::select! {
                biased;
                _ = &mut cancelled => {
                    self.drain_ready();
                    Flow::Close(Some(close_frame(CloseCode::Away, "server shutting down")))
                }
                incoming = ws.next() => {
                    last_heard = Instant::now();
                    match incoming {
                        None => break None,
                        Some(Ok(msg)) => self.on_message(msg).await,
                        Some(Err(e)) => Flow::Close(read_error_close(&e)),
                    }
                }
                Some((key, item)) = self.subs.next(), if !self.subs.is_empty() => {
                    self.forward(&key, item);
                    self.drain_ready();
                    Flow::Continue
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > ping_every * 2 + Duration::from_secs(1) {
                        tracing::info!(addr = %self.addr, "client stopped answering pings; dropping it");
                        break None;
                    }
                    self.out.push((Opcode::Ping, Bytes::new()));
                    Flow::Continue
                }
            };
            if let Flow::Close(frame) = flow {
                break frame;
            }
        };
        if let Some(frame) = close {
            // tungstenite sends the close frame, so it knows the close handshake has begun.
            if self.flush(&mut ws).await {
                let close = ws.send(Message::Close(Some(frame)));
                let _ = tokio::time::timeout(self.send_timeout(), close).await;
            }
        }
    }

    /// How long a write may wait for the client's socket (`server.send_timeout_s`).
    fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.state.cfg.send_timeout_s.max(1))
    }

    /// Sends what is queued, in as few writes as the socket takes. Returns false when the client
    /// is gone or too slow.
    async fn flush(&mut self, ws: &mut Socket) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let metrics = &self.state.metrics();
        let n = self.out.len() as u64;
        let mut bytes = 0u64;
        let wire = ws.get_mut();
        for (opcode, payload) in self.out.drain(..) {
            bytes += payload.len() as u64;
            wire.push(opcode, payload);
        }
        let timeout = self.send_timeout();
        let send = std::future::poll_fn(|cx| wire.poll_send(cx));
        match tokio::time::timeout(timeout, send).await {
            Ok(Ok(())) => {
                metrics.messages_sent.fetch_add(n, Ordering::Relaxed);
                metrics.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
                true
            }
            Ok(Err(_)) => false,
            Err(_) => {
                metrics.clients_dropped_slow.fetch_add(1, Ordering::Relaxed);
                tracing::info!(addr = %self.addr, "client socket blocked past the send timeout; dropping it");
                false
            }
        }
    }

    fn push(&mut self, msg: ServerMsg<'_>) {
        self.out.push((Opcode::Text, Bytes::from(msg.to_json())));
    }

    /// Takes whatever the subscriptions have ready now, up to a batch.
    fn drain_ready(&mut self) {
        for _ in 0..BATCH {
            match self.subs.next().now_or_never() {
                Some(Some((key, item))) => self.forward(&key, item),
                _ => break,
            }
        }
    }

    fn forward(&mut self, key: &str, item: Item) {
        match item {
            Item::Text(t) => self.out.push((Opcode::Text, Bytes::from(t))),
            Item::Frame(b) => {
                if let Some((min_ms, last)) = self.frame_pacing.get_mut(key) {
                    let ts = crate::server::protocol::parse_frame_header(&b)
                        .map(|h| h.ts_ms)
                        .unwrap_or(0);
                    // 10% slack so a 5 fps limit on a 10 fps camera gives 5 fps, not 3.3.
                    if matches!(last, Some(prev) if ts - *prev < *min_ms * 9 / 10) {
                        return;
                    }
                    *last = Some(ts);
                }
                self.out.push((Opcode::Binary, b));
            }
            Item::Lagged(n) => {
                let m = &self.state.metrics();
                if key.starts_with("frames:") {
                    m.frames_dropped.fetch_add(n, Ordering::Relaxed);
                } else {
                    m.messages_dropped.fetch_add(n, Ordering::Relaxed);
                }
                self.push(ServerMsg::Lagged {
                    topic: key,
                    missed: n,
                });
            }
        }
    }

    async fn on_message(&mut self, msg: Message) -> Flow {
        match msg {
            Message::Text(text) => self.on_text(&text).await,
            Message::Binary(_) => {
                self.error(
                    None,
                    "binary_not_accepted",
                    "clients send JSON text messages only",
                );
                Flow::Continue
            }
            // Pongs only prove the client is alive; tungstenite answers pings itself.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Flow::Continue,
            Message::Close(_) => Flow::Close(None),
        }
    }

    fn error(&mut self, id: Option<&serde_json::Value>, code: &str, message: &str) {
        self.state
            .metrics()
            .client_errors
            .fetch_add(1, Ordering::Relaxed);
        self.push(ServerMsg::Error { id, code, message });
    }

    fn reply(&mut self, id: Option<&serde_json::Value>, op: &str) {
        self.push(ServerMsg::Reply {
            id,
            op,
            events: None,
            next_before_id: None,
            counts: None,
        });
    }

    async fn on_text(&mut self, text: &str) -> Flow {
        let env = match parse_request(text) {
            Ok(env) => env,
            Err(e) => {
                self.error(e.id.as_ref(), e.code, &e.message);
                return Flow::Continue;
            }
        };
        let id = env.id.as_ref();
        match env.request {
            Request::Ping => self.reply(id, "ping"),
            Request::Subscribe(topic) => match self.subscribe(&topic) {
                Ok(()) => self.reply(id, "subscribe"),
                Err(e) => self.error(id, "unknown_camera", &e.to_string()),
            },
            Request::Unsubscribe(topic) => {
                let key = topic.key();
                self.subs.remove(&key);
                self.frame_pacing.remove(&key);
                self.reply(id, "unsubscribe");
            }
            Request::Query(q) => {
                if !self.queries.take() {
                    self.error(id, "rate_limited", "too many queries; slow down");
                    return Flow::Continue;
                }
                match self.state.query_events(q).await {
                    Ok((events, next)) => self.push(ServerMsg::Reply {
                        id,
                        op: "query",
                        events: Some(&events),
                        next_before_id: next,
                        counts: None,
                    }),
                    Err(e) => self.error(id, "db_error", &e.to_string()),
                }
            }
            Request::Counts(params) => {
                if !self.queries.take() {
                    self.error(id, "rate_limited", "too many queries; slow down");
                    return Flow::Continue;
                }
                match self.state.query_counts(params).await {
                    Ok(answer) => self.push(ServerMsg::Reply {
                        id,
                        op: "query",
                        events: None,
                        next_before_id: None,
                        counts: Some(&answer),
                    }),
                    Err(CountsError::Param(e)) => self.error(id, "bad_request", &e.to_string()),
                    Err(CountsError::Db(e)) => self.error(id, "db_error", &e.to_string()),
                }
            }
        }
        Flow::Continue
    }

    fn subscribe(&mut self, topic: &Topic) -> Result<(), UnknownCamera> {
        let key = topic.key();
        let state = self.state.clone();
        let hub = |camera: &str| {
            state
                .camera(camera)
                .cloned()
                .ok_or_else(|| UnknownCamera(camera.to_string()))
        };
        let sub = match topic {
            Topic::Events => text_stream(state.event_feed.subscribe()),
            Topic::Stats => text_stream(state.stats_feed.subscribe()),
            Topic::Counts => text_stream(state.counts_feed.subscribe()),
            Topic::Detections { camera } => text_stream(hub(camera)?.detections.subscribe()),
            Topic::Frames {
                camera,
                max_fps,
                width,
            } => {
                let rx = hub(camera)?.frames_for(stream_width(*width)).subscribe();
                let min_ms = match max_fps {
                    Some(f) if *f > 0.0 => (1000.0 / f.min(1000.0)) as i64,
                    _ => 0,
                };
                // Only a limited subscription needs its frames' timestamps read.
                if min_ms > 0 {
                    self.frame_pacing.insert(key.clone(), (min_ms, None));
                } else {
                    self.frame_pacing.remove(&key);
                }
                frame_stream(rx)
            }
        };
        // Subscribing again replaces the old subscription (a new width or fps, say).
        self.subs.insert(key, sub);
        Ok(())
    }
}

/// A subscription to a camera the daemon does not have.
#[derive(Debug, thiserror::Error)]
#[error("no camera {0:?}")]
struct UnknownCamera(String);

/// The close frame for a read error: oversize messages get 1009, invalid UTF-8 1007, other
/// protocol violations 1002; a broken connection gets none.
fn read_error_close(e: &tungstenite::Error) -> Option<CloseFrame> {
    use tungstenite::Error as E;
    let frame = match e {
        E::Capacity(_) => close_frame(CloseCode::Size, "message too big"),
        E::Utf8(_) => close_frame(CloseCode::Invalid, "invalid UTF-8"),
        E::Io(_) | E::ConnectionClosed | E::AlreadyClosed => return None,
        _ => close_frame(CloseCode::Protocol, "protocol error"),
    };
    tracing::debug!(error = %e, code = u16::from(frame.code), "closing a client after a read error");
    Some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::state::test_headers as headers;

    fn upgrade_request(headers: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    const UPGRADE: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn a_valid_handshake_gets_the_rfc_accept_key() {
        // RFC 6455, 1.3: this key's answer.
        let accept = accept_key(&upgrade_request(&UPGRADE)).unwrap();
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn what_is_not_a_version_13_upgrade_is_refused_with_a_reason() {
        let without = |name: &str| -> Vec<(&str, &str)> {
            UPGRADE
                .iter()
                .copied()
                .filter(|(k, _)| *k != name)
                .collect()
        };
        for missing in ["connection", "upgrade", "sec-websocket-key"] {
            let r = accept_key(&upgrade_request(&without(missing))).unwrap_err();
            assert!(
                matches!(r, BadHandshake::NotWebSocket(_)),
                "without {missing}"
            );
            assert_eq!(r.into_response().status(), StatusCode::BAD_REQUEST);
        }
        let mut v8 = without("sec-websocket-version");
        v8.push(("sec-websocket-version", "8"));
        for headers in [v8, without("sec-websocket-version")] {
            let r = accept_key(&upgrade_request(&headers)).unwrap_err();
            assert_eq!(r, BadHandshake::Version);
            let r = r.into_response();
            assert_eq!(r.status(), StatusCode::UPGRADE_REQUIRED);
            assert_eq!(r.headers()[header::SEC_WEBSOCKET_VERSION], "13");
        }
    }

    #[test]
    fn origin_must_match_the_host_or_the_allow_list() {
        assert!(origin_allowed(&headers(&[("host", "box:8080")]), &[]));
        assert!(origin_allowed(
            &headers(&[("host", "box:8080"), ("origin", "http://box:8080")]),
            &[]
        ));
        assert!(!origin_allowed(
            &headers(&[("host", "box:8080"), ("origin", "http://evil.example")]),
            &[]
        ));
        assert!(origin_allowed(
            &headers(&[("host", "box:8080"), ("origin", "https://ops.example")]),
            &["https://ops.example/".to_string()]
        ));
    }
}
