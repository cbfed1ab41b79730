//! Frame capture through OpenCV `VideoCapture`: which backend a source string means, and the one
//! way to open it, with a clear error. live.rs keeps a camera open and feeds the daemon;
//! reader.rs reads a recording for replay; rtsp.rs asks an RTSP camera before FFmpeg does.

pub(crate) mod live;
pub(crate) mod packets;
mod reader;
pub(crate) mod rtsp;

pub(crate) use reader::ReplayReader;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opencv::core::{Mat, Vector};
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture};
use tokio_util::sync::CancellationToken;

use crate::config::{redact_url, CameraConfig, RtspTransport};

/// A video source that cannot be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("video file {0} does not exist")]
    NotFound(std::path::PathBuf),
    #[error("cannot open {source_name}: {reason}")]
    Open { source_name: String, reason: String },
    #[error("{source_name}: opened, but no frame could be decoded (not a video, or an unsupported codec)")]
    NoFrames { source_name: String },
    #[error("{source_name}: video ends early: decoded {decoded} of the {announced} frames its header announces (truncated file?)")]
    Truncated {
        source_name: String,
        decoded: u64,
        announced: u64,
    },
    #[error("{source_name}: OpenCV: {source}")]
    OpenCv {
        source_name: String,
        #[source]
        source: opencv::Error,
    },
    /// An RTSP camera that did not open, told apart by the pre-flight (src/capture/rtsp.rs).
    #[error(transparent)]
    Rtsp(#[from] rtsp::RtspError),
}

/// One decoded frame.
pub(crate) struct Frame {
    /// 0-based position in the stream.
    pub seq: u64,
    /// Replay: milliseconds since the start of the clip. Live: milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// BGR, 8 bits per channel.
    pub mat: Mat,
}

/// What a `source` string in the config means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    File(PathBuf),
    /// A V4L2 device, by path (`/dev/video0`) or index.
    Device(String),
    /// `rtsp://`, `http://`, `https://` ... through FFmpeg.
    Url(String),
    /// A GStreamer pipeline ending in `appsink`.
    Gstreamer(String),
}

impl Source {
    pub(crate) fn parse(s: &str) -> Source {
        let s = s.trim();
        if s.contains('!') && s.contains("appsink") {
            Source::Gstreamer(s.to_string())
        } else if s.contains("://") {
            Source::Url(s.to_string())
        } else if s.starts_with("/dev/video") || s.parse::<u32>().is_ok() {
            Source::Device(s.to_string())
        } else {
            Source::File(PathBuf::from(s))
        }
    }

    /// Whether the source hands over a compressed stream the packet path can read (and so
    /// record): a file or an RTSP camera. A V4L2 device, an HTTP/MJPEG stream or a GStreamer
    /// pipeline ending in appsink gives decoded frames only.
    pub(crate) fn carries_packets(&self) -> bool {
        match self {
            Source::File(_) => true,
            Source::Url(u) => u.starts_with("rtsp://") || u.starts_with("rtsps://"),
            Source::Device(_) | Source::Gstreamer(_) => false,
        }
    }

    /// A name for logs and errors; URLs lose any password.
    pub(crate) fn display_name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Device(d) => d.clone(),
            Source::Url(u) => redact_url(u),
            Source::Gstreamer(p) => {
                format!("gstreamer:{}", p.split('!').next().unwrap_or("").trim())
            }
        }
    }

    /// Opens the source: the one way every source is opened, live or replayed. A file is checked
    /// first so the message is plain; a network stream gets `opts`' timeouts so that a dead
    /// camera cannot hang the thread; an RTSP camera is asked first by the pre-flight, which
    /// tells refused, wrong path and wrong password apart, then opened with its transport.
    pub(crate) fn open(&self, opts: &SourceOptions) -> Result<VideoCapture, CaptureError> {
        let name = self.display_name();
        let ocv = |source| CaptureError::OpenCv {
            source_name: name.clone(),
            source,
        };
        let cap = match self {
            Source::File(p) => {
                if !p.exists() && !is_image_sequence(p) {
                    return Err(CaptureError::NotFound(p.clone()));
                }
                if p.is_dir() {
                    return Err(CaptureError::Open {
                        source_name: name,
                        reason: "is a directory".into(),
                    });
                }
                let path = p.to_str().ok_or_else(|| CaptureError::Open {
                    source_name: name.clone(),
                    reason: "path is not valid UTF-8".into(),
                })?;
                VideoCapture::from_file(path, videoio::CAP_FFMPEG).map_err(ocv)?
            }
            Source::Device(d) => match d.parse::<i32>() {
                Ok(index) => VideoCapture::new(index, videoio::CAP_V4L2).map_err(ocv)?,
                Err(_) => VideoCapture::from_file(d, videoio::CAP_V4L2).map_err(ocv)?,
            },
            Source::Url(u) if u.starts_with("rtsp://") || u.starts_with("rtsps://") => {
                rtsp::preflight(u, opts.open_timeout)?;
                return Ok(rtsp::open(
                    u,
                    opts.rtsp_transport,
                    opts.open_timeout,
                    opts.read_timeout,
                )?);
            }
            Source::Url(u) => {
                let params = Vector::from_slice(&[
                    videoio::CAP_PROP_OPEN_TIMEOUT_MSEC,
                    opts.open_timeout.as_millis() as i32,
                    videoio::CAP_PROP_READ_TIMEOUT_MSEC,
                    opts.read_timeout.as_millis() as i32,
                ]);
                VideoCapture::from_file_with_params(u, videoio::CAP_FFMPEG, &params).map_err(ocv)?
            }
            Source::Gstreamer(p) => {
                VideoCapture::from_file(p, videoio::CAP_GSTREAMER).map_err(ocv)?
            }
        };
        if !cap.is_opened().map_err(ocv)? {
            let reason = match self {
                Source::File(_) => "not a video OpenCV can read",
                Source::Device(_) => "no such camera, or it is busy or not readable by this user",
                Source::Url(_) => "unreachable, refused, or not a stream",
                Source::Gstreamer(_) => "pipeline failed (is OpenCV built with GStreamer?)",
            };
            return Err(CaptureError::Open {
                source_name: name,
                reason: reason.into(),
            });
        }
        Ok(cap)
    }
}

/// How a camera's network source is opened and read (from its `[[cameras]]` entry).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SourceOptions {
    pub rtsp_transport: RtspTransport,
    /// Connecting, up to the first decoded frame.
    pub open_timeout: Duration,
    /// Longest wait for a frame once streaming: longer is a stall.
    pub read_timeout: Duration,
}

impl SourceOptions {
    pub(crate) fn from_camera(cam: &CameraConfig) -> Self {
        Self {
            rtsp_transport: cam.rtsp_transport,
            open_timeout: Duration::from_secs(cam.open_timeout_s),
            read_timeout: Duration::from_secs(cam.read_timeout_s),
        }
    }
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            rtsp_transport: RtspTransport::default(),
            open_timeout: Duration::from_secs(crate::config::default_open_timeout_s()),
            read_timeout: Duration::from_secs(crate::config::default_read_timeout_s()),
        }
    }
}

/// Sleeps `d`, waking early when cancelled. Returns false when cancelled.
pub(crate) fn sleep_unless_cancelled(d: Duration, cancel: &CancellationToken) -> bool {
    let end = Instant::now() + d;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if cancel.is_cancelled() {
            return false;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
    !cancel.is_cancelled()
}

/// Whether `p` names a numbered image sequence for FFmpeg's image2 reader, such as
/// `frames/%05d.png` (a printf integer conversion in the file name).
pub(crate) fn is_image_sequence(p: &Path) -> bool {
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    name.match_indices('%').any(|(i, _)| {
        let rest = &name[i + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        rest.as_bytes().get(digits) == Some(&b'd')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_strings_map_to_backends() {
        assert_eq!(
            Source::parse("/dev/video0"),
            Source::Device("/dev/video0".into())
        );
        assert_eq!(Source::parse("2"), Source::Device("2".into()));
        assert!(matches!(Source::parse("rtsp://cam/stream"), Source::Url(_)));
        assert!(matches!(
            Source::parse("libcamerasrc ! videoconvert ! appsink"),
            Source::Gstreamer(_)
        ));
        assert_eq!(
            Source::parse("media/vtest.avi"),
            Source::File("media/vtest.avi".into())
        );
    }

    #[test]
    fn url_passwords_are_not_shown() {
        let s = Source::parse("rtsp://admin:secret@10.0.0.2/live");
        assert_eq!(s.display_name(), "rtsp://***@10.0.0.2/live");
    }

    #[test]
    fn missing_file_is_a_plain_not_found_error() {
        let err = Source::parse("/nonexistent/clip.avi")
            .open(&SourceOptions::default())
            .unwrap_err();
        assert!(matches!(err, CaptureError::NotFound(_)), "{err}");
    }

    #[test]
    fn image_sequences_are_recognised_by_their_pattern() {
        assert!(is_image_sequence(Path::new("frames/%05d.png")));
        assert!(is_image_sequence(Path::new("f_%d.jpg")));
        assert!(!is_image_sequence(Path::new("100%.avi")));
        assert!(!is_image_sequence(Path::new("%05d/clip.avi")));
    }

    /// PNG frames come back bit for bit, which makes them the input for comparing two builds.
    #[test]
    fn an_image_sequence_replays_losslessly() {
        use opencv::core::{Scalar, Vector, CV_8UC3};
        let dir = tempfile::tempdir().unwrap();
        let mut written = Vec::new();
        for i in 0..3 {
            let mut m = Mat::new_rows_cols_with_default(48, 64, CV_8UC3, Scalar::all(0.0)).unwrap();
            for (j, b) in m.data_bytes_mut().unwrap().iter_mut().enumerate() {
                *b = (j * 7 + i * 31) as u8;
            }
            let path = dir.path().join(format!("{i:04}.png"));
            opencv::imgcodecs::imwrite(path.to_str().unwrap(), &m, &Vector::new()).unwrap();
            written.push(m.data_bytes().unwrap().to_vec());
        }
        let reader = ReplayReader::open(&dir.path().join("%04d.png")).unwrap();
        assert_eq!((reader.width, reader.height), (64, 48));
        let (tx, rx) = crossbeam_channel::unbounded();
        let n = reader
            .run(
                tx,
                false,
                &CancellationToken::new(),
                &crate::telemetry::metrics::CameraStats::default(),
            )
            .unwrap();
        assert_eq!(n, 3);
        let read: Vec<Vec<u8>> = rx
            .iter()
            .map(|f| f.mat.data_bytes().unwrap().to_vec())
            .collect();
        assert_eq!(read, written);
    }

    #[test]
    fn truncation_is_reported_only_when_clearly_short() {
        assert!(ReplayReader::check_complete("x", 795, Some(795)).is_ok());
        assert!(ReplayReader::check_complete("x", 794, Some(795)).is_ok());
        assert!(ReplayReader::check_complete("x", 10, None).is_ok());
        let err = ReplayReader::check_complete("x", 400, Some(795)).unwrap_err();
        assert!(err.to_string().contains("400 of the 795"), "{err}");
    }
}
