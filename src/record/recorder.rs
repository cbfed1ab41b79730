//! A camera's recorder thread: it reads the camera's packet stream, keeps the pre-roll, and
//! writes segments while the camera's mode wants them (always, or from an event's pre-roll to
//! its post-roll), reconnecting with backoff and pausing loudly when the disk is full.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::ring::PreRoll;
use super::segment::{SegmentWriter, WriteError};
use super::{Recordings, Trigger};
use crate::capture::live::{backoff, RecordingStatus, SourceState};
use crate::capture::packets::{
    CodecConfig, Next, Packet, PacketError, PacketMsg, PacketOptions, PacketTx, Session,
};
use crate::capture::{sleep_unless_cancelled, Source};

/// A segment is closed at the first key frame after this long, so that retention can free
/// space a minute at a time and a crash-repair reads little.
const SEGMENT_MS: i64 = 60_000;
/// The pre-roll ring keeps this much more than `pre_s`: an event is declared only after its
/// object was seen for a while, and its clip starts `pre_s` before it was first seen.
const DECLARE_LAG_MS: i64 = 10_000;
/// The ring's bound whatever the bitrate.
const RING_MAX_BYTES: usize = 64 << 20;
/// After a write fails, recording is tried again this much later.
const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// What a camera records, from its config.
#[derive(Clone, Debug)]
pub(crate) struct RecorderSettings {
    pub(crate) camera: String,
    /// `record_source`: a stream of the recorder's own; `None`: the capture session's.
    pub(crate) own_source: Option<Source>,
    pub(crate) options: PacketOptions,
    /// The mode was set in the config (not `auto`): a stream that cannot be recorded is an
    /// error, not a quiet `off`.
    pub(crate) explicit: bool,
    pub(crate) continuous: bool,
    pub(crate) pre_ms: i64,
    pub(crate) post_ms: i64,
    pub(crate) open_timeout: Duration,
    pub(crate) read_timeout: Duration,
}

impl RecorderSettings {
    fn mode(&self) -> &'static str {
        if self.continuous {
            "continuous"
        } else {
            "events"
        }
    }
}

struct Recorder {
    settings: RecorderSettings,
    store: Arc<Recordings>,
    trigger: Arc<Trigger>,
    state: Arc<SourceState>,
    ring: PreRoll,
    segment: Option<SegmentWriter>,
    /// The decode time of the newest packet written to any segment: a new segment never
    /// repeats what an earlier one holds.
    written_until90: i64,
    paused_until: Option<Instant>,
    status: RecordingStatus,
}

impl Recorder {
    /// A recorder waiting for its stream ("connecting" in the camera's state).
    fn new(
        settings: RecorderSettings,
        store: Arc<Recordings>,
        trigger: Arc<Trigger>,
        state: Arc<SourceState>,
    ) -> Self {
        let status = RecordingStatus {
            mode: settings.mode().to_string(),
            state: "connecting".into(),
            error: None,
            codec: None,
            width: 0,
            height: 0,
        };
        state.set_recording(status.clone());
        Recorder {
            ring: PreRoll::new(settings.pre_ms + DECLARE_LAG_MS, RING_MAX_BYTES),
            settings,
            store,
            trigger,
            state,
            segment: None,
            written_until90: i64::MIN,
            paused_until: None,
            status,
        }
    }

    fn publish(&mut self, state: &str, error: Option<String>) {
        if self.status.state == state && self.status.error == error {
            return;
        }
        self.status.state = state.to_string();
        self.status.error = error;
        self.state.set_recording(self.status.clone());
    }

    fn on_packet(&mut self, p: Packet, config: &CodecConfig) {
        if self.status.codec.is_none() {
            self.status.codec = Some(config.codec_string());
            self.status.width = config.width as u32;
            self.status.height = config.height as u32;
            self.state.set_recording(self.status.clone());
        }
        self.ring.push(p.clone());
        let want =
            self.settings.continuous || self.trigger.wants(p.wall_ms(), self.settings.post_ms);
        if let Some(seg) = &self.segment {
            let rotate = p.key
                && (seg.span_ms() >= SEGMENT_MS
                    || seg.row().bytes >= self.store.segment_max_bytes());
            if !want || seg.config() != config || rotate {
                self.close_segment();
            }
        }
        if !want {
            if self.status.state == "recording" {
                self.publish("idle", None);
            }
            return;
        }
        if self.segment.is_some() {
            self.write(p);
            return;
        }
        if self.paused_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        // Open a segment from the pre-roll: its first key frame not yet written, onwards.
        let fresh: Vec<Packet> = self
            .ring
            .packets()
            .skip_while(|q| q.dts90 <= self.written_until90 || !q.key)
            .cloned()
            .collect();
        let Some(first) = fresh.first() else { return };
        let init_len = super::mp4::init_segment(config).len() as u64;
        if let Err(e) = self.store.make_room(init_len) {
            self.failed(WriteError::NoRoom(e));
            return;
        }
        match SegmentWriter::create(self.store.dir(), &self.settings.camera, first, config) {
            Ok(seg) => {
                if self.paused_until.is_some() {
                    tracing::info!(camera = %self.settings.camera, "recording resumed");
                }
                self.store.update(seg.row());
                self.segment = Some(seg);
                self.paused_until = None;
                self.publish("recording", None);
                for q in fresh {
                    if self.segment.is_none() {
                        break;
                    }
                    self.write(q);
                }
            }
            Err(e) => self.failed(e),
        }
    }

    fn write(&mut self, p: Packet) {
        let Some(seg) = &mut self.segment else { return };
        let dts = p.dts90;
        let store = &self.store;
        match seg.push(p, &mut |n| store.make_room(n)) {
            Ok(wrote) => {
                self.written_until90 = self.written_until90.max(dts);
                if wrote {
                    store.update(seg.row());
                }
            }
            Err(e) => {
                self.close_segment();
                self.failed(e);
            }
        }
    }

    fn failed(&mut self, e: WriteError) {
        let what = e.to_string();
        if self.status.error.as_deref() != Some(what.as_str()) {
            tracing::error!(camera = %self.settings.camera, "recording stopped: {what}; detection and events go on, recording resumes when there is room");
        }
        self.paused_until = Some(Instant::now() + PAUSE_AFTER_FAILURE);
        self.publish("error", Some(what));
    }

    fn close_segment(&mut self) {
        let Some(seg) = self.segment.take() else {
            return;
        };
        let store = &self.store;
        let (row, err) = seg.finish(&mut |n| store.make_room(n));
        store.update(&row);
        tracing::debug!(camera = %row.camera, "recording {} closed: {} ms, {} bytes", row.path, row.end_ms - row.start_ms, row.bytes);
        if let Some(e) = err {
            self.failed(e);
        }
    }
}

/// Where a recorder's packets come from.
pub(crate) enum Input {
    /// A stream of its own (`record_source`), opened and reopened by the recorder.
    Own(Source, PacketOptions),
    /// The camera's capture session, which decodes the same stream for detection.
    Shared(crossbeam_channel::Receiver<PacketMsg>),
}

/// Packets in flight between a session and its recorder: about 10 s of a 25 fps stream.
pub(crate) const PACKET_CHANNEL: usize = 256;

/// The recorder thread's body: runs until `cancel` (or, on a shared input, until the capture
/// session's sender is gone).
pub(crate) fn run_recorder(
    settings: RecorderSettings,
    input: Input,
    store: Arc<Recordings>,
    trigger: Arc<Trigger>,
    state: Arc<SourceState>,
    cancel: CancellationToken,
) {
    let mut rec = Recorder::new(settings, store, trigger, state);
    match input {
        Input::Shared(rx) => {
            while !cancel.is_cancelled() {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(msg) => rec.on_msg(msg),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        Input::Own(source, options) => rec.run_own(&source, options, &cancel),
    }
    rec.close_segment();
}

impl Recorder {
    fn on_msg(&mut self, msg: PacketMsg) {
        match msg {
            PacketMsg::Started => {
                // A new session is a new clock: what was kept belongs to the old one.
                self.close_segment();
                self.ring.clear();
            }
            PacketMsg::Unrecordable(why) => {
                self.trigger.set_unrecordable();
                if self.settings.explicit {
                    tracing::error!(camera = %self.settings.camera, "recording is off: {why}");
                    self.publish("error", Some(why));
                } else {
                    tracing::info!(camera = %self.settings.camera, "camera {} does not record: {why}", self.settings.camera);
                    self.status.mode = "off".into();
                    self.publish("off", Some(why));
                }
            }
            PacketMsg::Packet(p, config) => {
                if self.status.state == "connecting"
                    || self.status.state == "error" && self.paused_until.is_none()
                {
                    self.publish("idle", None);
                }
                self.on_packet(p, &config);
            }
        }
    }

    /// Keeps a session of its own open on `source`, reconnecting with backoff.
    fn run_own(&mut self, source: &Source, options: PacketOptions, cancel: &CancellationToken) {
        let name = source.display_name();
        let mut attempt = 0u32;
        while !cancel.is_cancelled() {
            let (tx, rx) = PacketTx::bounded(PACKET_CHANNEL);
            let error = match Session::open(source, options, tx, false) {
                Err(e) => Some(e),
                Ok(mut session) => {
                    let mut last = Instant::now();
                    let mut timeout = self.settings.open_timeout;
                    loop {
                        if cancel.is_cancelled() {
                            break None;
                        }
                        match session.wait(Duration::ZERO) {
                            Err(e) => break Some(e),
                            Ok(Next::End) => break None,
                            Ok(_) => {}
                        }
                        match rx.recv_timeout(Duration::from_millis(100)) {
                            Ok(msg) => {
                                if matches!(msg, PacketMsg::Packet(..)) {
                                    last = Instant::now();
                                    timeout = self.settings.read_timeout;
                                    attempt = 0;
                                }
                                self.on_msg(msg);
                            }
                            Err(_) if last.elapsed() > timeout => {
                                break Some(PacketError::Stream {
                                    source_name: name.clone(),
                                    what: format!("no packet for {} s", timeout.as_secs()),
                                })
                            }
                            Err(_) => {}
                        }
                    }
                }
            };
            let Some(e) = error else { continue };
            let what = e.to_string();
            if e.is_permanent() {
                self.on_msg(PacketMsg::Unrecordable(what));
                // Nothing to record on this stream: wait for the stop.
                while sleep_unless_cancelled(Duration::from_secs(1), cancel) {}
                return;
            }
            let wait = backoff(attempt);
            attempt = attempt.saturating_add(1);
            tracing::warn!(camera = %self.settings.camera, source = %name, "recording stream lost, retrying in {} ms: {what}", wait.as_millis());
            self.publish("error", Some(what));
            if !sleep_unless_cancelled(wait, cancel) {
                return;
            }
        }
    }
}

/// Records a whole file on the stream clock, as fast as it is read and losing nothing: the
/// recorder of `ocellus replay --record`. `before` is called with each packet's time (ms)
/// before the packet is handled (replay opens and ends its events there). Returns the
/// recording's last status (an `error` state says why it stopped).
pub(crate) fn record_file(
    settings: RecorderSettings,
    source: &Source,
    store: Arc<Recordings>,
    trigger: Arc<Trigger>,
    mut before: impl FnMut(i64),
) -> Result<RecordingStatus, PacketError> {
    let state = Arc::new(SourceState::new(&settings.camera, &source.display_name()));
    let mut rec = Recorder::new(settings, store, trigger, state);
    let (tx, rx) = PacketTx::lossless(PACKET_CHANNEL);
    let session = Session::open(source, rec.settings.options, tx, false)?;
    session.read_to_end(&rx, |msg| {
        if let PacketMsg::Packet(p, _) = &msg {
            before(p.wall_ms());
        }
        rec.on_msg(msg);
        true
    })?;
    rec.close_segment();
    Ok(rec.status)
}

/// Starts a camera's recorder on a thread named `rec-<camera>`.
pub(crate) fn spawn_recorder(
    settings: RecorderSettings,
    input: Input,
    store: Arc<Recordings>,
    trigger: Arc<Trigger>,
    state: Arc<SourceState>,
    cancel: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("rec-{}", settings.camera))
        .spawn(move || run_recorder(settings, input, store, trigger, state, cancel))
}
