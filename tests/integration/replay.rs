//! `ocellus replay` end to end: the real binary on real video with the real model.

use crate::harness;
use std::path::Path;

use harness::{events, ocellus, stderr, stdout};
use opencv::core::{Mat, Rect, Scalar, CV_8UC3};
use opencv::prelude::*;

use ocellus::config::{DetectorConfig, DetectorKind, TrackerConfig};

/// vtest.avi: 795 frames at 10 fps.
const CLIP_MS: i64 = 79_400;

#[test]
fn street_clip_gives_person_events_and_two_runs_print_identical_events() {
    let video = harness::vtest();
    let first = ocellus(&["replay", video.to_str().unwrap(), "--json"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let evs = events(&first);
    let people: Vec<_> = evs.iter().filter(|e| e["label"] == "person").collect();
    // 19 people walk through the clip (its public ground truth; the test below holds the events
    // to them one by one); a dead detector would leave this band below, fragmentation above.
    assert!(
        (18..=200).contains(&people.len()),
        "{} person events",
        people.len()
    );
    let tracker = TrackerConfig::default();
    // min_hits detections at 10 fps span at least (min_hits - 1) frames.
    let min_span = (tracker.min_hits as i64 - 1) * 100;
    for e in &evs {
        let (start, end) = (
            e["start_ms"].as_i64().unwrap(),
            e["end_ms"].as_i64().unwrap(),
        );
        assert!(start >= 0 && end <= CLIP_MS, "{e}");
        assert!(
            end - start >= min_span,
            "shorter than the confirmation: {e}"
        );
        assert!(
            e["top_score"].as_f64().unwrap() >= tracker.min_score as f64,
            "{e}"
        );
    }
    assert!(
        stderr(&first).contains("frames   795 in"),
        "{}",
        stderr(&first)
    );

    let second = ocellus(&["replay", video.to_str().unwrap(), "--json"]);
    assert!(second.status.success());
    assert_eq!(
        stdout(&first),
        stdout(&second),
        "replay is not deterministic"
    );
}

/// The first `n` frames of vtest.avi as a short MJPEG clip.
fn short_clip(dir: &Path, n: usize) -> std::path::PathBuf {
    let path = dir.join("short.avi");
    harness::write_clip(&path, &harness::read_frames(&harness::vtest(), 0, n), 10.0);
    path
}

/// Frames are detected by several workers at once and put back in order, with the detector on
/// every frame and with the default motion gate (where the workers take the frames with motion
/// and the pipeline the rest): the events, and every frame's detections, are the same for any
/// number of workers.
#[test]
fn detector_workers_change_nothing_but_speed() {
    let dir = tempfile::tempdir().unwrap();
    // 80 frames of the street, then the last one held for 40: motion stops while the people
    // are still tracked, so the pipeline detects those frames itself.
    let clip = dir.path().join("held.avi");
    let mut frames = harness::read_frames(&harness::vtest(), 0, 80);
    let last = frames[79].clone();
    frames.extend(std::iter::repeat_n(last, 40));
    harness::write_clip(&clip, &frames, 10.0);
    for every_frame in [true, false] {
        let run = |workers: &str| {
            let trace = dir.path().join(format!("trace{workers}.jsonl"));
            let mut args = vec![
                "replay",
                clip.to_str().unwrap(),
                "--json",
                "--workers",
                workers,
                "--trace",
                trace.to_str().unwrap(),
            ];
            if every_frame {
                args.push("--every-frame");
            }
            let out = ocellus(&args);
            assert!(out.status.success(), "{}", stderr(&out));
            assert!(
                stderr(&out).contains(&format!("x{workers} workers")) || workers == "1",
                "{}",
                stderr(&out)
            );
            (stdout(&out), std::fs::read_to_string(trace).unwrap())
        };
        let (one, one_trace) = run("1");
        let (three, three_trace) = run("3");
        assert!(events_of(&one) >= 5, "every frame {every_frame}: {one}");
        assert_eq!(one, three, "every frame {every_frame}");
        assert_eq!(one_trace.lines().count(), 120);
        assert_eq!(one_trace, three_trace, "every frame {every_frame}");
        if !every_frame {
            // The held frames have no motion but tracked people: detected by the pipeline,
            // not the workers, and the same with either.
            let held_detected = three_trace
                .lines()
                .filter(|l| l.contains("\"motion\":false") && l.contains("\"detector_ran\":true"))
                .count();
            assert!(
                held_detected >= 10,
                "{held_detected} frames without motion detected"
            );
        }
    }
}

fn events_of(json_lines: &str) -> usize {
    json_lines.lines().filter(|l| !l.trim().is_empty()).count()
}

#[test]
fn expect_passes_on_a_recorded_run_and_fails_with_a_diff_on_a_wrong_one() {
    let dir = tempfile::tempdir().unwrap();
    let clip = short_clip(dir.path(), 150);
    let clip = clip.to_str().unwrap();
    let run = ocellus(&["replay", clip, "--json"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let recorded = stdout(&run);
    assert!(
        events(&run).len() >= 2,
        "need events to compare: {recorded}"
    );

    let good = dir.path().join("good.jsonl");
    std::fs::write(&good, &recorded).unwrap();
    let ok = ocellus(&["replay", clip, "--expect", good.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stderr(&ok).contains("expectation met"), "{}", stderr(&ok));

    // Move the first event 20 s later and ask for one more car than there is.
    let mut evs = events(&run);
    let start = evs[0]["start_ms"].as_i64().unwrap();
    evs[0]["start_ms"] = (start + 20_000).into();
    evs[0]["end_ms"] = (start + 21_000).into();
    let cars = evs.iter().filter(|e| e["label"] == "car").count();
    let wrong = serde_json::json!({
        "tolerance_ms": 500,
        "events": evs,
        "counts": { "car": cars + 1 },
    });
    let wrong_path = dir.path().join("wrong.json");
    std::fs::write(&wrong_path, wrong.to_string()).unwrap();
    let bad = ocellus(&["replay", clip, "--expect", wrong_path.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    let diff = stderr(&bad);
    assert!(
        diff.contains("1 missing, 1 unexpected, 1 wrong counts"),
        "{diff}"
    );
    assert!(
        diff.contains(&format!("expected {} events, found {cars}", cars + 1)),
        "{diff}"
    );
}

/// Two real people, cut out of the street clip, walk through each other on a plain background.
#[test]
fn two_people_crossing_end_as_exactly_two_tracks() {
    let mut det = ocellus::pipeline::detect::build(&DetectorConfig {
        kind: DetectorKind::Dnn,
        ..harness::fastestdet_config()
    })
    .unwrap()
    .unwrap();
    // Two confident, reasonably large people with nobody else inside their crop, from the
    // first frame (of a few) that has them.
    let margin = 4.0;
    let frames_seen = harness::read_frames(&harness::vtest(), 0, 400);
    let (frame, people) = frames_seen
        .iter()
        .step_by(25)
        .find_map(|frame| {
            let all = det.detect(frame).unwrap();
            let mut isolated: Vec<_> = all
                .iter()
                .filter(|d| d.label == "person" && d.bbox.h >= 70.0 && d.score >= 0.75)
                .filter(|d| {
                    let padded = ocellus::pipeline::values::BBox::new(
                        d.bbox.x - margin,
                        d.bbox.y - margin,
                        d.bbox.w + 2.0 * margin,
                        d.bbox.h + 2.0 * margin,
                    );
                    all.iter()
                        .all(|o| std::ptr::eq(o, *d) || o.bbox.iou(&padded) == 0.0)
                })
                .cloned()
                .collect();
            isolated.sort_by(|a, b| b.score.total_cmp(&a.score));
            (isolated.len() >= 2).then_some((frame, isolated))
        })
        .expect("a frame with two isolated people");
    let crop = |i: usize| {
        let b = people[i].bbox;
        let m = margin as i32;
        let r = Rect::new(
            b.x as i32 - m,
            b.y as i32 - m,
            b.w as i32 + 2 * m,
            b.h as i32 + 2 * m,
        );
        let r = r & Rect::new(0, 0, frame.cols(), frame.rows());
        (Mat::roi(frame, r).unwrap().try_clone().unwrap(), r)
    };
    let (a, ra) = crop(0);
    let (b, rb) = crop(1);

    let (w, h, n) = (640, 360, 70);
    let mut frames = Vec::new();
    for i in 0..n {
        let mut f =
            Mat::new_rows_cols_with_default(h, w, CV_8UC3, Scalar::new(120.0, 125.0, 118.0, 0.0))
                .unwrap();
        let t = i as f64 / (n - 1) as f64;
        let ax = (40.0 + t * (w - 80 - ra.width) as f64) as i32;
        let bx = (w - 40 - rb.width) - (t * (w - 80 - rb.width) as f64) as i32;
        let mut paste = |img: &Mat, r: Rect, x: i32, y: i32| {
            let mut dst = Mat::roi_mut(&mut f, Rect::new(x, y, r.width, r.height)).unwrap();
            img.copy_to(&mut dst).unwrap();
        };
        paste(&a, ra, ax, 120);
        // B walks in front: pasted last, it hides A where they overlap.
        paste(&b, rb, bx, 130);
        frames.push(f);
    }
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("crossing.avi");
    harness::write_clip(&clip, &frames, 10.0);

    let run = ocellus(&["replay", clip.to_str().unwrap(), "--json"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let evs = events(&run);
    let people: Vec<_> = evs.iter().filter(|e| e["label"] == "person").collect();
    assert_eq!(people.len(), 2, "{}", stdout(&run));
    let tracks: std::collections::BTreeSet<_> =
        people.iter().map(|e| e["track_id"].as_u64()).collect();
    assert_eq!(tracks.len(), 2);
    // Both are followed from start to end: a swap or a break would end one early.
    for e in people {
        assert!(e["start_ms"].as_i64().unwrap() <= 1000, "{e}");
        assert!(e["end_ms"].as_i64().unwrap() >= 6000, "{e}");
    }
}

/// Runs a replay that must fail; checks the one-line error, the exit code, that nothing
/// panicked, and that no database was left behind.
fn assert_clean_failure(args: &[&str], expect_in_message: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    let mut full: Vec<&str> = vec!["replay"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--db", db.to_str().unwrap(), "--json"]);
    let out = ocellus(&full);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(expect_in_message),
        "{err}"
    );
    assert!(
        stdout(&out).is_empty(),
        "nothing on stdout: {}",
        stdout(&out)
    );
    assert!(!db.exists(), "{args:?} left a database behind");
}

#[test]
fn missing_video_is_a_clear_error() {
    assert_clean_failure(&["/nonexistent/clip.avi"], "does not exist");
}

#[test]
fn file_that_is_not_a_video_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("notes.avi");
    std::fs::write(&fake, "these are not frames\n".repeat(100)).unwrap();
    assert_clean_failure(&[fake.to_str().unwrap()], "not a video");
}

#[test]
fn missing_model_is_a_clear_error() {
    let video = harness::vtest();
    assert_clean_failure(
        &[
            video.to_str().unwrap(),
            "--model",
            "/nonexistent/model.onnx",
        ],
        "does not exist",
    );
}

#[test]
fn corrupt_model_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("garbage.onnx");
    std::fs::write(&bad, b"\x08\x07garbage, not protobuf").unwrap();
    let video = harness::vtest();
    assert_clean_failure(
        &[video.to_str().unwrap(), "--model", bad.to_str().unwrap()],
        "cannot load model",
    );
}

#[test]
fn config_with_unknown_key_or_wrong_type_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let video = harness::vtest();
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(
        &unknown,
        "[tracker]\nmin_hits = 4\n\n[detector]\nthreshold = 0.5\n",
    )
    .unwrap();
    assert_clean_failure(
        &[
            video.to_str().unwrap(),
            "--config",
            unknown.to_str().unwrap(),
        ],
        "unknown.toml:5: unknown field `threshold`",
    );
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(&wrong, "[storage]\nbatch_ms = \"soon\"\n").unwrap();
    assert_clean_failure(
        &[video.to_str().unwrap(), "--config", wrong.to_str().unwrap()],
        "wrong.toml:2:",
    );
}

#[test]
fn truncated_video_keeps_what_it_decoded_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.avi");
    let bytes = std::fs::read(harness::vtest()).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 4]).unwrap();
    let db = dir.path().join("cut.db");
    let out = ocellus(&[
        "replay",
        cut.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--json",
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("video ends early") && !err.contains("panicked"),
        "{err}"
    );
    // The events of the part that decoded are stored, and the database is sound for the next run.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let stored: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored as usize, events(&out).len());
    let again = ocellus(&[
        "replay",
        cut.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(again.status.code(), Some(1));
    let ids: Vec<i64> = events(&again)
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert!(
        ids.iter().all(|&id| id > stored),
        "a second run continues the ids: {ids:?}"
    );
}

#[test]
fn replay_db_holds_every_printed_event_with_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let clip = short_clip(dir.path(), 120);
    let db = dir.path().join("r.db");
    let out = ocellus(&[
        "replay",
        clip.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = events(&out);
    assert!(!printed.is_empty());
    let conn = ocellus::db::open_reader(&db).unwrap();
    for e in &printed {
        let stored = ocellus::db::get_event(&conn, e["id"].as_i64().unwrap())
            .unwrap()
            .unwrap();
        let printed: ocellus::pipeline::values::Event = serde_json::from_value(e.clone()).unwrap();
        assert_eq!(stored, printed);
        let jpeg = ocellus::db::get_snapshot(&conn, stored.id)
            .unwrap()
            .expect("snapshot");
        let img = image::load_from_memory(&jpeg).unwrap();
        assert!(
            img.width().max(img.height()) <= 320 && img.width() > 100,
            "{}x{}",
            img.width(),
            img.height()
        );
    }
}

/// MOTChallenge rows (`frame,id,x,y,w,h,conf,...`) as (frame, id, box, conf).
fn mot_rows(text: &str) -> Vec<(u32, u64, ocellus::pipeline::values::BBox, f32)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Vec<f32> = l.split(',').map(|x| x.trim().parse().unwrap()).collect();
            (
                v[0] as u32,
                v[1] as u64,
                ocellus::pipeline::values::BBox::new(v[2], v[3], v[4], v[5]),
                v[6],
            )
        })
        .collect()
}

/// The event-truth check on the sample clip against its public ground truth (19 people, each one
/// walk), with the default config: every person gets an event, nothing that is not a person
/// gets one, and a person is not announced again every time their track drops. An event is on a person when half of its track's boxes
/// overlap one of theirs by IoU 0.3 (bench/mot_eval.py counts the same way).
///
/// Before the tracker and event rule of docs/events.md: 123 person events, 38 on nothing.
/// With FastestDet and that tracker: 24, 1 on nothing, 19 of 19 people. With NanoDet-g (the
/// default model) and the tracker defaults re-derived for it: 19, 0 on nothing, 19 of 19; the
/// issue's goal is at most 20, none on nothing, 19 of 19. The bounds leave a margin (2 events, 1
/// on nothing, 1 person) for a machine whose floating point differs, not room for a regression.
#[test]
fn street_clip_events_match_the_ground_truth_people() {
    let dir = tempfile::tempdir().unwrap();
    let tracks = dir.path().join("tracks.txt");
    let video = harness::vtest();
    let out = ocellus(&[
        "replay",
        video.to_str().unwrap(),
        "--json",
        "--tracks",
        tracks.to_str().unwrap(),
        "--tracks-label",
        "person",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let person_events = events(&out)
        .into_iter()
        .filter(|e| e["label"] == "person")
        .count();
    let gt = mot_rows(&std::fs::read_to_string(harness::vtest_ground_truth()).unwrap());
    let hyp = mot_rows(&std::fs::read_to_string(&tracks).unwrap());
    let people: std::collections::BTreeSet<u64> = gt.iter().map(|r| r.1).collect();
    assert_eq!(people.len(), 19);

    // Per event track: how many boxes, and how many overlap each person.
    let mut boxes = std::collections::BTreeMap::<u64, u32>::new();
    let mut overlaps =
        std::collections::BTreeMap::<u64, std::collections::BTreeMap<u64, u32>>::new();
    for &(frame, id, b, _) in &hyp {
        *boxes.entry(id).or_default() += 1;
        let best = gt
            .iter()
            .filter(|g| g.0 == frame)
            .map(|g| (g.2.iou(&b), g.1))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((_, person)) = best.filter(|(iou, _)| *iou >= 0.3) {
            *overlaps.entry(id).or_default().entry(person).or_default() += 1;
        }
    }
    assert_eq!(boxes.len(), person_events, "one track per person event");
    let mut on_nothing = Vec::new();
    let mut covered = std::collections::BTreeSet::new();
    for (id, n) in &boxes {
        let hits = overlaps.get(id);
        let matched: u32 = hits.map_or(0, |h| h.values().sum());
        if matched * 2 >= *n {
            let (person, _) = hits.unwrap().iter().max_by_key(|(_, c)| **c).unwrap();
            covered.insert(*person);
        } else {
            on_nothing.push(*id);
        }
    }
    assert!(
        person_events <= 21,
        "{person_events} person events for 19 people"
    );
    assert!(
        on_nothing.len() <= 1,
        "{} events on no person (tracks {on_nothing:?})",
        on_nothing.len()
    );
    assert!(
        covered.len() >= 18,
        "only {} of 19 people have an event",
        covered.len()
    );
}

#[test]
fn a_tracks_or_trace_file_that_cannot_be_written_fails_before_the_replay_and_names_its_path() {
    let video = harness::vtest();
    for flag in ["--tracks", "--trace"] {
        let out = ocellus(&[
            "replay",
            video.to_str().unwrap(),
            flag,
            "/nonexistent/dir/out.txt",
        ]);
        assert_eq!(out.status.code(), Some(2), "{flag}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("cannot write /nonexistent/dir/out.txt"),
            "{flag}: {}",
            stderr(&out)
        );
        // Not after a whole replay: no summary was printed.
        assert!(!stderr(&out).contains("frames   795"), "{}", stderr(&out));
    }
}

/// The config is checked once, on what will run: the file's settings with the command line's on
/// top. A bad setting in the file fails before any frame, naming the key; so does a `--listen`
/// that would put the daemon on the network without a token, though the file alone is fine.
#[test]
fn config_is_validated_after_command_line_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[detector]\ntiles = 9\n").unwrap();
    let video = harness::vtest();
    let out = ocellus(&[
        "replay",
        video.to_str().unwrap(),
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("detector.tiles"), "{}", stderr(&out));

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let out = ocellus(&[
        "run",
        "--config",
        good.to_str().unwrap(),
        "--listen",
        "0.0.0.0:0",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("server.listen") && stderr(&out).contains("server.token"),
        "{}",
        stderr(&out)
    );
}

/// Replay keeps `detector.fps` on the frames' clock, as a live camera would: on an empty scene
/// (nothing to follow, so nothing makes a run needed) at 2 runs a second, a 10 fps clip is
/// detected on frames 0, 5, 10, 15, with one worker or a pool; `--every-frame` detects all.
/// (The old name, `max_fps`, is still read.)
#[test]
fn replay_keeps_the_detector_rate_on_the_frames_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("empty.avi");
    harness::grey_clip(&clip, 20, 10.0);
    for (key, extra) in [
        ("fps", &[][..]),
        ("max_fps", &[][..]),
        ("fps", &["--every-frame"][..]),
    ] {
        let cfg = dir.path().join("limited.toml");
        std::fs::write(&cfg, format!("[detector]\n{key} = 2\nwhen = \"always\"\n")).unwrap();
        let ran = |workers: &str| {
            let trace = dir.path().join(format!("trace{workers}.jsonl"));
            let mut args = vec![
                "replay",
                clip.to_str().unwrap(),
                "--config",
                cfg.to_str().unwrap(),
                "--trace",
                trace.to_str().unwrap(),
                "--workers",
                workers,
            ];
            args.extend(extra);
            let out = ocellus(&args);
            assert!(out.status.success(), "{}", stderr(&out));
            std::fs::read_to_string(&trace)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .enumerate()
                .filter(|(_, l)| l["detector_ran"] == true)
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        };
        let one = ran("1");
        if extra.is_empty() {
            assert_eq!(one, [0, 5, 10, 15], "{key}");
        } else {
            assert_eq!(one, (0..20).collect::<Vec<_>>());
        }
        assert_eq!(ran("2"), one, "{key} {extra:?}: a pool decided otherwise");
    }
}

/// A zone over the right third of the street and a line down its middle: some person events
/// entered the zone and some did not, people crossed the line both ways, the summary's counts
/// are the events' crossings, and the database keeps zones and crossings and filters by zone.
#[test]
fn zones_and_a_counting_line_on_the_street_clip() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("zones.toml");
    std::fs::write(
        &cfg,
        r#"
[[cameras]]
id = "street"
source = "media/vtest.avi"

[[cameras.zones]]
name = "right_third"
points = [[0.67, 0.0], [1.0, 0.0], [1.0, 1.0], [0.67, 1.0]]
labels = ["person"]

[[cameras.lines]]
name = "middle"
points = [[0.5, 0.0], [0.5, 1.0]]
"#,
    )
    .unwrap();
    let db = dir.path().join("events.db");
    let video = harness::vtest();
    let out = ocellus(&[
        "replay",
        video.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--camera",
        "street",
        "--db",
        db.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let people: Vec<_> = events(&out)
        .into_iter()
        .filter(|e| e["label"] == "person")
        .collect();
    let entered = people
        .iter()
        .filter(|e| {
            e["zones"]
                .as_array()
                .unwrap()
                .iter()
                .any(|z| z == "right_third")
        })
        .count();
    assert!(
        entered > 0 && entered < people.len(),
        "{entered} of {} entered",
        people.len()
    );
    let crossings: Vec<&serde_json::Value> = people
        .iter()
        .flat_map(|e| e["crossings"].as_array().unwrap())
        .collect();
    let way = |d: &str| crossings.iter().filter(|c| c["direction"] == d).count();
    let (left, right) = (way("left"), way("right"));
    assert!(left > 0 && right > 0, "left {left}, right {right}");
    // Each crossing is inside its event's time span, and the counts are the events'.
    for e in &people {
        for c in e["crossings"].as_array().unwrap() {
            let ms = c["ms"].as_i64().unwrap();
            assert!(
                ms >= e["start_ms"].as_i64().unwrap() && ms <= e["end_ms"].as_i64().unwrap(),
                "{e}"
            );
            assert_eq!(c["line"], "middle");
        }
    }
    let summary = stderr(&out);
    assert!(
        summary.contains(&format!("zone     right_third: {entered} events entered")),
        "{summary}"
    );
    assert!(
        summary.contains(&format!(
            "line     middle: {left} crossings left, {right} right"
        )),
        "{summary}"
    );
    // The database has them, and the zone filter finds exactly the events that entered.
    let conn = ocellus::db::open_reader(&db).unwrap();
    let q = ocellus::pipeline::values::EventQuery {
        zone: Some("right_third".into()),
        limit: Some(500),
        ..Default::default()
    };
    let stored = ocellus::db::query_events(&conn, &q, 500).unwrap();
    assert_eq!(stored.len(), entered);
    assert!(stored
        .iter()
        .all(|e| e.zones.contains(&"right_third".to_string())));
    let stored_crossings: usize = ocellus::db::query_events(
        &conn,
        &ocellus::pipeline::values::EventQuery {
            limit: Some(500),
            ..Default::default()
        },
        500,
    )
    .unwrap()
    .iter()
    .map(|e| e.crossings.len())
    .sum();
    assert_eq!(stored_crossings, left + right);
}

/// Without the default model (NanoDet-g not converted, say), a replay detects with FastestDet,
/// and says why: never a silent change of model.
#[test]
fn without_the_default_model_fastestdet_runs_and_says_why() {
    // The binary, outside the checkout (above it, it would find NanoDet-g), beside FastestDet
    // only; a hard link where the file system allows it (the binary is large), else a copy.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("ocellus");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_ocellus"), &bin).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_ocellus"), &bin).unwrap();
    }
    let models = dir.path().join("models/fastestdet");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::copy(harness::fastestdet(), models.join("FastestDet.onnx")).unwrap();
    std::fs::copy(
        harness::asset("models/fastestdet/coco.names"),
        models.join("coco.names"),
    )
    .unwrap();
    let out = std::process::Command::new(&bin)
        .args(["replay", harness::vtest().to_str().unwrap()])
        .current_dir(dir.path())
        .env_remove("OCELLUS_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "the default model, NanoDet-g ({}), is not installed: using FastestDet",
            ocellus::config::DEFAULT_MODEL
        )),
        "{err}"
    );
    assert!(err.contains("detector fastestdet "), "{err}");
    assert!(err.contains("person"), "{err}");
}
