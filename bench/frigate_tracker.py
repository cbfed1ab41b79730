#!/usr/bin/env python3
"""Frigate's tracker and event rule run on the detections from an Ocellus trace.

    bench/frigate_tracker.py TRACE.jsonl TRACKS.txt [--fps 10] [--label person]

Reads `ocellus replay --trace` output (every detection the tracker was handed, per frame) and
tracks it as Frigate does (frigate/track/norfair_tracker.py, as published): norfair 2.3 with
Frigate's distance (bottom-centre offset relative to the box size, plus width and height
ratios), distance_threshold 2.5, initialization_delay 0, hit_counter_max = max_disappeared =
5 s of frames; detections under Frigate's default min_score 0.5 are dropped first. An object is
an event (Frigate's "true positive") once the median of its last 10 scores reaches the default
threshold 0.7; a frame in which the tracker keeps the object without a detection adds 0.0 to
that history, as Frigate's TrackedObject.update does. Writes the tracks of those objects in MOTChallenge format, from their first
frame, like `ocellus replay --tracks`, so bench/mot_eval.py scores both the same way.

This harness is ours, written from Frigate's published behaviour; it is not Frigate's code.
"""
import argparse
import collections
import json
import statistics

import numpy as np
from norfair import Detection, Tracker

MIN_SCORE = 0.5  # Frigate's default filters.<label>.min_score
THRESHOLD = 0.7  # Frigate's default filters.<label>.threshold (median of the score history)
HISTORY = 10


def frigate_distance(detection, tracked_object):
    """Frigate's distance: how far the bottom-centre moved relative to the box size, and how much
    the width and height changed, as one Euclidean norm."""
    det, est = detection.points, tracked_object.estimate
    est_dim = np.diff(est, axis=0).flatten()
    det_dim = np.diff(det, axis=0).flatten()
    det_pos = np.array([np.average(det[:, 0]), np.max(det[:, 1])])
    est_pos = np.array([np.average(est[:, 0]), np.max(est[:, 1])])
    d = (det_pos - est_pos).astype(float)
    d[0] /= est_dim[0]
    d[1] /= est_dim[1]
    widths = np.sort([est_dim[0], det_dim[0]])
    heights = np.sort([est_dim[1], det_dim[1]])
    change = np.append(d, [widths[1] / widths[0] - 1.0, heights[1] / heights[0] - 1.0])
    return float(np.linalg.norm(change))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("tracks")
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--label", default="person")
    args = ap.parse_args()

    tracker = Tracker(
        distance_function=frigate_distance,
        distance_threshold=2.5,
        initialization_delay=0,
        hit_counter_max=int(args.fps * 5),
    )
    rows = collections.defaultdict(list)  # object id -> (frame, box, score)
    scores = collections.defaultdict(list)
    events = set()
    with open(args.trace) as f:
        for line in f:
            t = json.loads(line)
            frame = t["seq"] + 1
            dets = []
            for d in t["detections"]:
                if d["label"] != args.label or d["score"] < MIN_SCORE:
                    continue
                b = d["box"]
                if b["w"] <= 0 or b["h"] <= 0:
                    continue
                pts = np.array([[b["x"], b["y"]], [b["x"] + b["w"], b["y"] + b["h"]]])
                dets.append(Detection(points=pts, data={"frame": frame, "score": d["score"], "box": b}))
            for obj in tracker.update(detections=dets):
                last = obj.last_detection
                if last is None:
                    continue
                oid = obj.id
                hist = scores[oid]
                # Frigate (TrackedObject.update): a tracked object not detected in this frame
                # adds 0.0 to its score history; the history starts with the first score.
                if last.data["frame"] != frame:
                    hist.append(0.0)
                else:
                    rows[oid].append((frame, last.data["box"], last.data["score"]))
                    hist.append(last.data["score"])
                del hist[:-HISTORY]
                # Once a true positive, always one.
                if statistics.median(hist) >= THRESHOLD:
                    events.add(oid)
    with open(args.tracks, "w") as out:
        lines = []
        for oid in events:
            for frame, b, s in rows[oid]:
                lines.append((frame, oid, f"{frame},{oid},{b['x']:.1f},{b['y']:.1f},{b['w']:.1f},{b['h']:.1f},{s:.3f},-1,-1,-1\n"))
        for _, _, l in sorted(lines):
            out.write(l)


if __name__ == "__main__":
    main()
