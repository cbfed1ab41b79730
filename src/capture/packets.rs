//! The packet path: a camera's compressed stream as it arrives (H.264 or H.265 access units with
//! their timestamps and key-frame flags), demuxed and parsed by GStreamer, from ONE session per
//! stream: `source ! parsebin ! h26xparse ! tee`, one branch handing the packets on (never
//! decoded) and, when the same stream feeds detection, a second one decoding frames
//! (`decodebin`, which picks a board's hardware decoder where it has one; I420 out, made BGR by
//! OpenCV). docs/design.md
//! ("Recording: the packet path") says why GStreamer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use opencv::core::Mat;

use super::Source;
use crate::config::RtspTransport;

/// The video codecs a stream can be recorded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    H264,
    H265,
}

/// What a decoder needs before the first packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CodecConfig {
    pub(crate) codec: Codec,
    pub(crate) width: u16,
    pub(crate) height: u16,
    /// The `avcC` / `hvcC` record (GStreamer's `codec_data`).
    pub(crate) record: Bytes,
}

impl CodecConfig {
    /// The RFC 6381 string (`avc1.PPCCLL`, read from the `avcC` record) a browser's
    /// `MediaSource.isTypeSupported` takes; `hvc1` alone for H.265.
    pub(crate) fn codec_string(&self) -> String {
        match self.codec {
            Codec::H264 if self.record.len() >= 4 => format!(
                "avc1.{:02x}{:02x}{:02x}",
                self.record[1], self.record[2], self.record[3]
            ),
            Codec::H264 => "avc1".to_string(),
            Codec::H265 => "hvc1".to_string(),
        }
    }
}

/// One access unit (a coded picture), as the camera sent it.
#[derive(Clone, Debug)]
pub(crate) struct Packet {
    /// Decode time on the wall clock, in 90 kHz ticks since the Unix epoch: the stream's own
    /// timestamps, anchored to the wall clock at its first packet.
    pub(crate) dts90: i64,
    /// Presentation minus decode time, 90 kHz (non-zero with B-frames).
    pub(crate) cto: i32,
    pub(crate) key: bool,
    /// Length-prefixed NAL units (`avc` / `hvc1` stream format).
    pub(crate) data: Bytes,
}

impl Packet {
    /// Milliseconds since the Unix epoch.
    pub(crate) fn wall_ms(&self) -> i64 {
        self.dts90.div_euclid(90)
    }
}

/// A packet stream that failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PacketError {
    #[error("GStreamer could not start: {0}")]
    Init(String),
    #[error("{source_name}: {what}")]
    Stream { source_name: String, what: String },
    #[error("{source_name}: cannot record: the stream is {caps}, not H.264 or H.265")]
    NotRecordable { source_name: String, caps: String },
    #[error("{source_name}: GStreamer lacks an element: {what} (install gstreamer1.0-plugins-base, -good, -bad and gstreamer1.0-libav)")]
    Missing { source_name: String, what: String },
}

impl PacketError {
    /// Whether trying again can help (a network or file error) or not (the stream's codec).
    pub(crate) fn is_permanent(&self) -> bool {
        matches!(
            self,
            PacketError::NotRecordable { .. } | PacketError::Init(_)
        )
    }
}

fn init() -> Result<(), PacketError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| gst::init().map_err(|e| e.to_string()))
        .clone()
        .map_err(PacketError::Init)
}

/// GStreamer's time in 90 kHz ticks.
fn to90(t: gst::ClockTime) -> i64 {
    (t.nseconds() as i128 * 90 / 1_000_000) as i64
}

/// How a session is opened.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PacketOptions {
    pub(crate) rtsp_transport: RtspTransport,
    /// Deliver at the stream's own pace (a file played as if it were a camera), or as fast as
    /// it is read.
    pub(crate) realtime: bool,
    pub(crate) clock: PacketClock,
}

/// Where a session's packet times are anchored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PacketClock {
    /// The first packet is stamped with the wall clock when it arrives (a camera).
    Wall,
    /// The first picture is shown at 0 (replay: the video's own clock, as the frames').
    Stream,
}

/// What a session hands its packet receiver.
#[derive(Clone, Debug)]
pub(crate) enum PacketMsg {
    /// A new session began: a new clock, and nothing before it continues into it.
    Started,
    Packet(Packet, Arc<CodecConfig>),
    /// The stream cannot be recorded (not H.264/H.265, say why); no packet will come.
    Unrecordable(String),
}

/// Told of every packet on GStreamer's streaming thread, as it is parsed (the live video):
/// must not block.
pub(crate) trait PacketListener: Send + Sync {
    fn on_msg(&self, msg: &PacketMsg);
}

/// Where a session's packets go: a channel (the recorder: bounded, never waited on by the
/// session, a full channel drops the packet and counts it) and a listener (the live video).
#[derive(Clone)]
pub(crate) struct PacketTx {
    tx: Option<crossbeam_channel::Sender<PacketMsg>>,
    pub(crate) dropped: Arc<AtomicU64>,
    /// Wait for room instead of dropping (replay, where nothing may be lost and the stream
    /// waits for its reader).
    lossless: bool,
    listener: Option<Arc<dyn PacketListener>>,
}

impl PacketTx {
    /// A channel of `capacity` packets.
    pub(crate) fn bounded(capacity: usize) -> (PacketTx, crossbeam_channel::Receiver<PacketMsg>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        (
            PacketTx {
                tx: Some(tx),
                dropped: Arc::new(AtomicU64::new(0)),
                lossless: false,
                listener: None,
            },
            rx,
        )
    }

    /// A channel of `capacity` packets whose sender waits when it is full.
    pub(crate) fn lossless(capacity: usize) -> (PacketTx, crossbeam_channel::Receiver<PacketMsg>) {
        let (mut tx, rx) = Self::bounded(capacity);
        tx.lossless = true;
        (tx, rx)
    }

    /// Packets to `listener` only.
    pub(crate) fn listener(listener: Arc<dyn PacketListener>) -> PacketTx {
        PacketTx {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
            lossless: false,
            listener: Some(listener),
        }
    }

    /// These packets to `listener` too.
    pub(crate) fn with_listener(mut self, listener: Arc<dyn PacketListener>) -> PacketTx {
        self.listener = Some(listener);
        self
    }

    pub(crate) fn send(&self, msg: PacketMsg) {
        if let Some(l) = &self.listener {
            l.on_msg(&msg);
        }
        let Some(tx) = &self.tx else { return };
        let sent = if self.lossless {
            tx.send(msg).is_ok()
        } else {
            tx.try_send(msg).is_ok()
        };
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A decoded frame and its size.
pub(crate) struct DecodedFrame {
    pub(crate) mat: Mat,
    /// When the picture is shown, Unix ms on the packets' clock (so a frame, its detections and
    /// the live video's picture carry the same time); `None` before the first packet.
    pub(crate) ts_ms: Option<i64>,
}

/// A session's clock: (stream ticks, clock ticks) of its first packet, 90 kHz.
type Anchor = Arc<std::sync::Mutex<Option<(i64, i64)>>>;

/// One GStreamer session on a camera stream. Packets go to the `PacketTx` from GStreamer's
/// own thread as they are parsed; decoded frames (when asked for) are pulled by the caller.
pub(crate) struct Session {
    name: String,
    pipeline: gst::Pipeline,
    frames: Option<gst_app::AppSink>,
    /// The codec, once the first packet came (shared with the packet callback).
    config: Arc<std::sync::Mutex<Option<Arc<CodecConfig>>>>,
    anchor: Anchor,
    ended: bool,
}

/// What waiting on a session gave.
pub(crate) enum Next<T> {
    Item(T),
    /// Nothing within the timeout.
    Idle,
    /// The end of a file.
    End,
}

impl Session {
    /// Starts reading `source` (a file or an RTSP URL), packets to `packets`, and, with
    /// `decode`, decoded frames (BGR Mats) for [`Session::next_frame`].
    pub(crate) fn open(
        source: &Source,
        opts: PacketOptions,
        packets: PacketTx,
        decode: bool,
    ) -> Result<Self, PacketError> {
        init()?;
        let name = source.display_name();
        let stream_err = |what: String| PacketError::Stream {
            source_name: name.clone(),
            what,
        };
        let make = |factory: &str| {
            gst::ElementFactory::make(factory)
                .build()
                .map_err(|_| PacketError::Missing {
                    source_name: name.clone(),
                    what: factory.to_string(),
                })
        };
        let pipeline = gst::Pipeline::new();
        let src = match source {
            Source::File(path) => {
                if !path.exists() {
                    return Err(stream_err("video file does not exist".into()));
                }
                let src = make("filesrc")?;
                src.set_property("location", path.to_string_lossy().to_string());
                src
            }
            Source::Url(url) if url.starts_with("rtsp://") || url.starts_with("rtsps://") => {
                let src = make("rtspsrc")?;
                src.set_property("location", url);
                src.set_property("latency", 200u32);
                src.set_property_from_str(
                    "protocols",
                    match opts.rtsp_transport {
                        RtspTransport::Tcp => "tcp",
                        RtspTransport::Udp => "udp",
                    },
                );
                src
            }
            other => {
                return Err(PacketError::NotRecordable {
                    source_name: other.display_name(),
                    caps: "not a file or an RTSP stream".into(),
                })
            }
        };
        let parsebin = make("parsebin")?;
        let tee = make("tee")?;
        let packet_queue = make("queue")?;
        let packet_sink = gst_app::AppSink::builder()
            .sync(opts.realtime)
            .max_buffers(64)
            .drop(false)
            .build();
        pipeline
            .add_many([
                &src,
                &parsebin,
                &tee,
                &packet_queue,
                packet_sink.upcast_ref(),
            ])
            .map_err(|e| stream_err(e.to_string()))?;
        gst::Element::link_many([&tee, &packet_queue, packet_sink.upcast_ref()])
            .map_err(|e| stream_err(e.to_string()))?;
        let frames = if decode {
            let queue = make("queue")?;
            let decoder = make("decodebin")?;
            let convert = make("videoconvert")?;
            let filter = make("capsfilter")?;
            filter.set_property(
                "caps",
                gst::Caps::builder("video/x-raw")
                    .field("format", "I420")
                    .build(),
            );
            let sink = gst_app::AppSink::builder()
                .sync(opts.realtime)
                .max_buffers(2)
                .drop(true)
                .build();
            pipeline
                .add_many([&queue, &decoder, &convert, &filter, sink.upcast_ref()])
                .map_err(|e| stream_err(e.to_string()))?;
            gst::Element::link_many([&tee, &queue, &decoder])
                .map_err(|e| stream_err(e.to_string()))?;
            gst::Element::link_many([&convert, &filter, sink.upcast_ref()])
                .map_err(|e| stream_err(e.to_string()))?;
            let convert_weak = convert.downgrade();
            decoder.connect_pad_added(move |_, pad| {
                let Some(convert) = convert_weak.upgrade() else {
                    return;
                };
                if let Some(sinkpad) = convert.static_pad("sink") {
                    if !sinkpad.is_linked() {
                        let _ = pad.link(&sinkpad);
                    }
                }
            });
            Some(sink)
        } else {
            None
        };
        if matches!(source, Source::File(_)) {
            src.link(&parsebin).map_err(|e| stream_err(e.to_string()))?;
        } else {
            // rtspsrc's pads come as the session is set up.
            let parsebin = parsebin.downgrade();
            src.connect_pad_added(move |_, pad| {
                let Some(parsebin) = parsebin.upgrade() else {
                    return;
                };
                if let Some(sinkpad) = parsebin.static_pad("sink") {
                    if !sinkpad.is_linked() {
                        let _ = pad.link(&sinkpad);
                    }
                }
            });
        }
        link_parsed_streams(&pipeline, &parsebin, &tee);
        let config: Arc<std::sync::Mutex<Option<Arc<CodecConfig>>>> = Arc::default();
        packets.send(PacketMsg::Started);
        let anchor = Anchor::default();
        packet_sink.set_callbacks(packet_callbacks(
            name.clone(),
            packets,
            config.clone(),
            (opts.clock, anchor.clone()),
        ));
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| stream_err(format!("cannot start: {e}")))?;
        Ok(Self {
            name,
            pipeline,
            frames,
            config,
            anchor,
            ended: false,
        })
    }

    /// The stream's codec, once its first packet has come.
    pub(crate) fn config(&self) -> Option<Arc<CodecConfig>> {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The next decoded frame, waiting up to `timeout`.
    pub(crate) fn next_frame(
        &mut self,
        timeout: Duration,
    ) -> Result<Next<DecodedFrame>, PacketError> {
        let Some(sink) = self.frames.clone() else {
            return self.wait(timeout).map(|n| match n {
                Next::End => Next::End,
                _ => Next::Idle,
            });
        };
        let deadline = Instant::now() + timeout;
        loop {
            self.check_bus()?;
            if self.ended || sink.is_eos() {
                return Ok(Next::End);
            }
            let slice = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            if let Some(sample) =
                sink.try_pull_sample(gst::ClockTime::from_nseconds(slice.as_nanos() as u64))
            {
                return self.frame(&sample).map(Next::Item);
            }
            if Instant::now() >= deadline {
                return Ok(Next::Idle);
            }
        }
    }

    /// Hands each message of this packet-only session, from `rx` (the receiver of the
    /// `PacketTx` it was opened with), to `f` until the stream ends or `f` returns false. The
    /// end is believed only once the channel has been empty for a moment, so every packet sent
    /// before it is handed on. Returns whether `f` stopped it.
    pub(crate) fn read_to_end(
        self,
        rx: &crossbeam_channel::Receiver<PacketMsg>,
        mut f: impl FnMut(PacketMsg) -> bool,
    ) -> Result<bool, PacketError> {
        let mut session = self;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(msg) => {
                    if !f(msg) {
                        return Ok(true);
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if let Next::End = session.wait(Duration::ZERO)? {
                        break;
                    }
                }
            }
        }
        drop(session);
        for msg in rx.try_iter() {
            if !f(msg) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Waits up to `timeout` for the session to end or fail (a packet-only session: its
    /// packets go to the channel).
    pub(crate) fn wait(&mut self, timeout: Duration) -> Result<Next<()>, PacketError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_bus()?;
            if self.ended {
                return Ok(Next::End);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Next::Idle);
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }

    /// The decoder's I420 picture as a BGR Mat: OpenCV's converter (SIMD, one pass into the
    /// Mat the pipeline keeps) costs less than GStreamer's videoconvert to BGR and a copy.
    fn frame(&self, sample: &gst::Sample) -> Result<DecodedFrame, PacketError> {
        let err = |what: String| PacketError::Stream {
            source_name: self.name.clone(),
            what,
        };
        let caps = sample
            .caps()
            .ok_or_else(|| err("frame without caps".into()))?;
        let s = caps.structure(0).ok_or_else(|| err("empty caps".into()))?;
        let (w, h) = (
            s.get::<i32>("width").unwrap_or(0),
            s.get::<i32>("height").unwrap_or(0),
        );
        if w <= 0 || h <= 0 || w % 2 != 0 || h % 2 != 0 {
            return Err(err(format!("a {w}x{h} picture (I420 needs an even size)")));
        }
        let buffer = sample
            .buffer()
            .ok_or_else(|| err("frame without data".into()))?;
        let map = buffer
            .map_readable()
            .map_err(|e| err(format!("unreadable frame: {e}")))?;
        let data = map.as_slice();
        let (wu, hu) = (w as usize, h as usize);
        // GStreamer's default I420 layout: rows padded to 4 bytes, the planes one after another.
        let (y_stride, c_stride) = ((wu + 3) & !3, (wu / 2 + 3) & !3);
        let (u_at, v_at) = (y_stride * hu, y_stride * hu + c_stride * hu / 2);
        if data.len() < v_at + c_stride * hu / 2 {
            return Err(err(format!("a {w}x{h} frame of {} bytes", data.len())));
        }
        let packed;
        let i420: &[u8] = if y_stride == wu && c_stride == wu / 2 {
            &data[..wu * hu * 3 / 2]
        } else {
            let mut p = Vec::with_capacity(wu * hu * 3 / 2);
            for y in 0..hu {
                p.extend_from_slice(&data[y * y_stride..y * y_stride + wu]);
            }
            for plane in [u_at, v_at] {
                for y in 0..hu / 2 {
                    let at = plane + y * c_stride;
                    p.extend_from_slice(&data[at..at + wu / 2]);
                }
            }
            packed = p;
            &packed
        };
        let src = Mat::new_rows_cols_with_data::<u8>(h * 3 / 2, w, i420)
            .map_err(|e| err(e.to_string()))?;
        let mut mat = Mat::default();
        opencv::imgproc::cvt_color(&src, &mut mat, opencv::imgproc::COLOR_YUV2BGR_I420, 0)
            .map_err(|e| err(e.to_string()))?;
        let ts_ms = sample.buffer().and_then(|b| b.pts()).and_then(|pts| {
            let (stream0, clock0) = (*self.anchor.lock().unwrap_or_else(|p| p.into_inner()))?;
            Some((clock0 + (to90(pts) - stream0)).div_euclid(90))
        });
        Ok(DecodedFrame { mat, ts_ms })
    }

    fn check_bus(&mut self) -> Result<(), PacketError> {
        let Some(bus) = self.pipeline.bus() else {
            return Ok(());
        };
        while let Some(msg) = bus.pop() {
            match msg.view() {
                gst::MessageView::Eos(_) => self.ended = true,
                gst::MessageView::Error(e) => {
                    let mut what = e.error().to_string();
                    if let Some(debug) = e.debug() {
                        if let Some(line) = debug.lines().last() {
                            what = format!("{what} ({})", line.trim());
                        }
                    }
                    if what.contains("missing a plug-in") {
                        return Err(PacketError::Missing {
                            source_name: self.name.clone(),
                            what,
                        });
                    }
                    return Err(PacketError::Stream {
                        source_name: self.name.clone(),
                        what,
                    });
                }
                gst::MessageView::Element(e) => {
                    if let Some(s) = e.structure() {
                        if s.name() == "ocellus-not-recordable" {
                            let caps = s.get::<String>("caps").unwrap_or_default();
                            return Err(PacketError::NotRecordable {
                                source_name: self.name.clone(),
                                caps,
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Pipelines being torn down, for the journal when one never finishes.
static TEARING_DOWN: AtomicU64 = AtomicU64::new(0);

impl Drop for Session {
    /// The pipeline is stopped on a thread of its own: rtspsrc's change to NULL can deadlock
    /// with its own task after the server vanished mid-stream (seen with GStreamer 1.22 under
    /// load: the capture thread stuck in gst_element_change_state, the camera never
    /// reconnecting). A camera must reconnect whatever its old session does; a teardown that
    /// never ends is said in the journal and costs that session's memory, not the camera.
    fn drop(&mut self) {
        let pipeline = self.pipeline.clone();
        let name = self.name.clone();
        let stuck = TEARING_DOWN.fetch_add(1, Ordering::Relaxed);
        if stuck >= 4 {
            tracing::warn!(source = %name, "{stuck} GStreamer sessions are still being torn down");
        }
        let spawned = std::thread::Builder::new()
            .name("gst-teardown".into())
            .spawn(move || {
                let _ = pipeline.set_state(gst::State::Null);
                TEARING_DOWN.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            let _ = self.pipeline.set_state(gst::State::Null);
            TEARING_DOWN.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// parsebin's pads come as it finds the streams: the first H.264/H.265 one is linked through a
/// parser that emits access units with the codec record in the caps, to `tee`; any other video
/// stream is reported (the bus message `ocellus-not-recordable`); audio and the rest go to a
/// fakesink.
fn link_parsed_streams(pipeline: &gst::Pipeline, parsebin: &gst::Element, tee: &gst::Element) {
    let pipe_weak = pipeline.downgrade();
    let tee_weak = tee.downgrade();
    parsebin.connect_pad_added(move |_, pad| {
        let (Some(pipeline), Some(tee)) = (pipe_weak.upgrade(), tee_weak.upgrade()) else {
            return;
        };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let Some(s) = caps.structure(0) else { return };
        let linked = tee.static_pad("sink").is_some_and(|p| p.is_linked());
        let (parser, format) = match s.name().as_str() {
            "video/x-h264" if !linked => {
                ("h264parse", "video/x-h264,stream-format=avc,alignment=au")
            }
            "video/x-h265" if !linked => {
                ("h265parse", "video/x-h265,stream-format=hvc1,alignment=au")
            }
            other => {
                if (other.starts_with("video/") || other.starts_with("image/")) && !linked {
                    not_recordable(&pipeline, other);
                }
                if let Ok(fake) = gst::ElementFactory::make("fakesink").build() {
                    fake.set_property("sync", false);
                    let _ = pipeline.add(&fake);
                    let _ = fake.sync_state_with_parent();
                    if let Some(p) = fake.static_pad("sink") {
                        let _ = pad.link(&p);
                    }
                }
                return;
            }
        };
        let (Ok(parse), Ok(filter)) = (
            gst::ElementFactory::make(parser).build(),
            gst::ElementFactory::make("capsfilter").build(),
        ) else {
            return;
        };
        if let Ok(caps) = format.parse::<gst::Caps>() {
            filter.set_property("caps", caps);
        }
        if pipeline.add_many([&parse, &filter]).is_err()
            || gst::Element::link_many([&parse, &filter, &tee]).is_err()
        {
            return;
        }
        let _ = parse.sync_state_with_parent();
        let _ = filter.sync_state_with_parent();
        if let Some(p) = parse.static_pad("sink") {
            let _ = pad.link(&p);
        }
    });
    // Every stream found and none of them H.264/H.265 (an audio-only file, say).
    let pipe_weak = pipeline.downgrade();
    let tee_weak = tee.downgrade();
    parsebin.connect_no_more_pads(move |_| {
        let (Some(pipeline), Some(tee)) = (pipe_weak.upgrade(), tee_weak.upgrade()) else {
            return;
        };
        if !tee.static_pad("sink").is_some_and(|p| p.is_linked()) {
            not_recordable(&pipeline, "a stream with no H.264 or H.265 video");
        }
    });
}

/// Tells the session's reader (on the bus) that the stream cannot be recorded.
fn not_recordable(pipeline: &gst::Pipeline, caps: &str) {
    let msg = gst::message::Element::builder(
        gst::Structure::builder("ocellus-not-recordable")
            .field("caps", caps)
            .build(),
    )
    .build();
    let _ = pipeline.post_message(msg);
}

/// The packet sink's callback: each parsed access unit, stamped on `clock` (the first
/// packet anchors the stream's own timestamps), to `packets`.
fn packet_callbacks(
    name: String,
    packets: PacketTx,
    config: Arc<std::sync::Mutex<Option<Arc<CodecConfig>>>>,
    (clock, anchor): (PacketClock, Anchor),
) -> gst_app::AppSinkCallbacks {
    let mut current: Option<Arc<CodecConfig>> = None;
    gst_app::AppSinkCallbacks::builder()
        .new_sample(move |sink| {
            let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
            let Some(buffer) = sample.buffer() else {
                return Ok(gst::FlowSuccess::Ok);
            };
            if current.is_none() {
                match codec_config(&name, &sample) {
                    Ok(c) => {
                        let c = Arc::new(c);
                        *config.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
                        current = Some(c);
                    }
                    Err(e) => {
                        tracing::warn!("{e}");
                        return Err(gst::FlowError::NotNegotiated);
                    }
                }
            }
            let Some(pts) = buffer.pts().or(buffer.dts()) else {
                return Ok(gst::FlowSuccess::Ok); // a packet with no time cannot be placed
            };
            let dts = buffer.dts().unwrap_or(pts);
            let (dts, pts) = (to90(dts), to90(pts));
            let (stream0, wall0) = *anchor
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(|| match clock {
                    PacketClock::Wall => (dts, crate::base::clock::now_ms() * 90),
                    // The first picture (the first packet is a key frame: parsebin waits for one)
                    // shows at 0.
                    PacketClock::Stream => (dts, dts - pts),
                });
            let Ok(data) = buffer.map_readable() else {
                return Ok(gst::FlowSuccess::Ok);
            };
            let packet = Packet {
                dts90: wall0 + (dts - stream0),
                cto: (pts - dts).clamp(i32::MIN as i64, i32::MAX as i64) as i32,
                key: !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT),
                data: Bytes::copy_from_slice(data.as_slice()),
            };
            if let Some(c) = &current {
                packets.send(PacketMsg::Packet(packet, c.clone()));
            }
            Ok(gst::FlowSuccess::Ok)
        })
        .build()
}

fn codec_config(name: &str, sample: &gst::Sample) -> Result<CodecConfig, PacketError> {
    let err = |what: &str| PacketError::Stream {
        source_name: name.to_string(),
        what: what.to_string(),
    };
    let caps = sample.caps().ok_or_else(|| err("packets without caps"))?;
    let s = caps.structure(0).ok_or_else(|| err("empty caps"))?;
    let codec = match s.name().as_str() {
        "video/x-h264" => Codec::H264,
        "video/x-h265" => Codec::H265,
        other => {
            return Err(PacketError::NotRecordable {
                source_name: name.to_string(),
                caps: other.to_string(),
            })
        }
    };
    let record = s
        .get::<gst::Buffer>("codec_data")
        .map_err(|_| err("the stream's parameter sets (codec_data) are missing"))?;
    let record = record
        .map_readable()
        .map_err(|_| err("unreadable codec_data"))?;
    Ok(CodecConfig {
        codec,
        width: s.get::<i32>("width").unwrap_or(0).clamp(0, u16::MAX as i32) as u16,
        height: s
            .get::<i32>("height")
            .unwrap_or(0)
            .clamp(0, u16::MAX as i32) as u16,
        record: Bytes::copy_from_slice(record.as_slice()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::prelude::*;

    /// An H.264 file of the sample clip's first 12 frames, a key frame every 5 (ffmpeg, as
    /// setup installs it), with `bframes` B-frames at most in a row.
    fn h264_clip(dir: &std::path::Path, bframes: u32) -> std::path::PathBuf {
        let out = dir.join("clip.mp4");
        let vtest = concat!(env!("CARGO_MANIFEST_DIR"), "/media/vtest.avi");
        let status = std::process::Command::new("ffmpeg")
            .args(["-loglevel", "error", "-y", "-i", vtest, "-frames:v", "12"])
            .args(["-c:v", "libx264", "-g", "5", "-bf", &bframes.to_string()])
            .args(["-pix_fmt", "yuv420p"])
            .arg(&out)
            .status()
            .expect("ffmpeg (scripts/setup.sh installs it)");
        assert!(status.success());
        out
    }

    /// One session gives both: every packet (the key frames flagged, the codec record in the
    /// first) and decoded frames equal to OpenCV's decode of the same file.
    #[test]
    fn one_session_gives_the_packets_and_frames_that_match_opencvs() {
        let dir = tempfile::tempdir().unwrap();
        let clip = h264_clip(dir.path(), 0);
        let (tx, rx) = PacketTx::bounded(64);
        let opts = PacketOptions {
            rtsp_transport: RtspTransport::Tcp,
            realtime: false,
            clock: PacketClock::Wall,
        };
        let mut session = Session::open(&Source::File(clip.clone()), opts, tx, true).unwrap();
        let mut frames = Vec::new();
        loop {
            match session.next_frame(Duration::from_secs(10)).unwrap() {
                Next::Item(f) => frames.push((f.ts_ms, f.mat)),
                Next::End => break,
                Next::Idle => panic!("no frame within 10 s"),
            }
        }
        drop(session);
        let msgs: Vec<PacketMsg> = rx.try_iter().collect();
        assert!(matches!(msgs[0], PacketMsg::Started));
        let packets: Vec<(Packet, Arc<CodecConfig>)> = msgs
            .into_iter()
            .filter_map(|m| match m {
                PacketMsg::Packet(p, c) => Some((p, c)),
                _ => None,
            })
            .collect();
        assert_eq!(packets.len(), 12);
        let keys: Vec<usize> = (0..12).filter(|i| packets[*i].0.key).collect();
        assert_eq!(keys, vec![0, 5, 10]);
        let config = &packets[0].1;
        assert_eq!(
            (config.codec, config.width, config.height),
            (Codec::H264, 768, 576)
        );
        // 10 fps: 100 ms apart on the stream's clock.
        assert_eq!(packets[1].0.dts90 - packets[0].0.dts90, 9000);

        let mut cap = opencv::videoio::VideoCapture::from_file(
            clip.to_str().unwrap(),
            opencv::videoio::CAP_FFMPEG,
        )
        .unwrap();
        let mut decoded = Vec::new();
        let mut m = Mat::default();
        while cap.read(&mut m).unwrap() {
            decoded.push(m.clone());
        }
        // The decode branch keeps the newest frames for a live reader (a small appsink that
        // drops): a test thread starved of the CPU may lose one. Each frame is matched to
        // OpenCV's by its time on the stream (100 ms apart from the first packet's: no
        // B-frames, so a picture's time is its packet's), not by its place in the list.
        assert!(frames.len() >= 11, "{} frames", frames.len());
        let first = packets[0].0.wall_ms();
        for (n, (ts, ours)) in frames.iter().enumerate() {
            // A picture decoded before the packet branch saw its first packet has no time yet:
            // only the leading ones can, and they are in order.
            let i = match ts {
                Some(ts) => ((ts - first) as f64 / 100.0).round() as usize,
                None => {
                    assert!(
                        frames[..n].iter().all(|(t, _)| t.is_none()),
                        "frame {n}: no time"
                    );
                    n
                }
            };
            let theirs = decoded
                .get(i)
                .unwrap_or_else(|| panic!("OpenCV ran out at {i}"));
            assert_eq!((ours.cols(), ours.rows()), (768, 576));
            let diff = opencv::core::norm2(ours, theirs, opencv::core::NORM_L1, &Mat::default())
                .unwrap()
                / (768.0 * 576.0 * 3.0);
            assert!(
                diff < 4.0,
                "frame {i}: mean difference {diff:.2} per channel"
            );
        }
    }

    /// Replay's session: on the stream clock the first picture shows at 0 and the rest at the
    /// file's frame times (B-frames reorder them), and a lossless channel far smaller than the
    /// file loses nothing: the stream waits for its reader.
    #[test]
    fn on_the_stream_clock_pictures_show_at_the_frame_times_and_nothing_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let clip = h264_clip(dir.path(), 2);
        let (tx, rx) = PacketTx::lossless(2);
        let dropped = tx.dropped.clone();
        let opts = PacketOptions {
            rtsp_transport: RtspTransport::Tcp,
            realtime: false,
            clock: PacketClock::Stream,
        };
        let session = Session::open(&Source::File(clip), opts, tx, false).unwrap();
        let mut packets = Vec::new();
        session
            .read_to_end(&rx, |m| {
                if let PacketMsg::Packet(p, _) = m {
                    packets.push(p);
                }
                true
            })
            .unwrap();
        assert_eq!(packets.len(), 12, "every picture of the file");
        assert_eq!(dropped.load(Ordering::Relaxed), 0);
        assert!(packets.iter().any(|p| p.cto != 0), "the clip has B-frames");
        let mut shown: Vec<i64> = packets.iter().map(|p| p.dts90 + i64::from(p.cto)).collect();
        shown.sort_unstable();
        assert_eq!(shown, (0..12).map(|i| i * 9000).collect::<Vec<i64>>());
    }
}
