//! The detect stage end to end on planted frames: a white object on a black frame, found by a
//! detector that reports the white pixels' bounding box, so the test knows the truth of every
//! frame and counts every detector run.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use opencv::core::{self, Mat, Rect, Scalar, CV_8UC3};
use opencv::imgproc;

use super::*;
use crate::pipeline::detect::DetectorInfo;
use crate::pipeline::events::EventIds;
use crate::pipeline::values::{BBox, Detection, DetectionsMsg, EventKind, EventMsg};

const W: i32 = 640;
const H: i32 = 360;

/// Finds the white pixels' bounding box, as a person, score 0.9; counts its runs.
struct WhiteBox {
    runs: Arc<AtomicUsize>,
}

impl ObjectDetector for WhiteBox {
    fn detect(&mut self, frame: &Mat) -> Result<Vec<Detection>, DetectError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let mut grey = Mat::default();
        imgproc::cvt_color_def(frame, &mut grey, imgproc::COLOR_BGR2GRAY)?;
        let mut points = Mat::default();
        core::find_non_zero(&grey, &mut points)?;
        if points.empty() {
            return Ok(Vec::new());
        }
        let r = imgproc::bounding_rect(&points)?;
        Ok(vec![Detection {
            class_id: 0,
            label: "person".into(),
            score: 0.9,
            bbox: BBox::new(r.x as f32, r.y as f32, r.width as f32, r.height as f32),
            weak: false,
            appearance: None,
        }])
    }

    fn info(&self) -> DetectorInfo {
        DetectorInfo::planted("test")
    }
}

/// What the pipeline handed on.
#[derive(Clone, Default)]
struct Seen {
    events: Arc<Mutex<Vec<EventMsg>>>,
    frames: Arc<Mutex<Vec<DetectionsMsg>>>,
}

impl Sink for Seen {
    fn event(&mut self, msg: EventMsg) {
        self.events.lock().unwrap().push(msg);
    }
    fn snapshot(&mut self, _: Snapshot) {}
    fn wants_detections(&self) -> bool {
        true
    }
    fn detections(&mut self, msg: DetectionsMsg, _: &[Detection], _: &[u64]) {
        self.frames.lock().unwrap().push(msg);
    }
}

/// A black frame with the object (if any) drawn white.
fn frame(seq: u64, ts_ms: i64, object: Option<Rect>) -> Frame {
    let mut mat = Mat::new_rows_cols_with_default(H, W, CV_8UC3, Scalar::all(0.0)).expect("frame");
    if let Some(r) = object {
        imgproc::rectangle(&mut mat, r, Scalar::all(255.0), -1, imgproc::LINE_8, 0).expect("draw");
    }
    Frame { seq, ts_ms, mat }
}

/// Motion on the object's box, or none.
fn moving(object: Option<Rect>) -> MotionResult {
    match object {
        Some(r) => MotionResult {
            motion: true,
            regions: vec![BBox::new(
                r.x as f32,
                r.y as f32,
                r.width as f32,
                r.height as f32,
            )],
            ..Default::default()
        },
        None => MotionResult::default(),
    }
}

/// A config from TOML, with one camera `c` and whatever `extra` adds to it.
fn config(detector: &str, camera_extra: &str) -> Config {
    config_with(detector, "", camera_extra)
}

fn config_with(detector: &str, tracker: &str, camera_extra: &str) -> Config {
    let text = format!(
        "[detector]\n{detector}\n[tracker]\n{tracker}\n[motion]\nenabled = false\n[[cameras]]\nid = \"c\"\nsource = \"x.avi\"\n{camera_extra}\n"
    );
    Config::parse(&text, Path::new("test.toml")).expect("config")
}

/// A pipeline of `cfg` for camera `c` with the white-box detector: the pipeline, the
/// detector's run count, what it hands on.
fn pipeline(cfg: &Config) -> (Pipeline, Arc<AtomicUsize>, Seen) {
    let runs = Arc::new(AtomicUsize::new(0));
    let seen = Seen::default();
    let p = Pipeline::new(
        "c",
        cfg,
        Some(Box::new(WhiteBox { runs: runs.clone() })),
        EventIds::after(0),
        Box::new(seen.clone()),
        Arc::new(CameraStats::default()),
    )
    .expect("pipeline");
    (p, runs, seen)
}

/// Runs the frames (with their motion) through a pipeline of `cfg`; the detector's runs and
/// what came out.
fn run(cfg: &Config, frames: Vec<(Frame, MotionResult)>) -> (usize, Seen) {
    let (mut p, runs, seen) = pipeline(cfg);
    let (tx, rx) = crossbeam_channel::unbounded();
    for f in frames {
        tx.send(f).expect("send");
    }
    drop(tx);
    p.run(&rx, &CancellationToken::new(), |_: Frame| {});
    (runs.load(Ordering::SeqCst), seen)
}

/// A person 40x100 walking right at 120 px/s, filmed at 10 fps: frame `i` and its box.
fn walker(i: i64) -> Rect {
    Rect::new(20 + 12 * i as i32, 200, 40, 100)
}

fn walk(frames: i64) -> Vec<(Frame, MotionResult)> {
    (0..frames)
        .map(|i| {
            let r = Some(walker(i));
            (frame(i as u64, i * 100, r), moving(r))
        })
        .collect()
}

const ZONE_AND_LINE: &str = r#"
[[cameras.zones]]
name = "right"
points = [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]
[[cameras.lines]]
name = "middle"
points = [[0.5, 0.0], [0.5, 1.0]]
"#;

/// A track is established from its first detection here (`min_hits = 1`), so that only the
/// rate decides (a young track is detected on every frame, tested below).
const TRUSTING: &str = "min_hits = 1";

/// At 5 detector runs a second on a 10 fps camera the detector sees every second frame; on the
/// others the walker's box is where the tracker predicts it (it moves on, a few pixels from the
/// truth), and the zone and the line follow it as they do with a detection on every frame.
#[test]
fn between_detections_tracks_move_with_their_prediction_and_zones_still_count() {
    let every = run(&config_with("fps = 0", TRUSTING, ZONE_AND_LINE), walk(45));
    let fifth = run(&config_with("fps = 5", TRUSTING, ZONE_AND_LINE), walk(45));
    assert_eq!(every.0, 45);
    assert_eq!(fifth.0, 23, "frames 0, 2, .., 44");

    let frames = fifth.1.frames.lock().unwrap().clone();
    assert_eq!(frames.len(), 45);
    let mut carried = 0;
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.detector_ran, i % 2 == 0, "frame {i}");
        if i % 2 == 0 {
            continue;
        }
        // A frame without a detection still shows the walker, predicted.
        let t = &f.tracks[..];
        assert_eq!(t.len(), 1, "frame {i}: {t:?}");
        assert!(t[0].predicted);
        carried += 1;
        // Once the filter has its velocity (a few detections), the box moves on from the frame
        // before, to within a few pixels of the truth.
        if i >= 7 {
            let truth = walker(i as i64).x as f32;
            let before = frames[i - 1].tracks[0].bbox.x;
            assert!(t[0].bbox.x > before + 8.0, "frame {i}: did not move on");
            assert!(
                (t[0].bbox.x - truth).abs() < 6.0,
                "frame {i}: {} against {truth}",
                t[0].bbox.x
            );
        }
    }
    assert_eq!(carried, 22);

    // The zone is entered and the line crossed, at the same frame (within one) as with a
    // detection on every frame: zone inertia counts frames, and the carried ones count.
    let entered = |seen: &Seen| {
        let frames = seen.frames.lock().unwrap();
        frames
            .iter()
            .position(|f| f.tracks.iter().any(|t| t.zones.contains(&"right".into())))
            .expect("the walker entered the zone")
    };
    let (e_every, e_fifth) = (entered(&every.1), entered(&fifth.1));
    assert!(
        e_fifth.abs_diff(e_every) <= 1,
        "{e_fifth} against {e_every}"
    );
    let crossings = |seen: &Seen| {
        let events = seen.events.lock().unwrap();
        let end = events
            .iter()
            .find(|m| m.kind == EventKind::End)
            .expect("the walker's event ended");
        (end.event.zones.clone(), end.event.crossings.len())
    };
    assert_eq!(crossings(&every.1), (vec!["right".to_string()], 1));
    assert_eq!(crossings(&fifth.1), (vec!["right".to_string()], 1));

    // Each message of the event has its own `rev`: 0 for the start, one more each time, the
    // end last (the MQTT de-duplication key is (id, rev)).
    let events = every.1.events.lock().unwrap();
    let revs: Vec<(EventKind, u32)> = events.iter().map(|m| (m.kind, m.rev)).collect();
    assert!(revs.len() >= 3, "{revs:?}");
    for (i, (kind, rev)) in revs.iter().enumerate() {
        assert_eq!(*rev as usize, i, "{revs:?}");
        let want = match i {
            0 => EventKind::Start,
            i if i == revs.len() - 1 => EventKind::End,
            _ => EventKind::Update,
        };
        assert_eq!(*kind, want, "{revs:?}");
    }
}

/// A car drives in and parks. While nothing moves the detector is not run at all (only a
/// stationary track is alive), and the car's event stays open far beyond the unseen timeout;
/// once motion reaches it again (it drives off), the detector runs, and the event ends when
/// the car is no longer seen.
#[test]
fn a_stationary_object_is_not_detected_again_until_motion_reaches_it() {
    let car = |i: i64| Rect::new(40 + 16 * i.min(30) as i32, 150, 120, 60);
    let mut frames = Vec::new();
    let mut ts = 0;
    let mut push = |frames: &mut Vec<(Frame, MotionResult)>, r: Option<Rect>, m: MotionResult| {
        frames.push((frame(frames.len() as u64, ts, r), m));
        ts += 100;
    };
    // 0-30: driving in; 31-150: parked, moving blobs on it until it is stationary (10 s),
    // which MOG2 would show for a while as the background learns it.
    for i in 0..150 {
        let r = Some(car(i));
        push(&mut frames, r, moving(r));
    }
    // 150-449: parked, nothing moves for 30 s.
    for _ in 150..450 {
        push(&mut frames, Some(car(30)), MotionResult::default());
    }
    // 450: it pulls out: motion on it, then gone for 3 s.
    push(&mut frames, Some(car(30)), moving(Some(car(30))));
    for _ in 451..481 {
        push(&mut frames, None, moving(Some(car(30))));
    }

    let (mut p, runs, seen) = pipeline(&config("fps = 0\nwhen = \"motion\"", ""));
    let mut runs_at = Vec::new();
    for (f, m) in frames {
        p.step(Staged::Moved(f, m));
        runs_at.push(runs.load(Ordering::SeqCst));
    }
    // Stationary once it stood 10 s (from frame 30), detected on every frame until then.
    let frames_seen = seen.frames.lock().unwrap().clone();
    let still_from = frames_seen
        .iter()
        .position(|f| f.tracks.iter().any(|t| t.stationary))
        .expect("the car became stationary");
    assert!((115..=140).contains(&still_from), "{still_from}");
    assert_eq!(runs_at[149], 150);
    // The 30 still seconds: no detector run, the car's box still shown, no end.
    assert_eq!(
        runs_at[449], runs_at[149],
        "the detector ran on a still scene"
    );
    assert!(frames_seen[150..450]
        .iter()
        .all(|f| f.tracks.len() == 1 && f.tracks[0].stationary));
    let ended = |events: &[EventMsg]| events.iter().any(|m| m.kind == EventKind::End);
    // Motion reaches it: the detector runs again on every frame, and the event ends once the
    // car has been gone for the unseen timeout (2 s).
    assert!(runs_at[480] - runs_at[449] >= 25);
    let events = seen.events.lock().unwrap().clone();
    let starts = events.iter().filter(|m| m.kind == EventKind::Start).count();
    assert_eq!(starts, 1, "{events:?}");
    assert!(ended(&events), "the car's event did not end after it left");
    let end = events.iter().find(|m| m.kind == EventKind::End).unwrap();
    assert_eq!(
        end.event.end_ms,
        Some(450 * 100),
        "ends with its last sighting"
    );
    assert!(end.event.stationary);
}

/// A camera's own `detector_fps` wins over `detector.fps`; in-order frames get exactly one
/// run per slot.
#[test]
fn a_cameras_detector_fps_overrides_the_detectors() {
    let runs =
        |detector: &str, camera: &str| run(&config_with(detector, TRUSTING, camera), walk(40)).0;
    let overridden = runs("fps = 5", "detector_fps = 2");
    assert_eq!(overridden, runs("fps = 2", ""));
    assert!(overridden < runs("fps = 5", ""), "{overridden}");
    // 8 slots in 4 s, and a few more runs while the young filter's prediction lags the walker
    // (motion outside it).
    assert!((8..=12).contains(&overridden), "{overridden}");
    assert_eq!(runs("fps = 5", "detector_fps = 10"), 40);
}

/// The rate is a floor, not a ceiling on need: a young track (fewer than `min_hits` = 10
/// detections) is detected on every frame until it is established, two tracks close enough to
/// be confused are detected on every frame while they are, and so is motion that no track
/// explains (something new); a lone established track goes at the rate.
#[test]
fn the_detector_runs_on_every_frame_while_it_is_needed() {
    let cfg = config("fps = 2", "");
    let (_, seen) = run(&cfg, walk(40));
    let ran: Vec<bool> = seen
        .frames
        .lock()
        .unwrap()
        .iter()
        .map(|f| f.detector_ran)
        .collect();
    assert!(ran[..10].iter().all(|&r| r), "young: {ran:?}");
    // Established at frame 9: from then on one run per 500 ms slot (frames 10, 15, .., 35).
    let later: Vec<usize> = (10..40).filter(|&i| ran[i]).collect();
    assert_eq!(later, [10, 15, 20, 25, 30, 35], "{ran:?}");

    // Something moving where no track is: every frame.
    let frames: Vec<(Frame, MotionResult)> = walk(40)
        .into_iter()
        .map(|(f, mut m)| {
            m.regions.push(BBox::new(500.0, 20.0, 30.0, 30.0));
            (f, m)
        })
        .collect();
    let (runs, _) = run(&cfg, frames);
    assert_eq!(runs, 40, "unexplained motion");
}
