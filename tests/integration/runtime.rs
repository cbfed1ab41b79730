//! The two inference runtimes end to end: ONNX Runtime (the library scripts/setup.sh fetches
//! into vendor/onnxruntime/) and OpenCV's DNN module give the same events; a missing or wrong
//! ONNX Runtime library is a clear error with `runtime = "onnxruntime"` and a warning and a
//! fallback with `auto`, never a crash.

use crate::harness;
use std::path::Path;
use std::process::{Command, Output};

use harness::{events, ocellus, stderr};

fn replay_json(video: &Path, runtime: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "replay",
        video.to_str().unwrap(),
        "--json",
        "--runtime",
        runtime,
    ];
    args.extend_from_slice(extra);
    ocellus(&args)
}

/// The street clip's first 30 s (a dozen people come and go) with the fp32 model, once per
/// runtime: the same events (labels, counts, times within one frame, scores within 1e-3). On
/// OpenCV the default config, whose int8 model OpenCV cannot run: its fp32 original, said
/// loudly. The whole clip took 81 s of the suite for no more evidence.
#[test]
fn both_runtimes_give_the_same_events_on_the_street_clip() {
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("street.avi");
    harness::write_clip(
        &video,
        &harness::read_frames(&harness::vtest(), 0, 300),
        10.0,
    );
    let fp32 = dir.path().join("fp32.toml");
    std::fs::write(
        &fp32,
        format!(
            "[detector]\nmodel = {:?}\nlabels = {:?}\n",
            harness::nanodet_fp32(),
            harness::asset("models/nanodet-g/coco80.names")
        ),
    )
    .unwrap();
    let ort = replay_json(&video, "onnxruntime", &["--config", fp32.to_str().unwrap()]);
    assert!(ort.status.success(), "{}", stderr(&ort));
    assert!(
        stderr(&ort).contains("on onnxruntime 1."),
        "{}",
        stderr(&ort)
    );
    let cv = replay_json(&video, "opencv", &[]);
    assert!(cv.status.success(), "{}", stderr(&cv));
    assert!(
        stderr(&cv)
            .contains("OpenCV's DNN module cannot run the int8 model: running its fp32 original")
            && stderr(&cv).contains(
                "detector nanodet models/nanodet-g/nanodet-g-384x288.onnx 384x288 on opencv 4."
            ),
        "{}",
        stderr(&cv)
    );
    let (a, b) = (events(&ort), events(&cv));
    assert!(a.len() >= 8, "{} events", a.len());
    assert_eq!(a.len(), b.len(), "onnxruntime {a:?}\nopencv {b:?}");
    let frame_ms = 100;
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["label"], y["label"], "{x} vs {y}");
        for key in ["start_ms", "end_ms"] {
            let d = (x[key].as_i64().unwrap() - y[key].as_i64().unwrap()).abs();
            assert!(d <= frame_ms, "{key}: {x} vs {y}");
        }
        let d = (x["top_score"].as_f64().unwrap() - y["top_score"].as_f64().unwrap()).abs();
        assert!(d < 1e-3, "top_score: {x} vs {y}");
    }
}

/// A short clip and a config naming `library` as ONNX Runtime's, in `dir`.
fn setup(dir: &Path, library: &Path) -> (String, String) {
    let clip = dir.join("short.avi");
    harness::write_clip(&clip, &harness::read_frames(&harness::vtest(), 0, 30), 10.0);
    let cfg = dir.join("ocellus.toml");
    std::fs::write(
        &cfg,
        format!(
            "[detector]\nonnxruntime_library = {:?}\n",
            library.to_str().unwrap()
        ),
    )
    .unwrap();
    (
        clip.to_str().unwrap().to_string(),
        cfg.to_str().unwrap().to_string(),
    )
}

/// With `--runtime onnxruntime` the replay fails at once with one line naming the library and
/// what is wrong with it; no panic, no signal, nothing on stdout.
fn assert_refused(library: &Path, why: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (clip, cfg) = setup(dir.path(), library);
    let out = ocellus(&[
        "replay",
        &clip,
        "--config",
        &cfg,
        "--runtime",
        "onnxruntime",
        "--json",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].starts_with("error: ")
            && lines[0].contains(library.to_str().unwrap())
            && lines[0].contains(why),
        "{err}"
    );
    assert!(harness::stdout(&out).is_empty());
}

/// With `auto` the same library gives a warning naming it, and the replay runs on OpenCV.
fn assert_auto_falls_back(library: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let (clip, cfg) = setup(dir.path(), library);
    let out = ocellus(&["replay", &clip, "--config", &cfg, "--json"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("WARN") && err.contains(library.to_str().unwrap()),
        "{err}"
    );
    assert!(err.contains("on opencv 4."), "{err}");
}

#[test]
fn a_missing_library_is_a_clear_error_and_auto_falls_back_with_a_warning() {
    let missing = Path::new("/nonexistent/libonnxruntime.so");
    assert_refused(missing, "not found");
    assert_auto_falls_back(missing);
}

#[test]
fn a_file_that_is_not_a_library_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libonnxruntime.so");
    std::fs::write(&fake, "not an ELF file\n".repeat(50)).unwrap();
    assert_refused(&fake, "cannot load it as a shared library");
    assert_auto_falls_back(&fake);
}

/// A real shared library that is not ONNX Runtime (the C library this test runs on).
#[test]
fn a_library_that_is_not_onnxruntime_is_a_clear_error() {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let libc = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libc.so") || p.contains("/libc-"))
        .expect("libc in this process's maps");
    assert_refused(Path::new(libc), "it is not ONNX Runtime");
}

/// `ORT_DYLIB_PATH` is used when the config names no library, and is the only place tried.
#[test]
fn ort_dylib_path_is_where_the_library_is_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("short.avi");
    harness::write_clip(&clip, &harness::read_frames(&harness::vtest(), 0, 10), 10.0);
    let run = |path: &str| {
        Command::new(env!("CARGO_BIN_EXE_ocellus"))
            .args(["replay", clip.to_str().unwrap(), "--runtime", "onnxruntime"])
            .current_dir(harness::root())
            .env("ORT_DYLIB_PATH", path)
            .env_remove("OCELLUS_LOG")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let bad = run("/nonexistent/ort/libonnxruntime.so.1.99.0");
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("/nonexistent/ort/libonnxruntime.so.1.99.0: not found"),
        "{}",
        stderr(&bad)
    );
    let vendored = harness::asset("vendor/onnxruntime/libonnxruntime.so");
    let good = run(vendored.to_str().unwrap());
    assert!(good.status.success(), "{}", stderr(&good));
    assert!(
        stderr(&good).contains("on onnxruntime 1."),
        "{}",
        stderr(&good)
    );
}
