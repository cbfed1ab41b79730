//! Detectors on real models and real frames: the planted-box fixtures for the `yolo` and
//! `yolov5` decoders, NanoDet-g (and its converter against the reference conversion), FastestDet
//! and HOG on the street clip, and broken model files; every DNN case on both runtimes (ONNX
//! Runtime, which scripts/setup.sh fetches, and OpenCV's DNN).

use crate::harness;
use opencv::core::{Mat, Scalar, CV_8UC3};
use opencv::prelude::*;

use ocellus::config::{DetectorConfig, DetectorKind, DetectorRuntime, ModelFamily};
use ocellus::pipeline::detect::DetectError;
use ocellus::pipeline::detect::{self, ObjectDetector};
use ocellus::pipeline::values::{BBox, Detection};

fn planted_config(family: ModelFamily, model: &str) -> DetectorConfig {
    DetectorConfig {
        kind: DetectorKind::Dnn,
        family,
        model: harness::fixture(model),
        labels: harness::fixture("planted.names"),
        input_width: 320,
        input_height: 320,
        min_score: 0.25,
        labels_allow: Vec::new(),
        min_box_area: 0.0,
        ..Default::default()
    }
}

const RUNTIMES: [DetectorRuntime; 2] = [DetectorRuntime::Opencv, DetectorRuntime::Onnxruntime];

/// The DNN detector of `cfg` on `runtime` (an error, not a fallback, when it cannot load).
fn load(
    cfg: &DetectorConfig,
    runtime: DetectorRuntime,
) -> Result<Box<dyn ObjectDetector>, DetectError> {
    let cfg = DetectorConfig {
        runtime,
        ..cfg.clone()
    };
    let det = detect::build(&cfg)?.expect("a DNN detector");
    assert_eq!(
        det.info().runtime,
        runtime_name(runtime),
        "{}",
        det.describe()
    );
    Ok(det)
}

fn runtime_name(runtime: DetectorRuntime) -> &'static str {
    match runtime {
        DetectorRuntime::Onnxruntime => "onnxruntime",
        _ => "opencv",
    }
}

fn blank(w: i32, h: i32) -> Mat {
    Mat::new_rows_cols_with_default(h, w, CV_8UC3, Scalar::all(90.0)).unwrap()
}

fn assert_box(d: &Detection, label: &str, b: BBox) {
    assert_eq!(d.label, label);
    let close = |a: f32, b: f32| (a - b).abs() <= 1.0;
    assert!(
        close(d.bbox.x, b.x)
            && close(d.bbox.y, b.y)
            && close(d.bbox.w, b.w)
            && close(d.bbox.h, b.h),
        "{label}: got {:?}, want {b:?}",
        d.bbox
    );
}

/// The planted boxes (see tests/fixtures/make_fixtures.py) after undoing the letterbox of a
/// 640x480 frame into 320x320: scale 0.5, 40 px of padding above.
fn check_planted(family: ModelFamily, model: &str) {
    for rt in RUNTIMES {
        let mut det = load(&planted_config(family, model), rt).unwrap();
        let found = det.detect(&blank(640, 480)).unwrap();
        assert_eq!(
            found.len(),
            2,
            "{rt:?}: duplicate removed by NMS, dog under threshold: {found:?}"
        );
        assert_box(&found[0], "person", BBox::new(160.0, 120.0, 80.0, 160.0));
        assert_box(&found[1], "car", BBox::new(440.0, 290.0, 120.0, 60.0));
        assert!((found[0].score - 0.9).abs() < 1e-4, "{}", found[0].score);
    }
}

#[test]
fn yolo_fixture_boxes_come_out_at_source_pixels_after_letterbox() {
    check_planted(ModelFamily::Yolo, "yolo_planted.onnx");
}

#[test]
fn yolov5_fixture_boxes_come_out_at_source_pixels_after_letterbox() {
    check_planted(ModelFamily::Yolov5, "yolov5_planted.onnx");
}

/// With `tiles = 2` each tile is letterboxed on its own and its boxes put back at the tile's
/// place: the planted model (which ignores its input) gives its boxes once per tile, each
/// mapped through that tile's letterbox and shifted by the tile's x.
#[test]
fn tiled_detection_maps_each_tiles_boxes_back_to_frame_pixels() {
    let cfg = DetectorConfig {
        tiles: 2,
        ..planted_config(ModelFamily::Yolo, "yolo_planted.onnx")
    };
    for rt in RUNTIMES {
        let mut det = load(&cfg, rt).unwrap();
        assert!(
            det.describe().contains(", 2 tiles on "),
            "{}",
            det.describe()
        );
        let mut found = det.detect(&blank(640, 480)).unwrap();
        found.sort_by(|a, b| {
            (a.label.as_str(), a.bbox.x)
                .partial_cmp(&(b.label.as_str(), b.bbox.x))
                .unwrap()
        });
        let cols = ocellus::pipeline::detect::tiles::columns(640, 2);
        // Letterboxing a tile (w x 480) into 320x320: scale 320/480, padded left and right.
        let planted = |x0: u32, w: u32, cx: f32, cy: f32, bw: f32, bh: f32| {
            let scale = (320.0 / w as f32).min(320.0 / 480.0);
            let pad_x = (320.0 - (w as f32 * scale).round()) / 2.0;
            BBox::new(
                x0 as f32 + (cx - bw / 2.0 - pad_x) / scale,
                (cy - bh / 2.0) / scale,
                bw / scale,
                bh / scale,
            )
        };
        assert_eq!(found.len(), 4, "a person and a car per tile: {found:?}");
        for (i, &(x0, w)) in cols.iter().enumerate() {
            assert_box(&found[i], "car", planted(x0, w, 250.0, 200.0, 60.0, 30.0));
            assert_box(
                &found[2 + i],
                "person",
                planted(x0, w, 100.0, 140.0, 40.0, 80.0),
            );
        }
    }
}

#[test]
fn model_of_another_family_is_refused_at_load() {
    // A yolo export declared as fastestdet has the wrong shape for that decoder.
    for rt in RUNTIMES {
        let err = load(
            &planted_config(ModelFamily::Fastestdet, "yolo_planted.onnx"),
            rt,
        )
        .err()
        .expect("wrong family must fail");
        assert!(
            matches!(err, DetectError::OutputShape { .. }),
            "{rt:?}: {err}"
        );
    }
}

#[test]
fn a_model_with_another_input_size_is_refused_at_load_naming_the_keys() {
    // A new user's first try: the [detector] names FastestDet.onnx but keeps the default
    // family and input size (NanoDet-g's 384x288); ONNX Runtime used to fail on the first frame
    // with "Got invalid dimensions for input".
    let cfg = DetectorConfig {
        kind: DetectorKind::Dnn,
        model: harness::fastestdet(),
        labels: harness::asset("models/fastestdet/coco.names"),
        ..Default::default()
    };
    let err = load(&cfg, DetectorRuntime::Onnxruntime)
        .err()
        .expect("the wrong input size must fail at load");
    assert!(matches!(err, DetectError::InputSize { .. }), "{err}");
    let msg = err.to_string();
    for part in [
        "takes 352x352 input",
        "is 384x288",
        "input_width = 352 and input_height = 352",
        "models/fastestdet/model.toml",
    ] {
        assert!(msg.contains(part), "{part:?} not in: {msg}");
    }
    // With the model's own settings it loads.
    assert!(load(&harness::fastestdet_config(), DetectorRuntime::Onnxruntime).is_ok());
}

#[test]
fn corrupt_model_file_is_a_load_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.onnx");
    let mut bytes = std::fs::read(harness::fastestdet()).unwrap();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&bad, &bytes).unwrap();
    let cfg = DetectorConfig {
        kind: DetectorKind::Dnn,
        model: bad,
        ..harness::fastestdet_config()
    };
    for rt in RUNTIMES {
        let err = load(&cfg, rt).err().expect("truncated model must fail");
        assert!(
            matches!(err, DetectError::ModelLoad { .. }),
            "{rt:?}: {err}"
        );
    }
}

#[test]
fn auto_falls_back_to_hog_without_a_model_and_dnn_refuses() {
    let cfg = DetectorConfig {
        model: "/nonexistent/model.onnx".into(),
        ..Default::default()
    };
    let auto = detect::build(&cfg).unwrap().unwrap();
    assert!(auto.describe().starts_with("hog"), "{}", auto.describe());
    let strict = DetectorConfig {
        kind: DetectorKind::Dnn,
        ..cfg
    };
    assert!(matches!(
        detect::build(&strict).err(),
        Some(DetectError::ModelMissing(_))
    ));
}

/// An int8 model whose file is missing, with its fp32 original beside where it should be (an
/// old models directory): `auto` runs the fp32 file and says so; a file of another name has no
/// such fallback.
#[test]
fn auto_runs_the_fp32_original_when_the_int8_file_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        harness::nanodet_fp32(),
        dir.path().join("nanodet-g-384x288.onnx"),
    )
    .unwrap();
    let cfg = DetectorConfig {
        model: dir.path().join("nanodet-g-384x288-int8.onnx"),
        labels: harness::asset("models/nanodet-g/coco80.names"),
        runtime: DetectorRuntime::Onnxruntime,
        ..Default::default()
    };
    let det = detect::build(&cfg).unwrap().unwrap();
    let info = det.info();
    assert_eq!(
        info.model.as_deref(),
        dir.path().join("nanodet-g-384x288.onnx").to_str(),
        "{info:?}"
    );
    assert!(
        info.warning
            .as_deref()
            .is_some_and(|w| w.contains("is not installed: running its fp32 original")),
        "{info:?}"
    );
    let other = DetectorConfig {
        model: dir.path().join("mine.onnx"),
        ..cfg
    };
    assert!(detect::build(&other)
        .unwrap()
        .unwrap()
        .describe()
        .starts_with("hog"));
}

#[test]
fn fastestdet_finds_people_on_the_street_clip() {
    let frame = &harness::read_frames(&harness::vtest(), 100, 101)[0];
    let cfg = DetectorConfig {
        kind: DetectorKind::Dnn,
        ..harness::fastestdet_config()
    };
    let mut all = Vec::new();
    for rt in RUNTIMES {
        let mut det = load(&cfg, rt).unwrap();
        let found = det.detect(frame).unwrap();
        let people = found.iter().filter(|d| d.label == "person").count();
        assert!(people >= 3, "{rt:?}: {found:?}");
        for d in &found {
            assert!(
                d.bbox.x >= 0.0 && d.bbox.x + d.bbox.w <= 768.0 && d.bbox.y + d.bbox.h <= 576.0
            );
        }
        all.push(found);
    }
    // The same input tensor through either runtime: the same boxes and scores.
    let (cv, ort) = (&all[0], &all[1]);
    assert_eq!(cv.len(), ort.len(), "opencv {cv:?}\nonnxruntime {ort:?}");
    for (a, b) in cv.iter().zip(ort) {
        assert_eq!(a.label, b.label);
        assert!((a.score - b.score).abs() < 1e-3, "{a:?} vs {b:?}");
        for (p, q) in [
            (a.bbox.x, b.bbox.x),
            (a.bbox.y, b.bbox.y),
            (a.bbox.w, b.bbox.w),
            (a.bbox.h, b.bbox.h),
        ] {
            assert!((p - q).abs() < 0.5, "{a:?} vs {b:?}");
        }
    }
}

#[test]
fn hog_finds_people_on_the_street_clip() {
    let frame = &harness::read_frames(&harness::vtest(), 100, 101)[0];
    let cfg = DetectorConfig {
        kind: DetectorKind::Hog,
        min_score: 0.3,
        ..Default::default()
    };
    let mut det = detect::build(&cfg).unwrap().unwrap();
    let found = det.detect(frame).unwrap();
    assert!(
        !found.is_empty() && found.iter().all(|d| d.label == "person"),
        "{found:?}"
    );
}

/// More cameras than cores: `for_cameras` gives each camera a detector, the cameras take turns
/// with fewer networks, and each camera, detecting from its own thread at the same time as the
/// others, gets exactly what a detector of its own finds on the same frame.
#[test]
fn more_cameras_than_cores_each_get_what_a_detector_of_their_own_finds() {
    let frames = harness::read_frames(&harness::vtest(), 100, 104);
    let cfg = DetectorConfig {
        kind: DetectorKind::Dnn,
        model: harness::nanodet(),
        labels: harness::asset("models/nanodet-g/coco80.names"),
        runtime: DetectorRuntime::Onnxruntime,
        ..Default::default()
    };
    let cores = std::thread::available_parallelism().unwrap().get();
    let cameras = detect::for_cameras(&cfg, cores + 2).unwrap();
    assert_eq!(cameras.len(), cores + 2);
    let mut alone = detect::build(&cfg).unwrap().unwrap();
    let expected: Vec<Vec<Detection>> = frames.iter().map(|f| alone.detect(f).unwrap()).collect();
    let frames = std::sync::Arc::new(frames);
    let threads: Vec<_> = cameras
        .into_iter()
        .enumerate()
        .map(|(i, mut camera)| {
            let frames = frames.clone();
            std::thread::spawn(move || {
                // Each camera starts at another frame, so that calls overlap on different input.
                (0..frames.len())
                    .map(|k| {
                        let j = (i + k) % frames.len();
                        (j, camera.detect(&frames[j]).unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for (j, found) in t.join().unwrap() {
            assert!(!found.is_empty());
            assert_eq!(found.len(), expected[j].len(), "frame {j}");
            for (a, b) in found.iter().zip(&expected[j]) {
                assert_eq!(a.label, b.label);
                assert!((a.score - b.score).abs() < 1e-3, "{a:?} vs {b:?}");
                assert!((a.bbox.x - b.bbox.x).abs() < 0.5, "{a:?} vs {b:?}");
                assert!((a.bbox.y - b.bbox.y).abs() < 0.5, "{a:?} vs {b:?}");
            }
        }
    }
}

/// The fp32 model on both runtimes: the same boxes. Then the int8 default (ONNX Runtime): the
/// same people within quantisation's tolerance; and on OpenCV, which cannot run it, its fp32
/// original instead.
#[test]
fn nanodet_finds_the_people_on_the_street_clip_and_both_runtimes_agree() {
    let frame = &harness::read_frames(&harness::vtest(), 100, 101)[0];
    let cfg = DetectorConfig {
        kind: DetectorKind::Dnn,
        model: harness::nanodet_fp32(),
        labels: harness::asset("models/nanodet-g/coco80.names"),
        ..Default::default()
    };
    let mut all = Vec::new();
    for rt in RUNTIMES {
        let mut det = load(&cfg, rt).unwrap();
        assert!(det.describe().starts_with("nanodet "), "{}", det.describe());
        let found = det.detect(frame).unwrap();
        let people: Vec<&Detection> = found.iter().filter(|d| d.label == "person").collect();
        // The ground truth has 6 people in this frame (MOT frame 101).
        assert!(people.len() >= 5, "{rt:?}: {found:?}");
        all.push(found);
    }
    let (cv, ort) = (&all[0], &all[1]);
    assert_eq!(cv.len(), ort.len(), "opencv {cv:?}\nonnxruntime {ort:?}");
    for (a, b) in cv.iter().zip(ort) {
        assert_eq!(a.label, b.label);
        assert!((a.score - b.score).abs() < 1e-3, "{a:?} vs {b:?}");
        assert!(a.bbox.iou(&b.bbox) > 0.99, "{a:?} vs {b:?}");
    }

    let int8 = DetectorConfig {
        model: harness::nanodet(),
        ..cfg.clone()
    };
    // The confident people (the weak boxes only keep tracks alive).
    let people = |found: &[Detection]| -> Vec<BBox> {
        found
            .iter()
            .filter(|d| d.label == "person" && d.score >= cfg.min_score)
            .map(|d| d.bbox)
            .collect()
    };
    let q = people(
        &load(&int8, DetectorRuntime::Onnxruntime)
            .unwrap()
            .detect(frame)
            .unwrap(),
    );
    let f = people(ort);
    // Quantisation moves scores by a few hundredths and boxes by a pixel or two: a person near
    // the threshold may come or go; every person found is where the fp32 model finds one.
    assert!(
        q.len() >= 5 && q.len().abs_diff(f.len()) <= 1,
        "int8 {q:?}\nfp32 {f:?}"
    );
    for b in &q {
        let best = f.iter().map(|g| g.iou(b)).fold(0.0, f32::max);
        assert!(best > 0.7, "int8 person {b:?} is nowhere in fp32's {f:?}");
    }
    let mut cv8 = load(&int8, DetectorRuntime::Opencv).unwrap();
    assert!(
        cv8.describe().contains("nanodet-g-384x288.onnx"),
        "{}",
        cv8.describe()
    );
    let c = people(&cv8.detect(frame).unwrap());
    assert_eq!(c.len(), f.len(), "opencv {c:?}\nfp32 {f:?}");
    assert!(
        c.iter().zip(&f).all(|(a, b)| a.iou(b) > 0.99),
        "opencv {c:?}\nfp32 {f:?}"
    );
}

/// NanoDet's input tensor for `frame` at `w` x `h` (its own normalisation), NCHW.
fn nanodet_blob(frame: &Mat, w: i32, h: i32) -> Vec<f32> {
    use opencv::core::{Size, CV_32F};
    use opencv::prelude::*;
    let blob = opencv::dnn::blob_from_image(
        frame,
        1.0,
        Size::new(w, h),
        Scalar::new(103.53, 116.28, 123.675, 0.0),
        false,
        false,
        CV_32F,
    )
    .unwrap();
    let std = [57.375f32, 57.12, 58.395];
    let plane = (w * h) as usize;
    blob.data_typed::<f32>()
        .unwrap()
        .chunks(plane)
        .zip(std)
        .flat_map(|(c, s)| c.iter().map(move |v| v / s))
        .collect()
}

#[test]
fn the_converter_gives_the_reference_conversions_outputs_on_real_frames() {
    use ocellus::pipeline::detect::onnxruntime::{self, OrtEngine, Shared};
    let Some(reference) = harness::nanodet_reference() else {
        eprintln!("skipped: no ../shared/models/nanodet-g/reference-416.onnx on this clone");
        return;
    };
    // The converter, run as models/fetch.sh runs it, at the reference's input size.
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("nanodet-416.onnx");
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(harness::asset("models/tfjs2onnx.py"))
        .arg(harness::asset("models/nanodet-g/nanodet.json"))
        .arg(&ours)
        .args(["--width", "416", "--height", "416"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    onnxruntime::load(None).expect("ONNX Runtime (scripts/setup.sh fetches it)");
    let session = |model: &std::path::Path| {
        let cfg = DetectorConfig {
            model: model.to_owned(),
            threads: 1,
            input_width: 416,
            input_height: 416,
            ..Default::default()
        };
        OrtEngine::new(&cfg, &Shared::new(model).unwrap()).unwrap()
    };
    let (mut theirs, mut mine) = (session(&reference), session(&ours));
    let mut worst = 0.0f32;
    // Five frames across the clip: people near and far, in groups and alone.
    for k in [0, 160, 320, 480, 640] {
        let frame = &harness::read_frames(&harness::vtest(), k, k + 1)[0];
        let blob = nanodet_blob(frame, 416, 416);
        let a: Vec<(Vec<i32>, Vec<f32>)> = theirs
            .run([1, 3, 416, 416], &blob)
            .unwrap()
            .iter()
            .map(|t| (t.shape.to_vec(), t.data.to_vec()))
            .collect();
        let b = mine.run([1, 3, 416, 416], &blob).unwrap();
        assert_eq!(a.len(), 6);
        assert_eq!(b.len(), 6);
        // Matched by shape, as the decoder finds them (names may differ between converters).
        for (shape, data) in &a {
            let t = b.iter().find(|t| t.shape == shape.as_slice()).unwrap();
            for (x, y) in data.iter().zip(t.data) {
                worst = worst.max((x - y).abs());
            }
        }
    }
    eprintln!("converter vs reference: max abs difference {worst:e} over 5 frames");
    assert!(worst < 1e-4, "max abs difference {worst}");
}

/// `detector.regions` on a 3 MP camera (the street frame scaled to 2048x1536), with a far-away
/// person planted up the road: a person from the same clip, scaled down to `PLANTED_H` pixels
/// tall. The whole frame, scaled to the network's 384x288, makes them ten pixels tall and
/// NanoDet-g sees nothing there, not even a weak box; the crop the pipeline plans around their
/// motion, at the camera's own resolution, finds them confidently where they are (score 0.75 on
/// this machine).
#[test]
fn a_small_far_person_is_found_in_a_region_that_the_full_frame_misses() {
    use opencv::core::{Rect, Size};
    use opencv::imgproc;
    const PLANTED_H: i32 = 56;
    let frames = harness::read_frames(&harness::vtest(), 0, 1);
    let mut big = Mat::default();
    imgproc::resize(
        &frames[0],
        &mut big,
        Size::new(2048, 1536),
        0.0,
        0.0,
        imgproc::INTER_LINEAR,
    )
    .unwrap();
    // Ground truth, frame 1: person 15 at (258, 219) 33x89 in the original frame.
    let person = Mat::roi(&frames[0], Rect::new(258, 219, 33, 89)).unwrap();
    let w = (33.0 * PLANTED_H as f64 / 89.0).round() as i32;
    let mut small = Mat::default();
    imgproc::resize(
        &person,
        &mut small,
        Size::new(w, PLANTED_H),
        0.0,
        0.0,
        imgproc::INTER_AREA,
    )
    .unwrap();
    let at = Rect::new(1100, 160, w, PLANTED_H);
    small
        .copy_to(&mut Mat::roi_mut(&mut big, at).unwrap())
        .unwrap();
    let planted = BBox::new(at.x as f32, at.y as f32, at.width as f32, at.height as f32);

    let cfg = DetectorConfig {
        kind: DetectorKind::Dnn,
        model: harness::nanodet(),
        labels: harness::asset("models/nanodet-g/coco80.names"),
        ..Default::default()
    };
    let mut det = load(&cfg, DetectorRuntime::Onnxruntime).unwrap();
    let on_planted = |found: &[Detection], weak_too: bool| {
        found
            .iter()
            .filter(|d| d.label == "person" && (weak_too || !d.weak))
            .map(|d| d.bbox.iou(&planted))
            .fold(0.0f32, f32::max)
    };
    let full = det.detect(&big).unwrap();
    assert!(
        on_planted(&full, true) < 0.1,
        "the full frame found them: {full:?}"
    );
    // What the pipeline plans from motion on the planted person.
    let plan = detect::regions::plan((2048, 1536), (384, 288), &[planted]);
    let detect::regions::Plan::Crops(crops) = plan else {
        panic!("no crops: {plan:?}");
    };
    assert_eq!(crops.len(), 1);
    let found = det.detect_crops(&big, &crops).unwrap();
    assert!(
        on_planted(&found, false) >= 0.5,
        "the crop missed them: {found:?}"
    );
}
