//! Detectors on real models and real frames: the planted-box fixtures for the `yolo` and
//! `yolov5` decoders, FastestDet and HOG on the street clip, and broken model files; every DNN
//! case on both runtimes (ONNX Runtime, which scripts/setup.sh fetches, and OpenCV's DNN).

mod common;

use opencv::core::{Mat, Scalar, CV_8UC3};

use ocellus::config::{DetectorConfig, DetectorKind, DetectorRuntime, ModelFamily};
use ocellus::detect::{self, ObjectDetector};
use ocellus::errors::DetectError;
use ocellus::models::{BBox, Detection};

fn planted_config(family: ModelFamily, model: &str) -> DetectorConfig {
    DetectorConfig {
        kind: DetectorKind::Dnn,
        family,
        model: common::fixture(model),
        labels: common::fixture("planted.names"),
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
        let cols = ocellus::detect::tiles::columns(640, 2);
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
fn corrupt_model_file_is_a_load_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.onnx");
    let mut bytes = std::fs::read(common::fastestdet()).unwrap();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&bad, &bytes).unwrap();
    let cfg = DetectorConfig {
        kind: DetectorKind::Dnn,
        model: bad,
        labels: common::asset("models/fastestdet/coco.names"),
        ..Default::default()
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

#[test]
fn fastestdet_finds_people_on_the_street_clip() {
    let frame = &common::read_frames(&common::vtest(), 100, 101)[0];
    let cfg = DetectorConfig {
        kind: DetectorKind::Dnn,
        model: common::fastestdet(),
        labels: common::asset("models/fastestdet/coco.names"),
        ..Default::default()
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
    let frame = &common::read_frames(&common::vtest(), 100, 101)[0];
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
