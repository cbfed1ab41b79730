//! A camera's live video: its own compressed stream (never decoded, never re-encoded) as
//! fragmented MP4 for the browsers' Media Source Extensions. Each picture becomes one
//! `moof`+`mdat`, built once on GStreamer's streaming thread and shared by every viewer through
//! a broadcast channel, as the JPEG frames are; the current GOP is kept so that a viewer who
//! joins starts at its key frame (docs/protocol.md, "Live video").

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::capture::packets::{CodecConfig, PacketListener, PacketMsg};
use crate::record::mp4;
use crate::server::protocol::{video_message, VIDEO_FLAG_INIT, VIDEO_FLAG_KEY};

/// Media segments in flight per camera: about 2.5 s at 25 fps. A viewer further behind skips
/// to the next key frame.
pub(crate) const VIDEO_CAPACITY: usize = 64;
/// The kept GOP's bound: a camera whose key frames are further apart than this holds makes a
/// late joiner wait for the next one.
const GOP_MAX_BYTES: usize = 16 << 20;
/// A picture's duration before a second one gives the stream's (25 fps).
const FIRST_DURATION_90K: u32 = 3600;

/// What the stream's viewers are told, in order.
#[derive(Clone, Debug)]
pub(crate) enum VideoItem {
    /// A new stream (the first, or after a reconnection or a change of codec or size): what
    /// follows is decoded with this init segment.
    Init(Arc<VideoInit>),
    Segment(VideoSegment),
    /// The camera's stream cannot be sent as video (not H.264/H.265): why.
    Unavailable(Arc<str>),
}

/// One picture as a media segment, in its binary message.
#[derive(Clone, Debug)]
pub(crate) struct VideoSegment {
    pub(crate) key: bool,
    /// Header + `moof` + `mdat`, as sent.
    pub(crate) message: Bytes,
}

/// A stream's start: what MSE needs to decode it, and the message carrying its init segment.
#[derive(Debug)]
pub(crate) struct VideoInit {
    /// `video/mp4; codecs="avc1.640028"`.
    pub(crate) mime: String,
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// Unix ms (fractional) of media time 0: a picture shown at media time `t` s was taken at
    /// `origin_ms + 1000 t`, the time its frame and detections carry.
    pub(crate) origin_ms: f64,
    /// Header + `ftyp` + `moov`.
    pub(crate) message: Bytes,
}

#[derive(Default)]
struct State {
    init: Option<Arc<VideoInit>>,
    config: Option<Arc<CodecConfig>>,
    origin90: i64,
    sequence: u32,
    /// A key frame came since the init segment: what follows can be decoded.
    keyed: bool,
    /// From the newest key frame on; empty while waiting for one (or past its bound).
    gop: Vec<VideoSegment>,
    gop_bytes: usize,
    last_dts: Option<i64>,
    duration: u32,
    unavailable: Option<Arc<str>>,
}

/// One camera's live video.
pub(crate) struct LiveVideo {
    camera: String,
    tx: broadcast::Sender<VideoItem>,
    state: Mutex<State>,
}

impl LiveVideo {
    pub(crate) fn new(camera: &str) -> Self {
        Self {
            camera: camera.to_string(),
            tx: broadcast::channel(VIDEO_CAPACITY).0,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What a new viewer needs first (the init segment and the GOP so far, or why there is no
    /// video), and the receiver of what follows: taken together, so nothing is missed or sent
    /// twice.
    pub(crate) fn subscribe(&self) -> (Vec<VideoItem>, broadcast::Receiver<VideoItem>) {
        let s = self.lock();
        let mut first = Vec::new();
        if let Some(why) = &s.unavailable {
            first.push(VideoItem::Unavailable(why.clone()));
        } else if let Some(init) = &s.init {
            first.push(VideoItem::Init(init.clone()));
            first.extend(s.gop.iter().cloned().map(VideoItem::Segment));
        }
        (first, self.tx.subscribe())
    }

    /// Viewers now.
    pub(crate) fn viewers(&self) -> usize {
        self.tx.receiver_count()
    }

    fn message(&self, flags: u8, pts_ms: i64, body: &[u8]) -> Bytes {
        video_message(flags, pts_ms, &self.camera, body)
    }

    fn send(&self, item: VideoItem) {
        // No viewer is no error.
        let _ = self.tx.send(item);
    }
}

impl PacketListener for LiveVideo {
    fn on_msg(&self, msg: &PacketMsg) {
        let mut s = self.lock();
        match msg {
            PacketMsg::Started => {
                // A new session is a new clock: its first packet starts a new stream.
                let unavailable = s.unavailable.take();
                *s = State {
                    unavailable,
                    ..State::default()
                };
            }
            PacketMsg::Unrecordable(why) => {
                let why: Arc<str> = why.as_str().into();
                s.unavailable = Some(why.clone());
                s.init = None;
                s.gop.clear();
                self.send(VideoItem::Unavailable(why));
            }
            PacketMsg::Packet(p, config) => {
                s.unavailable = None;
                if s.config.as_ref() != Some(config) {
                    let init = VideoInit {
                        mime: format!("video/mp4; codecs=\"{}\"", config.codec_string()),
                        width: u32::from(config.width),
                        height: u32::from(config.height),
                        origin_ms: p.dts90 as f64 / 90.0,
                        message: self.message(
                            VIDEO_FLAG_INIT,
                            p.dts90.div_euclid(90),
                            &mp4::init_segment(config),
                        ),
                    };
                    let init = Arc::new(init);
                    *s = State {
                        init: Some(init.clone()),
                        config: Some(config.clone()),
                        origin90: p.dts90,
                        duration: FIRST_DURATION_90K,
                        ..State::default()
                    };
                    self.send(VideoItem::Init(init));
                }
                if !s.keyed && !p.key {
                    // Nothing before the first key frame can be decoded.
                    return;
                }
                s.keyed = true;
                if let Some(last) = s.last_dts {
                    // The picture's duration is not known until the next one comes: the
                    // previous interval stands for it (exact at a steady rate).
                    let d = p.dts90 - last;
                    if d > 0 && d < 90_000 * 10 {
                        s.duration = d as u32;
                    }
                }
                s.last_dts = Some(p.dts90);
                let sample = mp4::Sample {
                    dts: p.dts90 - s.origin90,
                    duration: s.duration,
                    cto: p.cto,
                    key: p.key,
                    data: p.data.clone(),
                };
                let body = mp4::fragment(s.sequence, std::slice::from_ref(&sample));
                s.sequence = s.sequence.wrapping_add(1);
                let flags = if p.key { VIDEO_FLAG_KEY } else { 0 };
                let pts_ms = (p.dts90 + i64::from(p.cto)).div_euclid(90);
                let seg = VideoSegment {
                    key: p.key,
                    message: self.message(flags, pts_ms, &body),
                };
                if p.key || s.gop_bytes + seg.message.len() > GOP_MAX_BYTES {
                    s.gop.clear();
                    s.gop_bytes = 0;
                }
                if p.key || !s.gop.is_empty() {
                    s.gop_bytes += seg.message.len();
                    s.gop.push(seg.clone());
                }
                self.send(VideoItem::Segment(seg));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::packets::{Codec, Packet};
    use crate::server::protocol::parse_video_message;

    fn packet(i: i64, key: bool) -> Packet {
        Packet {
            dts90: 1_000_000 + i * 3600,
            cto: 0,
            key,
            data: Bytes::from(vec![0, 0, 0, 1, i as u8]),
        }
    }

    fn config() -> Arc<CodecConfig> {
        Arc::new(CodecConfig {
            codec: Codec::H264,
            width: 640,
            height: 360,
            record: Bytes::from_static(&[1, 0x64, 0, 0x1f, 0xff, 0xe0, 0]),
        })
    }

    fn keys(items: &[VideoItem]) -> Vec<Option<bool>> {
        items
            .iter()
            .map(|i| match i {
                VideoItem::Segment(s) => Some(s.key),
                _ => None,
            })
            .collect()
    }

    /// A viewer who joins gets the init segment and the GOP from its key frame; pictures
    /// before the first key frame are never sent; a new session starts a new stream.
    #[test]
    fn a_late_joiner_starts_at_the_newest_key_frame() {
        let v = LiveVideo::new("cam");
        let c = config();
        v.on_msg(&PacketMsg::Started);
        v.on_msg(&PacketMsg::Packet(packet(0, false), c.clone()));
        let (first, _) = v.subscribe();
        assert!(matches!(first.as_slice(), [VideoItem::Init(_)]));
        for (i, key) in [(1, true), (2, false), (3, true), (4, false), (5, false)] {
            v.on_msg(&PacketMsg::Packet(packet(i, key), c.clone()));
        }
        let (first, mut rx) = v.subscribe();
        assert_eq!(keys(&first), [None, Some(true), Some(false), Some(false)]);
        let VideoItem::Init(init) = &first[0] else {
            panic!()
        };
        assert_eq!(init.mime, "video/mp4; codecs=\"avc1.64001f\"");
        let h = parse_video_message(&init.message).unwrap();
        assert_eq!(
            (h.flags, h.pts_ms, h.camera),
            (VIDEO_FLAG_INIT, 1_000_000 / 90, "cam")
        );
        assert_eq!(&h.mp4[4..8], b"ftyp");
        let VideoItem::Segment(key) = &first[1] else {
            panic!()
        };
        let h = parse_video_message(&key.message).unwrap();
        assert_eq!((h.flags, &h.mp4[4..8]), (VIDEO_FLAG_KEY, &b"moof"[..]));

        v.on_msg(&PacketMsg::Started);
        v.on_msg(&PacketMsg::Packet(packet(9, true), c));
        assert!(matches!(rx.try_recv(), Ok(VideoItem::Init(_))));
        assert!(matches!(rx.try_recv(), Ok(VideoItem::Segment(s)) if s.key));
    }

    /// A GOP past the kept bound is no longer kept for joiners, but its pictures still go to
    /// the viewers there are.
    #[test]
    fn pictures_past_the_kept_gop_still_reach_viewers() {
        let v = LiveVideo::new("cam");
        let c = config();
        let big = |i: i64, key: bool| Packet {
            data: Bytes::from(vec![0u8; GOP_MAX_BYTES / 2 + 1]),
            ..packet(i, key)
        };
        let (_, mut rx) = v.subscribe();
        for (i, key) in [(0, true), (1, false), (2, false), (3, false)] {
            v.on_msg(&PacketMsg::Packet(big(i, key), c.clone()));
        }
        let mut got = Vec::new();
        while let Ok(item) = rx.try_recv() {
            got.push(item);
        }
        assert_eq!(
            keys(&got),
            [None, Some(true), Some(false), Some(false), Some(false)]
        );
        let (first, _) = v.subscribe();
        assert_eq!(
            keys(&first),
            [None],
            "a joiner waits for the next key frame"
        );
    }

    #[test]
    fn a_stream_that_cannot_be_sent_says_why_to_who_joins() {
        let v = LiveVideo::new("cam");
        v.on_msg(&PacketMsg::Unrecordable("the stream is image/jpeg".into()));
        let (first, _) = v.subscribe();
        assert!(
            matches!(first.as_slice(), [VideoItem::Unavailable(w)] if w.contains("image/jpeg"))
        );
    }
}
