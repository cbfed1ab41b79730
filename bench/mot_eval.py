#!/usr/bin/env python3
"""Scores tracks in MOTChallenge format against MOTChallenge ground truth.

    bench/mot_eval.py GT.txt TRACKS.txt [--json | --row NAME] [--switches FPS]

Prints two kinds of figures:

- tracking (py-motmetrics, IoU >= 0.5): IDF1, MOTA, ID switches, ... Ground-truth boxes with
  conf 0 are not scored: they and the hypotheses that match them (IoU >= 0.5) are removed from
  each frame before scoring, as MOTChallenge does with its ignored boxes.
- events: every track id in TRACKS is one event (`ocellus replay --tracks` writes the tracks of
  events only). An event is "on a person" when at least half of its boxes overlap a ground-truth
  box (any conf) by IoU >= 0.3; it is then attributed to the person it overlaps most often.
  Reported: events on people, events on nothing (false), people with at least one event, and
  events on people per ground-truth person.

With --switches FPS, also lists every ID switch py-motmetrics counts (to stderr): when (at FPS),
which person, and the track that followed them before and after: where a tracker change won or
lost identities.

The looser IoU for attribution is deliberate: it asks "was this event about a person, and
which", not "how tight is the box", which IDF1 and MOTA already judge at 0.5.
"""
import argparse
import collections
import json
import sys

import numpy as np


def load(path):
    rows = collections.defaultdict(list)
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            p = line.split(",")
            frame, tid = int(float(p[0])), int(float(p[1]))
            x, y, w, h = (float(v) for v in p[2:6])
            conf = float(p[6]) if len(p) > 6 else 1.0
            rows[frame].append((tid, x, y, w, h, conf))
    return rows


def iou_matrix(a, b):
    """IoU between boxes (x, y, w, h) in a (N,4) and b (M,4)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def tracking_metrics(gt, hyp, switches_fps=None):
    import motmetrics as mm
    from scipy.optimize import linear_sum_assignment

    acc = mm.MOTAccumulator(auto_id=False)
    frames = sorted(set(gt) | set(hyp))
    for f in frames:
        g = gt.get(f, [])
        h = list(hyp.get(f, []))
        scored = [r for r in g if r[5] != 0]
        ignored = [r for r in g if r[5] == 0]
        if ignored and h:
            m = iou_matrix([r[1:5] for r in ignored], [r[1:5] for r in h])
            gi, hi = linear_sum_assignment(-m)
            drop = {j for i, j in zip(gi, hi) if m[i, j] >= 0.5}
            h = [r for j, r in enumerate(h) if j not in drop]
        dist = mm.distances.iou_matrix(
            [r[1:5] for r in scored], [r[1:5] for r in h], max_iou=0.5
        )
        acc.update([r[0] for r in scored], [r[0] for r in h], dist, frameid=f)
    if switches_fps:
        print_switches(acc, switches_fps)
    mh = mm.metrics.create()
    s = mh.compute(
        acc,
        metrics=["idf1", "mota", "motp", "num_switches", "num_false_positives", "num_misses",
                 "recall", "precision", "mostly_tracked", "num_unique_objects"],
        name="all",
    )
    r = s.loc["all"]
    return {
        "idf1": float(r["idf1"]),
        "mota": float(r["mota"]),
        "motp_iou": 1.0 - float(r["motp"]),
        "id_switches": int(r["num_switches"]),
        "false_positives": int(r["num_false_positives"]),
        "misses": int(r["num_misses"]),
        "recall": float(r["recall"]),
        "precision": float(r["precision"]),
        "mostly_tracked": int(r["mostly_tracked"]),
    }


def print_switches(acc, fps):
    """Every ID switch of the accumulator, in frame order, to stderr."""
    last = {}
    for (frame, _), e in acc.mot_events.iterrows():
        if e.Type not in ("MATCH", "SWITCH"):
            continue
        if e.Type == "SWITCH":
            print(
                f"{frame / fps:6.1f} s (frame {frame}): person {int(e.OId)}, "
                f"track {last.get(e.OId, '?')} -> {int(e.HId)}",
                file=sys.stderr,
            )
        last[e.OId] = int(e.HId)


def event_metrics(gt, hyp, attribution_iou=0.3):
    people = {r[0] for rows in gt.values() for r in rows}
    boxes = collections.defaultdict(int)
    overlaps = collections.defaultdict(collections.Counter)
    for f, rows in hyp.items():
        g = gt.get(f, [])
        m = iou_matrix([r[1:5] for r in rows], [r[1:5] for r in g])
        for i, r in enumerate(rows):
            boxes[r[0]] += 1
            if len(g) and m[i].max() >= attribution_iou:
                overlaps[r[0]][g[int(m[i].argmax())][0]] += 1
    on_person = {}
    false = []
    for tid, n in boxes.items():
        hits = overlaps[tid]
        if sum(hits.values()) * 2 >= n:
            on_person[tid] = hits.most_common(1)[0][0]
        else:
            false.append(tid)
    covered = set(on_person.values())
    return {
        "people": len(people),
        "events": len(boxes),
        "person_events": len(on_person),
        "false_events": len(false),
        "people_with_event": len(covered),
        "events_per_person": len(on_person) / max(len(people), 1),
        "false_event_ids": sorted(false),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gt")
    ap.add_argument("tracks")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    ap.add_argument("--row", metavar="NAME", help="one Markdown table row named NAME (bench/event_truth.sh)")
    ap.add_argument("--switches", metavar="FPS", type=float,
                    help="list each ID switch to stderr, its time at FPS frames a second")
    args = ap.parse_args()
    gt = load(args.gt)
    hyp = load(args.tracks)
    out = {**event_metrics(gt, hyp), **tracking_metrics(gt, hyp, args.switches)}
    if args.json:
        json.dump(out, sys.stdout)
        print()
        return
    if args.row:
        m = out
        print(
            f"| {args.row} | {m['events']} | {m['person_events']} | {m['false_events']} | "
            f"{m['people_with_event']} of {m['people']} | {m['events_per_person']:.2f} | "
            f"{m['idf1']:.3f} | {m['mota']:.3f} | {m['id_switches']} |"
        )
        return
    print(
        f"events {out['events']}: {out['person_events']} on people, {out['false_events']} on nothing; "
        f"{out['people_with_event']} of {out['people']} people with an event; "
        f"{out['events_per_person']:.2f} events per person"
    )
    print(
        f"IDF1 {out['idf1']:.3f}  MOTA {out['mota']:.3f}  recall {out['recall']:.3f}  "
        f"precision {out['precision']:.3f}  ID switches {out['id_switches']}  "
        f"FP {out['false_positives']}  misses {out['misses']}"
    )


if __name__ == "__main__":
    main()
