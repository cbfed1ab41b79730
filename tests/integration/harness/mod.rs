//! Helpers shared by the integration tests: where the assets are, running the binary, and
//! building short clips with OpenCV's own writer.

pub mod broker;
pub mod browser;
pub mod daemon;
pub mod rtsp;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use opencv::core::{Mat, Size};
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture, VideoWriter};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A setup asset; panics with what to do when it is missing (a missing asset is a broken
/// checkout, not a reason to skip).
pub fn asset(rel: &str) -> PathBuf {
    let p = root().join(rel);
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh",
        p.display()
    );
    p
}

pub fn vtest() -> PathBuf {
    asset("media/vtest.avi")
}

/// The street clip as H.264 (a key frame every 2 s, no B-frames), made by scripts/setup.sh:
/// a camera that records.
pub fn vtest_h264() -> PathBuf {
    asset("media/vtest-h264.mp4")
}

/// The public ground truth of vtest.avi (PETS09-S2L1, MOTChallenge format).
pub fn vtest_ground_truth() -> PathBuf {
    asset("media/pets09-s2l1/gt.txt")
}

pub fn fastestdet() -> PathBuf {
    asset("models/fastestdet/FastestDet.onnx")
}

/// FastestDet's settings (the model and labels in the checkout) over the defaults.
pub fn fastestdet_config() -> ocellus::config::DetectorConfig {
    ocellus::config::DetectorConfig {
        model: fastestdet(),
        labels: asset("models/fastestdet/coco.names"),
        ..ocellus::config::DetectorConfig::default().fastestdet()
    }
}

/// The default model, NanoDet-g at 384x288 quantised to int8, as models/fetch.sh makes it.
pub fn nanodet() -> PathBuf {
    asset(ocellus::config::DEFAULT_MODEL)
}

/// The fp32 NanoDet-g at 384x288 the int8 model is made from (what OpenCV's DNN module runs).
pub fn nanodet_fp32() -> PathBuf {
    asset("models/nanodet-g/nanodet-g-384x288.onnx")
}

/// The team's reference conversion of NanoDet-g (../shared, never shipped): None on a clone
/// without it.
pub fn nanodet_reference() -> Option<PathBuf> {
    let p = root().join("../shared/models/nanodet-g/reference-416.onnx");
    p.exists().then_some(p)
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

/// Runs `ocellus` with `args` from the repository root (where the default model paths point).
pub fn ocellus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ocellus"))
        .args(args)
        .current_dir(root())
        .env_remove("OCELLUS_LOG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run ocellus")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Parses `--json` output: one event per line.
pub fn events(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// Reads frames `from..to` of a video.
pub fn read_frames(path: &Path, from: usize, to: usize) -> Vec<Mat> {
    let mut cap = VideoCapture::from_file(path.to_str().unwrap(), videoio::CAP_FFMPEG).unwrap();
    let mut out = Vec::new();
    for i in 0..to {
        let mut m = Mat::default();
        assert!(cap.read(&mut m).unwrap(), "frame {i} of {}", path.display());
        if i >= from {
            out.push(m);
        }
    }
    out
}

/// Writes frames as an MJPEG AVI (OpenCV's built-in writer, no codec packages needed).
pub fn write_clip(path: &Path, frames: &[Mat], fps: f64) {
    let size = Size::new(frames[0].cols(), frames[0].rows());
    let fourcc = VideoWriter::fourcc('M', 'J', 'P', 'G').unwrap();
    let mut w = VideoWriter::new(path.to_str().unwrap(), fourcc, fps, size, true).unwrap();
    assert!(w.is_opened().unwrap(), "cannot write {}", path.display());
    for f in frames {
        w.write(f).unwrap();
    }
    w.release().unwrap();
}

/// A loopback port nobody listens on (just now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A clip of `n` frames of one plain grey 384x288 picture at `fps`: nothing moves, nothing to
/// detect or track.
pub fn grey_clip(path: &Path, n: usize, fps: f64) {
    let grey = Mat::new_rows_cols_with_default(
        288,
        384,
        opencv::core::CV_8UC3,
        opencv::core::Scalar::all(90.0),
    )
    .unwrap();
    write_clip(path, &vec![grey; n], fps);
}

/// The first `frames` frames of the street clip as H.264 in `dir`/street.mp4 (libx264, a key
/// frame every 20 frames, B-frames on: what a camera's main stream looks like).
pub fn h264_clip(dir: &Path, frames: u32) -> PathBuf {
    x264_clip(dir, "street.mp4", frames, &["-g", "20"])
}

/// The first `frames` frames of the street clip encoded by libx264 into `dir`/`name`, with
/// `args` (size, key-frame interval, bitrate) for the encoder.
pub fn x264_clip(dir: &Path, name: &str, frames: u32, args: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-i"])
        .arg(vtest())
        .args(["-frames:v", &frames.to_string(), "-c:v", "libx264"])
        .args(args)
        .args(["-pix_fmt", "yuv420p", "-an"])
        .arg(&out)
        .status()
        .expect("ffmpeg (scripts/setup.sh installs it)");
    assert!(status.success());
    out
}
