//! The WebSocket wire protocol (version [`PROTOCOL_VERSION`], documented in docs/protocol.md):
//! client requests, server messages, and the binary live-frame header.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::pipeline::values::{DetectionsMsg, Event, EventKind, EventQuery};

/// 2: the `video` topic (live H.264/H.265 as fragmented MP4).
pub const PROTOCOL_VERSION: u32 = 2;

/// Version byte of the binary frame header.
pub const FRAME_HEADER_VERSION: u8 = 1;

/// Stream widths a client may ask for; each is encoded once per frame however many watch it.
/// 0 means the camera's own size.
pub const STREAM_WIDTHS: [u32; 4] = [0, 1280, 640, 320];

/// A request from a client.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Subscribe(Topic),
    Unsubscribe(Topic),
    Query(EventQuery),
    /// A counts query (`query` with a `counts` object): its parameters as text, as
    /// `GET /api/counts` takes them, checked by [`crate::counts::parse_query`].
    Counts(Vec<(String, String)>),
    Ping,
}

impl Request {
    pub fn op(&self) -> &'static str {
        match self {
            Request::Subscribe(_) => "subscribe",
            Request::Unsubscribe(_) => "unsubscribe",
            Request::Query(_) | Request::Counts(_) => "query",
            Request::Ping => "ping",
        }
    }
}

/// A request and the `id` its reply repeats.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    pub id: Option<serde_json::Value>,
    pub request: Request,
}

/// Why a client message was refused; `id` is the request's id when it could be read.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestError {
    pub id: Option<serde_json::Value>,
    /// `bad_json`, `unknown_op` or `bad_request`.
    pub code: &'static str,
    pub message: String,
}

/// Error messages quote what the client sent (an op, a field name, a value); they are cut to this
/// many bytes so a reply is never much larger than a fixed size whatever the client sends.
pub const MAX_ERROR_MESSAGE: usize = 200;

fn clipped(mut message: String) -> String {
    if message.len() > MAX_ERROR_MESSAGE {
        let mut end = MAX_ERROR_MESSAGE - "...".len();
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    message
}

/// Parses one text message: a JSON object with `op`, an optional `id` (string or number) and the
/// op's own fields; unknown fields and wrong types are refused.
pub fn parse_request(text: &str) -> Result<Envelope, RequestError> {
    let err = |id: Option<serde_json::Value>, code, message: String| RequestError {
        id,
        code,
        message: clipped(message),
    };
    let mut obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| err(None, "bad_json", format!("not a JSON object: {e}")))?;
    let id = obj.remove("id");
    if let Some(v) = &id {
        if !(v.is_string() || v.is_number()) {
            return Err(err(
                None,
                "bad_request",
                "id must be a string or a number".into(),
            ));
        }
    }
    let op = match obj.remove("op") {
        Some(serde_json::Value::String(op)) => op,
        Some(_) => return Err(err(id, "bad_request", "op must be a string".into())),
        None => return Err(err(id, "bad_request", "missing op".into())),
    };
    let rest = serde_json::Value::Object(obj);
    let bad = |id, message: String| err(id, "bad_request", message);
    let request = match op.as_str() {
        "subscribe" => Request::Subscribe(parse_topic(&op, rest).map_err(|m| bad(id.clone(), m))?),
        "unsubscribe" => {
            Request::Unsubscribe(parse_topic(&op, rest).map_err(|m| bad(id.clone(), m))?)
        }
        "query" if rest.get("counts").is_some() => {
            Request::Counts(counts_params(&rest).map_err(|m| bad(id.clone(), m))?)
        }
        "query" => Request::Query(
            EventQuery::deserialize(rest).map_err(|e| bad(id.clone(), format!("{op}: {e}")))?,
        ),
        "ping" => {
            if rest.as_object().is_some_and(|o| !o.is_empty()) {
                return Err(err(id, "bad_request", "ping takes no fields but id".into()));
            }
            Request::Ping
        }
        _ => {
            return Err(err(
                id,
                "unknown_op",
                format!("unknown op {op:?}; ops are subscribe, unsubscribe, query, ping"),
            ))
        }
    };
    Ok(Envelope { id, request })
}

/// The topic of a `subscribe` or `unsubscribe` (`op`) from its fields; the error is the message.
fn parse_topic(op: &str, rest: serde_json::Value) -> Result<Topic, String> {
    let fields: Vec<String> = rest
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let t = Topic::deserialize(rest).map_err(|e| format!("{op}: {e}"))?;
    // serde does not refuse extra fields on the field-less topics, so check them all here.
    let allowed: &[&str] = match t {
        Topic::Events | Topic::Stats | Topic::Counts => &["topic"],
        Topic::Detections { .. } | Topic::Video { .. } => &["topic", "camera"],
        Topic::Frames { .. } => &["topic", "camera", "max_fps", "width"],
    };
    match fields.iter().find(|f| !allowed.contains(&f.as_str())) {
        Some(f) => Err(format!("{op}: unknown field {f:?}")),
        None => Ok(t),
    }
}

/// A counts query's parameters, as text, from its `counts` object (the only field but op and
/// id); the error is the message.
fn counts_params(rest: &serde_json::Value) -> Result<Vec<(String, String)>, String> {
    let Some((Some(counts), 1)) = rest
        .as_object()
        .map(|o| (o.get("counts").and_then(|c| c.as_object()), o.len()))
    else {
        return Err(
            "query: counts must be an object of parameters, and the only field but op and id"
                .into(),
        );
    };
    let mut params = Vec::new();
    for (k, v) in counts {
        let v = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return Err(format!("query: counts.{k} must be a string or a number")),
        };
        params.push((k.clone(), v));
    }
    Ok(params)
}

/// What a client can subscribe to.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(tag = "topic", rename_all = "snake_case", deny_unknown_fields)]
pub enum Topic {
    /// Event start / update / end, every camera.
    Events,
    /// Per-camera and daemon counters, once a second.
    Stats,
    /// Every camera's count buckets as each minute closes (docs/counts.md).
    Counts,
    /// Boxes and track ids of every processed frame of one camera.
    Detections { camera: String },
    /// Live JPEG frames of one camera, at most `max_fps`, scaled to `width` (one of
    /// [`STREAM_WIDTHS`]; the nearest one not larger is used; 0 or absent: full size).
    Frames {
        camera: String,
        #[serde(default)]
        max_fps: Option<f32>,
        #[serde(default)]
        width: Option<u32>,
    },
    /// The camera's own compressed stream as fragmented MP4, for Media Source Extensions: a
    /// `video` message, the init segment, then a media segment per picture from a key frame.
    Video { camera: String },
}

impl Topic {
    /// The key under which a client holds this subscription: frames of one camera are one
    /// subscription whatever their fps and width.
    pub fn key(&self) -> String {
        match self {
            Topic::Events => "events".into(),
            Topic::Stats => "stats".into(),
            Topic::Counts => "counts".into(),
            Topic::Detections { camera } => format!("detections:{camera}"),
            Topic::Frames { camera, .. } => format!("frames:{camera}"),
            Topic::Video { camera } => format!("video:{camera}"),
        }
    }
}

/// The stream width used for a requested width: the largest standard width not above it.
pub fn stream_width(requested: Option<u32>) -> u32 {
    match requested {
        None | Some(0) => 0,
        Some(w) => STREAM_WIDTHS
            .iter()
            .copied()
            .filter(|&s| s != 0 && s <= w)
            .max()
            .unwrap_or(320),
    }
}

pub use crate::capture::live::{CameraStatus, SourceStatus};

/// A camera as announced in `hello` and `GET /api/cameras`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CameraInfo {
    #[serde(flatten)]
    pub status: CameraStatus,
    /// The camera's object masks and motion masks (polygons of `[x, y]` in fractions of the
    /// frame), for drawing.
    pub object_masks: Vec<crate::config::Polygon>,
    pub motion_masks: Vec<crate::config::Polygon>,
    /// The camera's zones (polygons) and counting lines (2 points), named, for drawing.
    #[serde(default)]
    pub zones: Vec<Shape>,
    #[serde(default)]
    pub lines: Vec<Shape>,
}

/// A named polygon or line, points `[x, y]` in fractions of the frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    pub name: String,
    pub points: Vec<[f32; 2]>,
}

impl Shape {
    /// The shapes of a camera's zones and lines.
    pub fn of(camera: &crate::config::CameraConfig) -> (Vec<Shape>, Vec<Shape>) {
        let zones = camera
            .zones
            .iter()
            .map(|z| Shape {
                name: z.name.clone(),
                points: z.points.clone(),
            })
            .collect();
        let lines = camera
            .lines
            .iter()
            .map(|l| Shape {
                name: l.name.clone(),
                points: l.points.to_vec(),
            })
            .collect();
        (zones, lines)
    }
}

/// Server -> client text messages.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg<'a> {
    Hello {
        protocol: u32,
        server: &'a str,
        cameras: &'a [CameraInfo],
        stream_widths: &'a [u32],
    },
    Event {
        kind: EventKind,
        /// One more for each message about the event (docs/mqtt.md: the de-duplication key).
        rev: u32,
        event: &'a Event,
    },
    Detections(&'a DetectionsMsg),
    /// A camera's live video starts (or starts again): the binary init segment follows.
    Video {
        camera: &'a str,
        /// For `MediaSource.isTypeSupported`: `video/mp4; codecs="avc1.640028"`.
        mime: &'a str,
        width: u32,
        height: u32,
        /// Unix ms of media time 0: a picture at `currentTime` t was taken at
        /// `origin_ms + 1000 t`, the `ts_ms` of its detections.
        origin_ms: f64,
    },
    /// The camera's video cannot be sent (not H.264/H.265, or no compressed stream at all):
    /// use its `frames`.
    VideoUnavailable {
        camera: &'a str,
        reason: &'a str,
    },
    Lagged {
        topic: &'a str,
        missed: u64,
    },
    Reply {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a serde_json::Value>,
        op: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        events: Option<&'a [Event]>,
        /// For a query: pass as `before_id` to get the next page; absent on the last page.
        #[serde(skip_serializing_if = "Option::is_none")]
        next_before_id: Option<i64>,
        /// For a counts query: the series.
        #[serde(skip_serializing_if = "Option::is_none")]
        counts: Option<&'a crate::counts::CountsAnswer>,
    },
    /// A minute's count buckets of one camera, as it closes.
    Counts {
        camera: &'a str,
        start_ms: i64,
        span_ms: i64,
        rows: Vec<crate::counts::BucketRow>,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a serde_json::Value>,
        code: &'a str,
        message: &'a str,
    },
}

impl ServerMsg<'_> {
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Builds a binary live-frame message: the header, then the JPEG.
///
/// Header, little-endian: `u8 version (1)`, `u8 camera id length L`, `u16 width`,
/// `u16 height`, `u64 seq`, `i64 timestamp ms`, `L bytes camera id (UTF-8)`; 22 + L bytes.
pub fn frame_message(
    camera: &str,
    seq: u64,
    ts_ms: i64,
    width: u32,
    height: u32,
    jpeg: &[u8],
) -> Bytes {
    let id = camera.as_bytes();
    let id_len = id.len().min(255);
    let mut buf = BytesMut::with_capacity(22 + id_len + jpeg.len());
    buf.put_u8(FRAME_HEADER_VERSION);
    buf.put_u8(id_len as u8);
    buf.put_u16_le(width.min(u16::MAX as u32) as u16);
    buf.put_u16_le(height.min(u16::MAX as u32) as u16);
    buf.put_u64_le(seq);
    buf.put_i64_le(ts_ms);
    buf.put_slice(&id[..id_len]);
    buf.put_slice(jpeg);
    buf.freeze()
}

/// The parsed header of a binary frame message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub version: u8,
    pub camera: String,
    pub width: u16,
    pub height: u16,
    pub seq: u64,
    pub ts_ms: i64,
    /// Offset of the JPEG in the message.
    pub jpeg_offset: usize,
}

pub fn parse_frame_header(msg: &[u8]) -> Option<FrameHeader> {
    if msg.len() < 22 || msg[0] != FRAME_HEADER_VERSION {
        return None;
    }
    let id_len = msg[1] as usize;
    let u16_at = |i: usize| u16::from_le_bytes([msg[i], msg[i + 1]]);
    let u64_at = |i: usize| u64::from_le_bytes(msg[i..i + 8].try_into().unwrap_or([0; 8]));
    let camera = std::str::from_utf8(msg.get(22..22 + id_len)?)
        .ok()?
        .to_string();
    Some(FrameHeader {
        version: msg[0],
        camera,
        width: u16_at(2),
        height: u16_at(4),
        seq: u64_at(6),
        ts_ms: u64_at(14) as i64,
        jpeg_offset: 22 + id_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_and_without_ids() {
        let r = parse_request(
            r#"{"op":"subscribe","id":7,"topic":"frames","camera":"front","max_fps":5,"width":640}"#,
        )
        .unwrap();
        assert_eq!(r.id, Some(7.into()));
        assert_eq!(
            r.request,
            Request::Subscribe(Topic::Frames {
                camera: "front".into(),
                max_fps: Some(5.0),
                width: Some(640)
            })
        );
        let r = parse_request(r#"{"op":"query","label":"person","limit":10}"#).unwrap();
        let Request::Query(query) = r.request else {
            panic!()
        };
        assert_eq!(query.label.as_deref(), Some("person"));
        assert_eq!(
            parse_request(r#"{"op":"ping","id":"x"}"#).unwrap().request,
            Request::Ping
        );
    }

    #[test]
    fn unknown_ops_fields_and_wrong_types_are_refused_with_the_request_id() {
        let code = |t: &str| parse_request(t).unwrap_err().code;
        assert_eq!(code("{not json"), "bad_json");
        assert_eq!(code("[1,2]"), "bad_json");
        assert_eq!(code(r#"{"op":"explode","id":3}"#), "unknown_op");
        assert_eq!(code(r#"{"op":"query","limit":"ten"}"#), "bad_request");
        // Quoted client input is cut: a long field name made of characters that Debug escapes
        // (found by the fuzzer) gave a reply eight times the size of the request.
        let long = format!(
            r#"{{"op":"subscribe","topic":"events","{}":1}}"#,
            "\u{7f}".repeat(500)
        );
        let e = parse_request(&long).unwrap_err();
        assert!(e.message.len() <= MAX_ERROR_MESSAGE, "{}", e.message.len());
        assert!(e.message.starts_with("subscribe: unknown field") && e.message.ends_with("..."));
        assert_eq!(
            code(r#"{"op":"subscribe","topic":"frames"}"#),
            "bad_request"
        );
        assert_eq!(code(r#"{"op":"query","colour":"red"}"#), "bad_request");
        assert_eq!(
            code(r#"{"op":"subscribe","topic":"events","extra":1}"#),
            "bad_request"
        );
        assert_eq!(code(r#"{"op":5}"#), "bad_request");
        let e = parse_request(r#"{"op":"query","id":"q1","limit":-1}"#).unwrap_err();
        assert_eq!(e.id, Some("q1".into()));
    }

    #[test]
    fn frame_header_round_trips() {
        let msg = frame_message(
            "front-door",
            42,
            1_700_000_000_123,
            768,
            576,
            b"\xff\xd8jpeg",
        );
        let h = parse_frame_header(&msg).unwrap();
        assert_eq!(
            h,
            FrameHeader {
                version: 1,
                camera: "front-door".into(),
                width: 768,
                height: 576,
                seq: 42,
                ts_ms: 1_700_000_000_123,
                jpeg_offset: 32
            }
        );
        assert_eq!(&msg[h.jpeg_offset..], b"\xff\xd8jpeg");
        assert!(parse_frame_header(&msg[..10]).is_none());
    }

    #[test]
    fn stream_width_picks_the_largest_standard_width_not_above_the_request() {
        assert_eq!(stream_width(None), 0);
        assert_eq!(stream_width(Some(700)), 640);
        assert_eq!(stream_width(Some(100)), 320);
        assert_eq!(stream_width(Some(5000)), 1280);
    }
}

/// Kind byte of a live-video binary message (a JPEG frame's header starts with
/// [`FRAME_HEADER_VERSION`], 1).
pub const VIDEO_KIND: u8 = 2;
/// Flags of a live-video message: the init segment; a key frame.
pub const VIDEO_FLAG_INIT: u8 = 1;
pub const VIDEO_FLAG_KEY: u8 = 2;

/// A live-video binary message: kind, camera id length L, flags, 0, the picture's time (Unix
/// ms, i64 LE), the camera id, then the MP4 bytes (docs/protocol.md).
#[derive(Debug, PartialEq, Eq)]
pub struct VideoHeader<'a> {
    pub flags: u8,
    pub pts_ms: i64,
    pub camera: &'a str,
    pub mp4: &'a [u8],
}

/// Builds a live-video message.
pub fn video_message(flags: u8, pts_ms: i64, camera: &str, mp4: &[u8]) -> Bytes {
    let id = camera.as_bytes();
    let mut b = BytesMut::with_capacity(12 + id.len() + mp4.len());
    b.put_u8(VIDEO_KIND);
    b.put_u8(id.len() as u8);
    b.put_u8(flags);
    b.put_u8(0);
    b.put_i64_le(pts_ms);
    b.put_slice(id);
    b.put_slice(mp4);
    b.freeze()
}

pub fn parse_video_message(b: &[u8]) -> Option<VideoHeader<'_>> {
    if b.len() < 12 || b[0] != VIDEO_KIND {
        return None;
    }
    let len = usize::from(b[1]);
    Some(VideoHeader {
        flags: b[2],
        pts_ms: i64::from_le_bytes(b[4..12].try_into().ok()?),
        camera: std::str::from_utf8(b.get(12..12 + len)?).ok()?,
        mp4: &b[12 + len..],
    })
}
