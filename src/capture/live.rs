//! Live capture: a camera thread that keeps its source open (reopening with capped exponential
//! backoff), publishes its state, and hands each frame to the live stream and, through a
//! one-frame slot where the newest frame wins, to detection.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use opencv::core::Mat;
use opencv::prelude::*;
use opencv::videoio;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::packets::{Next, PacketClock, PacketMsg, PacketOptions, PacketTx, Session};
use super::{sleep_unless_cancelled, Frame, Source, SourceOptions};
use crate::base::clock::now_ms;
use crate::telemetry::metrics::{inc, CameraStats};

/// Holds at most one frame. Capture puts (replacing an unread frame, which counts as skipped);
/// detection takes. This is what keeps live latency low: a busy detector never sees a backlog.
#[derive(Default)]
pub(crate) struct FrameSlot {
    frame: Mutex<Option<Arc<Frame>>>,
    ready: Condvar,
}

impl FrameSlot {
    /// Stores `frame`; returns true when it replaced one that was never taken.
    pub(crate) fn put(&self, frame: Arc<Frame>) -> bool {
        let mut slot = self.frame.lock().unwrap_or_else(|p| p.into_inner());
        let replaced = slot.replace(frame).is_some();
        self.ready.notify_one();
        replaced
    }

    /// Waits up to `timeout` for a frame.
    pub(crate) fn take(&self, timeout: Duration) -> Option<Arc<Frame>> {
        let slot = self.frame.lock().unwrap_or_else(|p| p.into_inner());
        let (mut slot, _) = self
            .ready
            .wait_timeout_while(slot, timeout, |f| f.is_none())
            .unwrap_or_else(|p| p.into_inner());
        slot.take()
    }
}

/// Connection state of a source, as shown in stats, the API and the dashboard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceStatus {
    Connecting,
    Connected,
    Retrying,
    Stopped,
}

impl SourceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceStatus::Connecting => "connecting",
            SourceStatus::Connected => "connected",
            SourceStatus::Retrying => "retrying",
            SourceStatus::Stopped => "stopped",
        }
    }
}

/// A camera's identity and connection state, as in `hello`, `GET /api/cameras` and `stats`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CameraStatus {
    pub id: String,
    pub name: String,
    /// `connecting`, `connected`, `retrying` or `stopped`.
    pub state: SourceStatus,
    pub last_error: Option<String>,
    /// Since when (Unix ms) the camera is in `state`.
    pub since_ms: i64,
    pub width: u32,
    pub height: u32,
    /// What the camera records, when it records (docs/recording.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingStatus>,
}

/// A camera's recorder, as `GET /api/cameras` and the dashboard show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordingStatus {
    /// `events` or `continuous`.
    pub mode: String,
    /// `connecting`, `idle` (waiting for an event), `recording`, or `error`.
    pub state: String,
    /// Why it does not record, while `state` is `error`: a full disk, a stream it cannot record.
    pub error: Option<String>,
    /// The recorded stream's codec (`avc1.64001f`) and size, once known.
    pub codec: Option<String>,
    pub width: u32,
    pub height: u32,
}

#[derive(Clone, Debug)]
struct StateInner {
    status: SourceStatus,
    last_error: Option<String>,
    since_ms: i64,
    width: u32,
    height: u32,
    retries: u64,
}

/// A camera's source state, written by its capture thread, read by anyone.
pub struct SourceState {
    pub id: String,
    pub name: String,
    inner: Mutex<StateInner>,
    /// Written by the camera's recorder, when it has one.
    recording: Mutex<Option<RecordingStatus>>,
}

impl SourceState {
    pub fn new(id: &str, name: &str) -> Self {
        Self {
            id: id.to_string(),
            name: name.to_string(),
            inner: Mutex::new(StateInner {
                status: SourceStatus::Connecting,
                last_error: None,
                since_ms: now_ms(),
                width: 0,
                height: 0,
                retries: 0,
            }),
            recording: Mutex::new(None),
        }
    }

    /// The recorder's state, as it changes.
    pub fn set_recording(&self, status: RecordingStatus) {
        *self.recording.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StateInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, status: SourceStatus, error: Option<String>) {
        let mut s = self.lock();
        if s.status != status {
            s.since_ms = now_ms();
        }
        s.status = status;
        if status == SourceStatus::Retrying {
            s.retries += 1;
        }
        if error.is_some() {
            s.last_error = error;
        }
    }

    pub fn status(&self) -> SourceStatus {
        self.lock().status
    }

    /// How many times the source failed and was retried.
    pub fn retries(&self) -> u64 {
        self.lock().retries
    }

    /// Identity and connection state now.
    pub fn current(&self) -> CameraStatus {
        let s = self.lock();
        CameraStatus {
            id: self.id.clone(),
            name: self.name.clone(),
            state: s.status,
            last_error: s.last_error.clone(),
            since_ms: s.since_ms,
            width: s.width,
            height: s.height,
            recording: self
                .recording
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// Reopen delays: 0.5 s doubling to 30 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(6)).min(30_000))
}

/// A wait as a person reads it: "500 ms", "4 s".
fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs())
    }
}

/// Says that the camera is retrying after `error` (`lost`: it had delivered frames) and waits
/// the backoff of `attempt`, counting it; false when `cancel` came meanwhile.
fn wait_to_retry(
    state: &SourceState,
    name: &str,
    error: &str,
    lost: bool,
    attempt: &mut u32,
    cancel: &CancellationToken,
) -> bool {
    let wait = backoff(*attempt);
    let lost = if lost { " lost," } else { "" };
    tracing::warn!(camera = %state.id, source = %name, error = %error, state = "retrying", "camera {}{lost} retrying in {}: {error}", state.id, seconds(wait));
    state.set(SourceStatus::Retrying, Some(error.to_string()));
    if !sleep_unless_cancelled(wait, cancel) {
        return false;
    }
    *attempt = attempt.saturating_add(1);
    true
}

/// Paces a file source at its frame rate.
struct Pacer {
    every: Duration,
    next_due: Instant,
}

impl Pacer {
    fn new(fps: f64) -> Self {
        Self {
            every: Duration::from_secs_f64(1.0 / fps),
            next_due: Instant::now(),
        }
    }

    /// Waits until the next frame is due; false when `cancel` came meanwhile.
    fn wait(&mut self, cancel: &CancellationToken) -> bool {
        self.next_due += self.every;
        let now = Instant::now();
        if self.next_due > now {
            return sleep_unless_cancelled(self.next_due - now, cancel);
        }
        if now - self.next_due > Duration::from_secs(1) {
            // Far behind (the machine was suspended, say): do not race to catch up.
            self.next_due = now;
        }
        true
    }
}

/// A source opened for frames: through OpenCV, or through a GStreamer session that hands the
/// same stream's packets to the recorder (one session per camera stream).
enum Reader {
    OpenCv(videoio::VideoCapture),
    Gst(Session),
}

/// What reading a frame gave.
enum Read {
    /// A picture, with its time on the packets' clock when it has one.
    Frame(Mat, Option<i64>),
    /// The end of a file.
    End,
    /// A failure (a timeout among them), said as the log and the camera's state say it.
    Failed(String),
    /// The GStreamer session cannot serve this stream (not H.264/H.265, a missing element):
    /// OpenCV reads it from now on.
    Refused(String),
}

impl Reader {
    fn fps(&self) -> Option<f64> {
        match self {
            Reader::OpenCv(cap) => cap
                .get(videoio::CAP_PROP_FPS)
                .ok()
                .filter(|f| *f > 0.0 && f.is_finite()),
            Reader::Gst(_) => None,
        }
    }

    fn codec(&self) -> String {
        match self {
            Reader::OpenCv(cap) => crate::capture::rtsp::codec(cap),
            Reader::Gst(s) => s
                .config()
                .map_or_else(|| "no H.264/H.265 packet yet".into(), |c| c.codec_string()),
        }
    }

    fn read(&mut self, timeout: Duration) -> Read {
        match self {
            Reader::OpenCv(cap) => {
                let mut mat = Mat::default();
                if cap.read(&mut mat).unwrap_or(false) && !mat.empty() {
                    Read::Frame(mat, None)
                } else {
                    Read::End
                }
            }
            Reader::Gst(session) => match session.next_frame(timeout) {
                Ok(Next::Item(f)) => Read::Frame(f.mat, f.ts_ms),
                Ok(Next::End) => Read::End,
                Ok(Next::Idle) => Read::Failed(String::new()),
                Err(e) if e.is_permanent() => Read::Refused(e.to_string()),
                Err(e) => Read::Failed(e.to_string()),
            },
        }
    }
}

/// Opens `source` for frames: with `tee` (the camera records this same stream) as one
/// GStreamer session whose packets go to the recorder, unless GStreamer refused the stream
/// before; otherwise through OpenCV.
fn open_reader(
    source: &Source,
    opts: &SourceOptions,
    tee: Option<&PacketTx>,
) -> Result<Reader, String> {
    let Some(tee) = tee else {
        return source
            .open(opts)
            .map(Reader::OpenCv)
            .map_err(|e| e.to_string());
    };
    if let Source::Url(u) = source {
        crate::capture::rtsp::preflight(u, opts.open_timeout).map_err(|e| e.to_string())?;
    }
    let options = PacketOptions {
        rtsp_transport: opts.rtsp_transport,
        realtime: matches!(source, Source::File(_)),
        clock: PacketClock::Wall,
    };
    Session::open(source, options, tee.clone(), true)
        .map(Reader::Gst)
        .map_err(|e| e.to_string())
}

/// The capture thread's body: runs until `cancel`. Files loop forever, paced at their fps;
/// other sources are read as fast as they deliver. Frames are stamped with the wall clock and
/// given to `live` (the live stream, which must not block) before they go into `slot`: the
/// stream shows every frame at once and at the camera's rate, not at the detector's. With
/// `tee`, the camera records this stream: it is read through one GStreamer session whose
/// packets go to the recorder too.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_capture(
    source: Source,
    opts: SourceOptions,
    slot: Arc<FrameSlot>,
    state: Arc<SourceState>,
    stats: Arc<CameraStats>,
    cancel: CancellationToken,
    mut tee: Option<PacketTx>,
    mut live: impl FnMut(&Arc<Frame>),
) {
    if !source.carries_packets() {
        tee = None;
    }
    let mut attempt = 0u32;
    let mut seq = 0u64;
    let name = source.display_name();
    while !cancel.is_cancelled() {
        state.set(SourceStatus::Connecting, None);
        let mut reader = match open_reader(&source, &opts, tee.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                if !wait_to_retry(&state, &name, &e, false, &mut attempt, &cancel) {
                    break;
                }
                continue;
            }
        };
        let file_fps = match source {
            Source::File(_) => reader.fps(),
            _ => None,
        };
        let mut pacer = file_fps.map(Pacer::new);
        let mut frames_this_open = 0u64;
        let error = loop {
            if cancel.is_cancelled() {
                break None;
            }
            let t0 = Instant::now();
            let timeout = if frames_this_open == 0 {
                opts.open_timeout
            } else {
                opts.read_timeout
            };
            let (mat, ts) = match reader.read(timeout) {
                Read::Frame(mat, ts) => (mat, ts),
                Read::Refused(why) => {
                    // Recording cannot use this stream; detection goes on through OpenCV.
                    if let Some(tx) = tee.take() {
                        tx.send(PacketMsg::Unrecordable(why));
                    }
                    match source.open(&opts) {
                        Ok(cap) => {
                            reader = Reader::OpenCv(cap);
                            pacer = match source {
                                Source::File(_) => reader.fps().map(Pacer::new),
                                _ => None,
                            };
                            continue;
                        }
                        Err(e) => break Some(e.to_string()),
                    }
                }
                Read::End if matches!(source, Source::File(_)) && frames_this_open > 0 => {
                    // End of a file source: loop it.
                    let rewound = match &mut reader {
                        Reader::OpenCv(cap) => {
                            cap.set(videoio::CAP_PROP_POS_FRAMES, 0.0).unwrap_or(false)
                        }
                        Reader::Gst(_) => match open_reader(&source, &opts, tee.as_ref()) {
                            Ok(r) => {
                                reader = r;
                                true
                            }
                            Err(_) => false,
                        },
                    };
                    if rewound {
                        frames_this_open = 0;
                        continue;
                    }
                    break Some(read_failure(
                        &source,
                        &opts,
                        &reader.codec(),
                        frames_this_open,
                    ));
                }
                Read::End => {
                    break Some(read_failure(
                        &source,
                        &opts,
                        &reader.codec(),
                        frames_this_open,
                    ))
                }
                Read::Failed(why) if why.is_empty() => {
                    break Some(read_failure(
                        &source,
                        &opts,
                        &reader.codec(),
                        frames_this_open,
                    ))
                }
                Read::Failed(why) => break Some(why),
            };
            stats.decode.add(t0.elapsed());
            if frames_this_open == 0 {
                attempt = 0;
                first_frame(&state, reader.fps(), &mat, &name);
            }
            frames_this_open += 1;
            inc(&stats.captured);
            // On the packets' clock when the frame came through GStreamer: the live video's
            // pictures and the recordings carry the same times as the frame's detections.
            let frame = Arc::new(Frame {
                seq,
                ts_ms: ts.unwrap_or_else(now_ms),
                mat,
            });
            live(&frame);
            if slot.put(frame) {
                inc(&stats.skipped);
            }
            seq += 1;
            if let Some(pacer) = &mut pacer {
                if !pacer.wait(&cancel) {
                    break None;
                }
            }
        };
        let Some(error) = error else { break };
        if !wait_to_retry(&state, &name, &error, true, &mut attempt, &cancel) {
            break;
        }
    }
    state.set(SourceStatus::Stopped, None);
}

/// What a failed read means, for the log and the camera's state: the first read after an open
/// and a later one fail for different reasons, and a network source says which.
fn read_failure(
    source: &Source,
    opts: &SourceOptions,
    codec: &str,
    frames_this_open: u64,
) -> String {
    match (source, frames_this_open) {
        (Source::Url(url), 0) => format!(
            "connected, but no decodable frame within {} s ({codec}){}",
            opts.read_timeout.as_secs(),
            if url.starts_with("rtsp") {
                format!(
                    "; try rtsp_transport = \"{}\"",
                    opts.rtsp_transport.other().as_str()
                )
            } else {
                String::new()
            }
        ),
        (Source::Url(_), _) => format!(
            "stream stalled: no frame for {} s, or the camera closed it",
            opts.read_timeout.as_secs()
        ),
        (_, 0) => "opened, but no frame could be read".to_string(),
        _ => "stream ended or stopped delivering frames".to_string(),
    }
}

/// The first frame after an open: the camera's size, and `connected` (said once per
/// connection, not on every loop of a file).
fn first_frame(state: &SourceState, fps: Option<f64>, mat: &Mat, name: &str) {
    {
        let mut s = state.lock();
        s.width = mat.cols() as u32;
        s.height = mat.rows() as u32;
    }
    if state.status() != SourceStatus::Connected {
        let rate = match fps {
            Some(fps) => format!(" @ {fps:.0} fps"),
            None => String::new(),
        };
        tracing::info!(camera = %state.id, source = %name, state = "connected", "camera {} connected ({}x{}{rate})", state.id, mat.cols(), mat.rows());
    }
    state.set(SourceStatus::Connected, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_millis(1000));
        assert_eq!(backoff(5), Duration::from_millis(16000));
        assert_eq!(backoff(6), Duration::from_millis(30000));
        assert_eq!(backoff(60), Duration::from_millis(30000));
    }

    #[test]
    fn slot_keeps_only_the_newest_frame_and_counts_replacements() {
        let slot = FrameSlot::default();
        let frame = |seq| {
            Arc::new(Frame {
                seq,
                ts_ms: 0,
                mat: Mat::default(),
            })
        };
        assert!(!slot.put(frame(1)));
        assert!(slot.put(frame(2)));
        assert_eq!(slot.take(Duration::ZERO).map(|f| f.seq), Some(2));
        assert!(slot.take(Duration::from_millis(1)).is_none());
    }

    #[test]
    fn unreachable_source_is_retried_with_its_error_visible() {
        let state = Arc::new(SourceState::new("gone", "Gone"));
        let cancel = CancellationToken::new();
        let handle = {
            let (state, cancel) = (state.clone(), cancel.clone());
            std::thread::spawn(move || {
                run_capture(
                    Source::parse("/nonexistent/clip.avi"),
                    SourceOptions::default(),
                    Arc::new(FrameSlot::default()),
                    state,
                    Arc::new(CameraStats::default()),
                    cancel,
                    None,
                    |_| {},
                )
            })
        };
        // The first attempt fails at once; wait for the state to say so.
        let deadline = Instant::now() + Duration::from_secs(10);
        while state.retries() == 0 {
            assert!(Instant::now() < deadline, "never retried");
            std::thread::yield_now();
        }
        let now = state.current();
        assert_eq!(now.state, SourceStatus::Retrying);
        assert!(now.last_error.unwrap().contains("does not exist"));
        cancel.cancel();
        handle.join().unwrap();
        assert_eq!(state.status(), SourceStatus::Stopped);
    }
}
