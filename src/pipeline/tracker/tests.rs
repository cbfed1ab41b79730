//! The tracker's tests: association, gates, lost tracks and the event rule, on planted boxes.

use super::*;
use crate::pipeline::appearance::Appearance;

/// The frame the planted boxes are in: big enough that none touches its edges.
const FRAME: (f32, f32) = (1920.0, 1080.0);

fn det(x: f32, y: f32, score: f32) -> Detection {
    Detection {
        class_id: 0,
        label: "person".into(),
        score,
        bbox: BBox::new(x, y, 40.0, 100.0),
        weak: score < 0.4,
        appearance: None,
    }
}

fn cfg() -> TrackerConfig {
    TrackerConfig {
        min_hits: 3,
        min_score: 0.5,
        unseen_timeout_ms: 2000,
        tentative_timeout_ms: 300,
        ..Default::default()
    }
}

/// Runs `frames` (detections per 100 ms frame; `None`: the detector did not run) and returns
/// every change, and the track id given to each detection.
fn run(tr: &mut Tracker, frames: &[Option<Vec<Detection>>]) -> (Vec<TrackChange>, Vec<Vec<u64>>) {
    let mut all = Vec::new();
    let mut ids = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let ts = i as i64 * 100;
        match f {
            Some(dets) => {
                let (c, got) = tr.update(ts, FRAME, dets);
                all.extend(c);
                ids.push(got);
            }
            None => {
                all.extend(tr.tick(ts));
                ids.push(Vec::new());
            }
        }
    }
    all.extend(tr.finish());
    (all, ids)
}

fn count(changes: &[TrackChange], f: impl Fn(&TrackChange) -> bool) -> usize {
    changes.iter().filter(|c| f(c)).count()
}

/// Exactly one event, and every detection went to one and the same track.
fn assert_one_event_on_one_track(changes: &[TrackChange], ids: Vec<Vec<u64>>) {
    assert_eq!(starts(changes), 1);
    let seen: std::collections::BTreeSet<u64> = ids.into_iter().flatten().collect();
    assert_eq!(seen.len(), 1, "{seen:?}");
}

/// The `stationary` values the changes announced, in order.
fn stationary_changes(changes: &[TrackChange]) -> Vec<bool> {
    changes
        .iter()
        .filter_map(|c| match c {
            TrackChange::Stationary(_, s) => Some(*s),
            _ => None,
        })
        .collect()
}

fn starts(changes: &[TrackChange]) -> usize {
    count(changes, |c| matches!(c, TrackChange::Confirmed(_)))
}

#[test]
fn a_box_that_never_moves_makes_no_event_even_after_a_minute() {
    let mut tr = Tracker::new(cfg());
    let frames: Vec<_> = (0..600)
        .map(|i| {
            // The detector's jitter: a few pixels each way.
            let j = ((i * 7) % 5) as f32 - 2.0;
            Some(vec![det(300.0 + j, 200.0 - j, 0.65)])
        })
        .collect();
    let (changes, ids) = run(&mut tr, &frames);
    assert_eq!(starts(&changes), 0);
    assert!(ids.iter().all(|i| i == &ids[0]), "one track all along");
}

#[test]
fn a_car_that_drives_in_and_parks_is_one_event_that_becomes_stationary() {
    let mut tr = Tracker::new(cfg());
    // 5 s driving 20 px per frame, then parked for 60 s.
    let frames: Vec<_> = (0..650)
        .map(|i| Some(vec![det(20.0 * (i.min(50)) as f32, 300.0, 0.8)]))
        .collect();
    let (changes, _) = run(&mut tr, &frames);
    assert_eq!(starts(&changes), 1);
    let stationary = stationary_changes(&changes);
    assert_eq!(stationary, vec![true]);
    let ended: Vec<&Box<Track>> = changes
        .iter()
        .filter_map(|c| match c {
            TrackChange::Ended(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(ended.len(), 1);
    assert!(ended[0].stationary);
}

#[test]
fn a_person_waiting_who_shifts_slowly_keeps_one_track() {
    // Walks in for 3 s, then waits 20 s drifting half a pixel per frame: 100 px, under one
    // box height from where they stopped at any moment of 10 s, so they stay stationary;
    // their track, pinned after 10 s, must follow the drift rather than stay matched to
    // the spot where they first stopped (which the box has left by then).
    let frames: Vec<_> = (0..230)
        .map(|i| {
            let x = if i < 30 {
                10.0 * i as f32
            } else {
                300.0 + 0.5 * (i - 30) as f32
            };
            Some(vec![det(x, 200.0, 0.8)])
        })
        .collect();
    let (changes, ids) = run(&mut Tracker::new(cfg()), &frames);
    assert_one_event_on_one_track(&changes, ids);
}

#[test]
fn a_person_lost_for_a_moment_who_comes_back_off_their_path_continues_their_event() {
    // A walks right for 3 s, is missed for half a second, and comes back 80 px lower than
    // their path: found again by the lost track's reach, or as a new track that continues
    // A's event once it qualifies; one event either way. Someone of another colour there
    // starts their own.
    let comes_back_in = |colour: usize| {
        let person = |i: usize, y: f32, c: usize| Detection {
            appearance: Some(Appearance::pure(c)),
            ..det(50.0 + 10.0 * i as f32, y, 0.8)
        };
        let mut frames: Vec<Option<Vec<Detection>>> = Vec::new();
        for i in 0..30 {
            frames.push(Some(vec![person(i, 200.0, 0)]));
        }
        for _ in 30..35 {
            frames.push(Some(Vec::new()));
        }
        for i in 35..70 {
            frames.push(Some(vec![person(i, 280.0, colour)]));
        }
        let (changes, ids) = run(&mut Tracker::new(cfg()), &frames);
        (starts(&changes), ids[0][0], ids[69][0])
    };
    let (events, first, last) = comes_back_in(0);
    assert_eq!(events, 1, "A is one event");
    assert_eq!(first, last, "and keeps its id");
    let (events, first, last) = comes_back_in(4);
    assert_eq!(events, 2, "someone else is their own event");
    assert_ne!(first, last);
}

#[test]
fn a_car_that_parks_and_drives_off_again_is_one_event() {
    // 5 s driving in at 20 px per frame, 15 s parked, then off again. The parked track is
    // pinned to its spot, so the car leaving starts a new track; it continues the event,
    // which stops being stationary.
    let x = |i: i64| 20.0 * (i.min(50) + (i - 200).max(0)) as f32;
    let frames: Vec<_> = (0..230)
        .map(|i| Some(vec![det(x(i), 300.0, 0.8)]))
        .collect();
    let (changes, _) = run(&mut Tracker::new(cfg()), &frames);
    assert_eq!(starts(&changes), 1);
    let stationary = stationary_changes(&changes);
    assert_eq!(stationary, vec![true, false]);
    let ends = count(&changes, |c| matches!(c, TrackChange::Ended(_)));
    assert_eq!(ends, 1);
}

#[test]
fn a_person_missed_for_one_and_a_half_seconds_mid_walk_keeps_one_track() {
    let mut tr = Tracker::new(cfg());
    let frames: Vec<_> = (0..80)
        .map(|i| (!(30..45).contains(&i)).then(|| vec![det(50.0 + 6.0 * i as f32, 200.0, 0.8)]))
        .collect();
    let (changes, ids) = run(&mut tr, &frames);
    assert_one_event_on_one_track(&changes, ids);
}

#[test]
fn two_people_crossing_keep_their_ids() {
    // A walks right, B walks left, 8 px per 100 ms; at the crossing B hides A.
    let mut tr = Tracker::new(cfg());
    let mut a_ids = Vec::new();
    let mut b_ids = Vec::new();
    for i in 0..60 {
        let ts = i * 100;
        let ax = 100.0 + 8.0 * i as f32;
        let bx = 560.0 - 8.0 * i as f32;
        let hidden = (ax - bx).abs() < 20.0;
        let mut dets = vec![det(bx, 50.0, 0.8)];
        if !hidden {
            dets.push(det(ax, 52.0, 0.7));
        }
        let (_, ids) = tr.update(ts, FRAME, &dets);
        b_ids.push(ids[0]);
        if !hidden {
            a_ids.push(ids[1]);
        }
    }
    let ends = tr.finish();
    assert_eq!(ends.len(), 2, "exactly two tracks: {ends:?}");
    assert!(
        a_ids.iter().all(|&id| id == a_ids[0]),
        "A kept one id: {a_ids:?}"
    );
    assert!(
        b_ids.iter().all(|&id| id == b_ids[0]),
        "B kept one id: {b_ids:?}"
    );
    assert_ne!(a_ids[0], b_ids[0]);
}

#[test]
fn a_flickering_detection_with_alternating_scores_is_one_event() {
    let mut tr = Tracker::new(cfg());
    // Seen every other frame; when seen, its score alternates 0.3 (weak) and 0.7.
    let frames: Vec<_> = (0..60)
        .map(|i| {
            (i % 2 == 0).then(|| {
                let score = if i % 4 == 0 { 0.7 } else { 0.3 };
                vec![det(50.0 + 6.0 * i as f32, 200.0, score)]
            })
        })
        .collect();
    let (changes, ids) = run(&mut tr, &frames);
    assert_one_event_on_one_track(&changes, ids);
}

#[test]
fn weak_detections_keep_a_track_but_never_start_one() {
    let mut tr = Tracker::new(cfg());
    let frames: Vec<_> = (0..30)
        .map(|i| Some(vec![det(50.0 + 6.0 * i as f32, 200.0, 0.3)]))
        .collect();
    let (changes, ids) = run(&mut tr, &frames);
    assert_eq!(starts(&changes), 0);
    assert!(ids.iter().flatten().all(|&id| id == 0));
}

#[test]
fn a_steady_low_score_does_not_make_an_event_however_long_it_moves() {
    let mut tr = Tracker::new(cfg());
    // Confident enough to be tracked (0.45), not enough for the median rule (0.5).
    let frames: Vec<_> = (0..60)
        .map(|i| Some(vec![det(50.0 + 6.0 * i as f32, 200.0, 0.45)]))
        .collect();
    let (changes, _) = run(&mut tr, &frames);
    assert_eq!(starts(&changes), 0);
}

#[test]
fn a_lost_track_does_not_take_a_nearby_object_of_another_colour() {
    let coloured = |x: f32, colour: usize| Detection {
        appearance: Some(Appearance::pure(colour)),
        ..det(x, 200.0, 0.8)
    };
    // A (colour 0) walks right for 2 s, then is missed; a second later someone turns up
    // just ahead of where A would be, where geometry alone would hand them A's track.
    // Returns whether they got it.
    let comes_back_as = |colour| {
        let mut tr = Tracker::new(cfg());
        for i in 0..20 {
            tr.update(i * 100, FRAME, &[coloured(50.0 + 6.0 * i as f32, 0)]);
        }
        let a = tr.tracks()[0].id;
        tr.tick(2500);
        let (_, ids) = tr.update(3000, FRAME, &[coloured(50.0 + 6.0 * 30.0 + 30.0, colour)]);
        ids[0] == a
    };
    assert!(
        !comes_back_as(4),
        "another colour must not continue A's track"
    );
    assert!(
        comes_back_as(0),
        "A's colour at that place continues A's track"
    );
}

#[test]
fn a_person_hidden_for_a_second_and_a_half_who_turned_meanwhile_keeps_their_track() {
    // A walks right at 100 px/s for 2 s, is hidden for 1.5 s, and reappears having turned
    // down: 75 px along their path and 110 px below it, 130 px from where the prediction
    // (still going right) expects them, far beyond half a box. A lost track reaches a box
    // height further per second lost, with colours that agree; someone else there starts
    // their own track.
    let comes_back_as = |colour: usize| {
        let person = |x: f32, y: f32, c: usize| Detection {
            appearance: Some(Appearance::pure(c)),
            ..det(x, y, 0.8)
        };
        let mut tr = Tracker::new(cfg());
        for i in 0..20 {
            tr.update(i * 100, FRAME, &[person(50.0 + 10.0 * i as f32, 200.0, 0)]);
        }
        let a = tr.tracks()[0].id;
        for i in 20..35 {
            tr.update(i * 100, FRAME, &[]);
        }
        let (_, ids) = tr.update(3500, FRAME, &[person(50.0 + 190.0 + 75.0, 310.0, colour)]);
        ids[0] == a
    };
    assert!(comes_back_as(0), "A's colours there continue A's track");
    assert!(!comes_back_as(4), "another colour must not continue it");
}

#[test]
fn a_person_who_walked_out_of_the_picture_is_not_the_one_who_comes_in_there_later() {
    // A walks right at 100 px/s to the right edge of a 640 px wide frame and out of it; 1.9 s
    // later someone of the same colours comes in at that edge, walking left. Within the lost
    // reach, with colours that agree -- but A left the picture there. The same walk in a
    // frame wide enough that A was lost in the middle of it keeps the reach (the control).
    let newcomer_is_a = |width: f32| {
        let frame = (width, 480.0);
        let person = |x: f32| {
            let d = det(x, 200.0, 0.8);
            Detection {
                appearance: Some(Appearance::pure(0)),
                // Boxes are cut by the frame's edge, as the detector's are.
                bbox: d.bbox.clamp_to(frame.0, frame.1),
                ..d
            }
        };
        let mut tr = Tracker::new(cfg());
        for i in 0..20 {
            tr.update(i * 100, frame, &[person(420.0 + 10.0 * i as f32)]);
        }
        let a = tr.tracks()[0].id;
        for i in 20..39 {
            tr.update(i * 100, frame, &[]);
        }
        let (_, ids) = tr.update(3900, frame, &[person(602.0)]);
        ids[0] == a
    };
    assert!(
        !newcomer_is_a(640.0),
        "someone coming in where A left the picture is someone else"
    );
    assert!(
        newcomer_is_a(1280.0),
        "A lost in the middle of the picture keeps the reach"
    );
}

#[test]
fn a_box_swollen_for_a_moment_by_a_neighbour_does_not_cost_the_track() {
    // A person walks for 2 s; for half a second the detector draws their box over a
    // neighbour too (wider and taller, growing), then gives their own box again. The
    // swollen boxes pull the prediction's size up; the object's typical size (the median
    // of its latest boxes) still says the own box is the same person.
    let sized = |i: i64, w: f32, h: f32| Detection {
        bbox: BBox::new(50.0 + 6.0 * i as f32, 200.0, w, h),
        ..det(0.0, 0.0, 0.8)
    };
    let mut frames: Vec<Option<Vec<Detection>>> = Vec::new();
    for i in 0..20 {
        frames.push(Some(vec![sized(i, 40.0, 100.0)]));
    }
    for (k, (w, h)) in [(46.0, 112.0), (52.0, 124.0), (56.0, 136.0), (56.0, 140.0)]
        .into_iter()
        .enumerate()
    {
        frames.push(Some(vec![sized(20 + k as i64, w, h)]));
    }
    for i in 24..40 {
        frames.push(Some(vec![sized(i, 40.0, 100.0)]));
    }
    let (changes, ids) = run(&mut Tracker::new(cfg()), &frames);
    assert_one_event_on_one_track(&changes, ids);
}

#[test]
fn a_track_learns_its_colours_only_from_boxes_standing_alone() {
    // A (colour 0) walks alone, then for 3 s beside B (colour 4), so close that A's boxes
    // show mostly B's colours; then A is hidden for a second and comes back a little off
    // its prediction, where only colours that agree let a track continue. Had A's signature
    // learnt from the shared boxes, it would be B's colours by then, and A would come back
    // as a new track.
    let person = |x: f32, y: f32, a: Appearance| Detection {
        appearance: Some(a),
        ..det(x, y, 0.8)
    };
    let mut shared = Appearance::pure(0);
    shared.blend(&Appearance::pure(4), 0.7);
    let x = |i: usize| 50.0 + 6.0 * i as f32;
    let mut frames: Vec<Option<Vec<Detection>>> = Vec::new();
    for i in 0..15 {
        frames.push(Some(vec![person(x(i), 200.0, Appearance::pure(0))]));
    }
    for i in 15..45 {
        // B walks alongside, 15 px to the right (IoU about 0.45).
        frames.push(Some(vec![
            person(x(i), 200.0, shared),
            person(x(i) + 15.0, 200.0, Appearance::pure(4)),
        ]));
    }
    for i in 45..53 {
        // A hidden; B walks off downwards.
        let y = 200.0 + 30.0 * (i - 44) as f32;
        frames.push(Some(vec![person(x(i) + 15.0, y, Appearance::pure(4))]));
    }
    for i in 53..60 {
        // A again, 20 px ahead of where it would be (IoU about 0.33).
        frames.push(Some(vec![person(x(i) + 20.0, 200.0, Appearance::pure(0))]));
    }
    let (_, ids) = run(&mut Tracker::new(cfg()), &frames);
    let a = ids[0][0];
    assert!(
        ids[53..].iter().all(|f| f[0] == a),
        "A, back alone, must keep its track {a}: {:?}",
        &ids[44..]
    );
}

#[test]
fn a_young_track_takes_its_confident_box_before_a_weak_one() {
    // A young track, and in its next frame two boxes on the object: a weak one right on the
    // prediction and a confident one a little off it (not inside the weak one enough to be
    // a part of it). The confident box continues the track; no second track starts.
    let mut tr = Tracker::new(cfg());
    let (_, first) = tr.update(0, FRAME, &[det(100.0, 200.0, 0.8)]);
    let (_, ids) = tr.update(
        100,
        FRAME,
        &[det(100.0, 200.0, 0.3), det(112.0, 200.0, 0.8)],
    );
    assert_eq!(
        ids[1], first[0],
        "the confident box continues the young track"
    );
    assert_eq!(ids[0], 0, "the weak box is left over");
    assert_eq!(tr.tracks().len(), 1);
}

#[test]
fn min_hits_is_a_second_of_detections_at_any_frame_rate() {
    // `min_hits` = 10 is a second of walking at 10 fps: at 5 fps the same second is 5
    // detections, at 20 fps 20. A camera at 5 fps otherwise needs two seconds, and a person
    // who keeps being lost in a group for a second and a half at a time never gets an event.
    let hits_to_confirm = |frame_ms: i64| {
        let mut tr = Tracker::new(TrackerConfig {
            min_hits: 10,
            min_move: 0.0,
            ..cfg()
        });
        // The camera runs for a second with nobody in view: the tracker learns its rate.
        for i in 0..10 {
            tr.update(i * frame_ms, FRAME, &[]);
        }
        for i in 0..60 {
            let dets = [det(100.0 + i as f32 * 2.0, 50.0, 0.8)];
            let (changes, _) = tr.update((10 + i) * frame_ms, FRAME, &dets);
            if changes.contains(&TrackChange::Confirmed(1)) {
                return i + 1;
            }
        }
        panic!("never confirmed at {frame_ms} ms a frame");
    };
    assert_eq!(hits_to_confirm(100), 10);
    assert_eq!(hits_to_confirm(200), 5);
    assert_eq!(hits_to_confirm(50), 20);
}

#[test]
fn a_track_confirms_only_once_it_has_moved_and_ends_after_the_unseen_timeout() {
    let mut tr = Tracker::new(cfg());
    let mut confirmed_at = None;
    for i in 0..40 {
        let (changes, _) = tr.update(i * 100, FRAME, &[det(100.0 + i as f32 * 5.0, 50.0, 0.8)]);
        if changes.contains(&TrackChange::Confirmed(1)) {
            confirmed_at = Some(i);
        }
    }
    // One box height (100 px) at 5 px a frame: about 20 frames, less the filter's lag.
    let at = confirmed_at.expect("confirmed");
    assert!((18..=24).contains(&at), "confirmed at frame {at}");
    assert!(
        tr.tick(3900 + 2000).is_empty(),
        "unseen 2000 ms is not over the timeout"
    );
    let changes = tr.tick(3900 + 2001);
    let TrackChange::Ended(t) = &changes[0] else {
        panic!("{changes:?}")
    };
    assert_eq!(
        (t.id, t.first_seen_ms, t.last_seen_ms, t.hits),
        (1, 0, 3900, 40)
    );
    assert!(tr.tracks().is_empty());
}

#[test]
fn unconfirmed_candidate_disappears_silently() {
    let mut tr = Tracker::new(cfg());
    tr.update(0, FRAME, &[det(10.0, 10.0, 0.9)]);
    assert!(tr.tick(1000).is_empty());
    assert!(tr.tracks().is_empty());
}
