//! Live cameras as a box with several of them runs them: the detector's own rate per camera,
//! and a GStreamer pipeline source decoding H.264 in software (what a Pi's v4l2h264dec or a
//! Jetson's nvv4l2decoder does in hardware, docs/deployment.md).

use crate::harness;
use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::daemon::{self as d, metric, DaemonProc};

const LONG: Duration = Duration::from_secs(60);

/// A 10 fps clip of a plain grey picture: nothing moves, nothing to track, so only the rate
/// decides when the detector runs.
fn empty_clip(dir: &Path) -> PathBuf {
    let path = dir.join("empty.avi");
    harness::grey_clip(&path, 50, 10.0);
    path
}

/// `detector.fps` and a camera's own `detector_fps`, kept by live cameras on their frames'
/// (Unix) clock: two 10 fps cameras with the detector asked for on every frame (`when =
/// "always"`), one at 2 runs a second (the detector's rate), one at 5 (its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_cameras_keep_their_detector_rate() {
    let dir = tempfile::tempdir().unwrap();
    let clip = empty_clip(dir.path());
    let dmn = DaemonProc::start(
        "[detector]\nwhen = \"always\"\nfps = 2\n",
        &format!(
            "[[cameras]]\nid = \"slow\"\nsource = {clip:?}\n\
             [[cameras]]\nid = \"fast\"\nsource = {clip:?}\ndetector_fps = 5\n"
        ),
    );
    let counts = |cam: &'static str| {
        let dmn = &dmn;
        async move {
            (
                metric(
                    dmn,
                    &format!("ocellus_frames_processed_total{{camera=\"{cam}\"}}"),
                )
                .await,
                metric(
                    dmn,
                    &format!("ocellus_detector_runs_total{{camera=\"{cam}\"}}"),
                )
                .await,
            )
        }
    };
    // Counted from a first reading on, so start-up does not count; until 80 more frames (8 s).
    let deadline = tokio::time::Instant::now() + LONG;
    let start = loop {
        let c = (counts("slow").await, counts("fast").await);
        if c.0 .0 >= 5.0 && c.1 .0 >= 5.0 {
            break c;
        }
        assert!(tokio::time::Instant::now() < deadline, "no frames");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let end = loop {
        let c = (counts("slow").await, counts("fast").await);
        if c.0 .0 - start.0 .0 >= 80.0 && c.1 .0 - start.1 .0 >= 80.0 {
            break c;
        }
        assert!(tokio::time::Instant::now() < deadline, "too few frames");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (cam, (p0, r0), (p1, r1), fps) in
        [("slow", start.0, end.0, 2.0), ("fast", start.1, end.1, 5.0)]
    {
        let share = (r1 - r0) / (p1 - p0);
        let want = fps / 10.0;
        assert!(
            (share - want).abs() <= 0.06,
            "{cam}: the detector ran on {share:.2} of the frames, not {want}"
        );
    }
}

/// An H.264 camera stream through a GStreamer pipeline that decodes it in software
/// (avdec_h264): the pipeline docs/deployment.md gives for a Pi or a Jetson with the hardware
/// decoder swapped in. The camera connects, its frames are processed at full size, and the
/// detector finds the street's people.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gstreamer_pipeline_with_a_software_h264_decoder_feeds_a_camera() {
    let dir = tempfile::tempdir().unwrap();
    let clip = harness::h264_clip(dir.path(), 200);
    let pipeline = format!(
        "filesrc location={} ! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! \
         video/x-raw,format=BGR ! appsink drop=true max-buffers=2",
        clip.display()
    );
    let dmn = DaemonProc::start(
        "",
        &format!("[[cameras]]\nid = \"gst\"\nsource = {pipeline:?}\n"),
    );
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let processed = metric(&dmn, "ocellus_frames_processed_total{camera=\"gst\"}").await;
        let (state, error) = d::camera_state(&dmn).await;
        if processed >= 30.0 {
            assert_eq!(state, "connected", "{error:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{processed} frames from the pipeline; camera {state}, {error:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cams = d::get_json(&dmn.url("/api/cameras")).await;
    assert_eq!(cams[0]["width"], 768, "{cams}");
    let runs = metric(&dmn, "ocellus_detector_runs_total{camera=\"gst\"}").await;
    assert!(runs >= 10.0, "{runs}");
}
