//! One WebSocket client's session: its subscriptions, requests, heartbeats and back-pressure,
//! until it leaves, stalls or the daemon stops.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use futures_util::stream::Stream;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamMap;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::wire::{Opcode, Wire};

use crate::server::protocol::{
    parse_request, stream_width, Request, ServerMsg, Topic, PROTOCOL_VERSION, STREAM_WIDTHS,
};
use crate::server::state::{AppState, CountsError};
use crate::server::video::VideoItem;
use crate::telemetry::metrics::CameraStats;

/// What a subscription yields.
enum Item {
    Text(Utf8Bytes),
    Frame(Bytes),
    Video(VideoItem),
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

/// A camera's live video: what a viewer who joins needs first (the init segment and the GOP
/// so far), then the stream.
fn video_stream(first: Vec<VideoItem>, rx: tokio::sync::broadcast::Receiver<VideoItem>) -> Sub {
    let live = BroadcastStream::new(rx).map(|r| match r {
        Ok(v) => Item::Video(v),
        Err(BroadcastStreamRecvError::Lagged(n)) => Item::Lagged(n),
    });
    Box::pin(futures_util::stream::iter(first.into_iter().map(Item::Video)).chain(live))
}

/// Most messages forwarded in one go before flushing the socket.
const BATCH: usize = 32;

/// A client's connection: tungstenite over the upgraded HTTP connection (TCP or TLS).
type Socket = WebSocketStream<Wire<TokioIo<hyper::upgrade::Upgraded>>>;

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

pub(super) struct Client {
    state: Arc<AppState>,
    addr: SocketAddr,
    subs: StreamMap<String, Sub>,
    /// Per frames subscription with a `max_fps`: minimum interval between frames (ms) and the
    /// last sent timestamp.
    frame_pacing: HashMap<String, (i64, Option<i64>)>,
    /// Per live frames or video subscription: the camera's counters (bytes sent).
    picture_stats: HashMap<String, Arc<CameraStats>>,
    /// Video subscriptions that lost segments: nothing is sent until the next key frame.
    video_waiting_key: HashSet<String>,
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
    pub(super) fn new(state: Arc<AppState>, addr: SocketAddr) -> Self {
        let qps = state.cfg.queries_per_second;
        Self {
            state,
            addr,
            subs: StreamMap::new(),
            frame_pacing: HashMap::new(),
            picture_stats: HashMap::new(),
            video_waiting_key: HashSet::new(),
            queries: TokenBucket::new(qps),
            out: Vec::new(),
        }
    }

    pub(super) async fn run(mut self, mut ws: Socket) {
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
                if let Some(stats) = self.picture_stats.get(key) {
                    stats
                        .jpeg_bytes_sent
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                }
                self.out.push((Opcode::Binary, b));
            }
            Item::Video(v) => self.forward_video(key, v),
            Item::Lagged(n) => {
                let m = &self.state.metrics();
                if key.starts_with("frames:") || key.starts_with("video:") {
                    m.frames_dropped.fetch_add(n, Ordering::Relaxed);
                    // The segments after a gap depend on what was missed: wait for a key frame.
                    if key.starts_with("video:") {
                        self.video_waiting_key.insert(key.to_string());
                    }
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

    fn forward_video(&mut self, key: &str, item: VideoItem) {
        let camera = key.strip_prefix("video:").unwrap_or(key);
        match item {
            VideoItem::Init(init) => {
                // A stream starts at a key frame: what comes before one (a joiner when the
                // kept GOP outgrew its bound) cannot be decoded.
                self.video_waiting_key.insert(key.to_string());
                self.push(ServerMsg::Video {
                    camera,
                    mime: &init.mime,
                    width: init.width,
                    height: init.height,
                    origin_ms: init.origin_ms,
                });
                self.send_video(key, init.message.clone());
            }
            VideoItem::Segment(seg) => {
                if self.video_waiting_key.contains(key) {
                    if !seg.key {
                        self.state
                            .metrics()
                            .frames_dropped
                            .fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    self.video_waiting_key.remove(key);
                }
                self.send_video(key, seg.message);
            }
            VideoItem::Unavailable(reason) => self.push(ServerMsg::VideoUnavailable {
                camera,
                reason: &reason,
            }),
        }
    }

    fn send_video(&mut self, key: &str, message: Bytes) {
        if let Some(stats) = self.picture_stats.get(key) {
            stats
                .video_bytes_sent
                .fetch_add(message.len() as u64, Ordering::Relaxed);
        }
        self.out.push((Opcode::Binary, message));
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
                self.picture_stats.remove(&key);
                self.video_waiting_key.remove(&key);
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
                let hub = hub(camera)?;
                let rx = hub.frames_for(stream_width(*width)).subscribe();
                self.picture_stats.insert(key.clone(), hub.stats.clone());
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
            Topic::Video { camera } => {
                let hub = hub(camera)?;
                self.picture_stats.insert(key.clone(), hub.stats.clone());
                self.video_waiting_key.remove(&key);
                match &hub.video {
                    Some(video) => {
                        let (first, rx) = video.subscribe();
                        video_stream(first, rx)
                    }
                    None => video_stream(
                        vec![VideoItem::Unavailable(
                            "the camera's source gives decoded pictures only (a V4L2 device or a GStreamer pipeline): no compressed stream to send; its `frames` show it"
                                .into(),
                        )],
                        tokio::sync::broadcast::channel(1).1,
                    ),
                }
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
