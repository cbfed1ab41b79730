//! Frame capture through OpenCV `VideoCapture`: which backend a source string means, opening it
//! with a clear error, and the replay reader that stamps frames with the video's own clock.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use opencv::core::Mat;
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture};
use tokio_util::sync::CancellationToken;

use crate::errors::CaptureError;
use crate::metrics::CameraStats;

/// One decoded frame.
pub struct Frame {
    /// 0-based position in the stream.
    pub seq: u64,
    /// Replay: milliseconds since the start of the clip. Live: milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// BGR, 8 bits per channel.
    pub mat: Mat,
}

/// What a `source` string in the config means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// A V4L2 device, by path (`/dev/video0`) or index.
    Device(String),
    /// `rtsp://`, `http://`, `https://` ... through FFmpeg.
    Url(String),
    /// A GStreamer pipeline ending in `appsink`.
    Gstreamer(String),
}

impl Source {
    pub fn parse(s: &str) -> Source {
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

    /// Whether frames come as fast as we read them (files) or at the camera's pace.
    pub fn is_live(&self) -> bool {
        !matches!(self, Source::File(_))
    }

    /// A name for logs and errors; URLs lose any password.
    pub fn display_name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Device(d) => d.clone(),
            Source::Url(u) => redact_url(u),
            Source::Gstreamer(p) => {
                format!("gstreamer:{}", p.split('!').next().unwrap_or("").trim())
            }
        }
    }

    /// Opens the source; for a file, checks that it exists first so the message is plain.
    pub fn open(&self) -> Result<VideoCapture, CaptureError> {
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
            Source::Url(u) => VideoCapture::from_file(u, videoio::CAP_FFMPEG).map_err(ocv)?,
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

/// Whether `p` names a numbered image sequence for FFmpeg's image2 reader, such as
/// `frames/%05d.png` (a printf integer conversion in the file name).
pub fn is_image_sequence(p: &Path) -> bool {
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    name.match_indices('%').any(|(i, _)| {
        let rest = &name[i + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        rest.as_bytes().get(digits) == Some(&b'd')
    })
}

/// `u` with any `user:password@` replaced by `***@`.
pub(crate) fn redact_url(u: &str) -> String {
    match (u.find("://"), u.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &u[..scheme], &u[at + 1..])
        }
        _ => u.to_string(),
    }
}

/// A video file opened for replay, with its first frame already decoded (which proves it is a
/// video before anything else is set up).
pub struct ReplayReader {
    name: String,
    cap: VideoCapture,
    first: Option<Mat>,
    pub fps: f64,
    /// Frame count from the container header, when it has one.
    pub announced_frames: Option<u64>,
    pub width: u32,
    pub height: u32,
}

impl ReplayReader {
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let source = Source::File(path.to_owned());
        let name = source.display_name();
        let mut cap = source.open()?;
        let ocv = |source| CaptureError::OpenCv {
            source_name: name.clone(),
            source,
        };
        let mut first = Mat::default();
        let got = cap.read(&mut first).unwrap_or(false);
        if !got || first.empty() {
            return Err(CaptureError::NoFrames { source_name: name });
        }
        let fps = cap.get(videoio::CAP_PROP_FPS).map_err(ocv)?;
        let count = cap.get(videoio::CAP_PROP_FRAME_COUNT).map_err(ocv)?;
        Ok(Self {
            width: first.cols() as u32,
            height: first.rows() as u32,
            first: Some(first),
            fps: if fps.is_finite() && fps > 0.0 {
                fps
            } else {
                25.0
            },
            announced_frames: (count.is_finite() && count >= 1.0).then_some(count as u64),
            cap,
            name,
        })
    }

    /// Milliseconds since the start of the clip for frame `seq`: the frame's position on the
    /// video's own clock.
    pub fn timestamp_ms(&self, seq: u64) -> i64 {
        (seq as f64 * 1000.0 / self.fps).round() as i64
    }

    /// Reads every frame into `tx` (blocking when the detector is behind: replay never drops),
    /// paced at the file's fps when `realtime`. Returns the number of frames read. Stops early,
    /// without error, when `cancel` fires or the receiver is gone.
    pub fn run(
        mut self,
        tx: Sender<Frame>,
        realtime: bool,
        cancel: &CancellationToken,
        stats: &CameraStats,
    ) -> Result<u64, CaptureError> {
        let started = Instant::now();
        let mut seq = 0u64;
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let t0 = Instant::now();
            let mat = match self.first.take() {
                Some(m) => m,
                None => {
                    let mut m = Mat::default();
                    // A decode error mid-file ends the clip like EOF does; the caller compares
                    // the count with the header to report truncation.
                    match self.cap.read(&mut m) {
                        Ok(true) if !m.empty() => m,
                        _ => break,
                    }
                }
            };
            stats.decode.add(t0.elapsed());
            crate::metrics::inc(&stats.captured);
            let ts_ms = self.timestamp_ms(seq);
            if realtime {
                let due = started + Duration::from_millis(ts_ms as u64);
                while let Some(wait) = due.checked_duration_since(Instant::now()) {
                    if cancel.is_cancelled() {
                        return Ok(seq);
                    }
                    std::thread::sleep(wait.min(Duration::from_millis(50)));
                }
            }
            if tx.send(Frame { seq, ts_ms, mat }).is_err() {
                break;
            }
            seq += 1;
        }
        Ok(seq)
    }

    /// An error when fewer frames decoded than the header announced (by more than a small
    /// margin, since headers of some containers round).
    pub fn check_complete(
        name: &str,
        decoded: u64,
        announced: Option<u64>,
    ) -> Result<(), CaptureError> {
        match announced {
            Some(n) if decoded + 2 < n && decoded * 100 < n * 98 => Err(CaptureError::Truncated {
                source_name: name.to_string(),
                decoded,
                announced: n,
            }),
            _ => Ok(()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
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
        assert!(!Source::parse("a.mp4").is_live());
        assert!(Source::parse("/dev/video0").is_live());
    }

    #[test]
    fn url_passwords_are_not_shown() {
        let s = Source::parse("rtsp://admin:secret@10.0.0.2/live");
        assert_eq!(s.display_name(), "rtsp://***@10.0.0.2/live");
    }

    #[test]
    fn missing_file_is_a_plain_not_found_error() {
        let err = Source::parse("/nonexistent/clip.avi").open().unwrap_err();
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
                &CameraStats::default(),
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
