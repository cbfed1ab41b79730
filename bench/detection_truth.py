#!/usr/bin/env python3
"""Per-frame detector quality against MOTChallenge ground truth, from an `ocellus replay --trace`.

    bench/detection_truth.py GT.txt TRACE.jsonl --min-score S [--label person] [--row NAME]

For every frame the detector ran on, the detections of LABEL scoring at least S (the detector's
confident score: what can start a track) are matched one to one with the ground-truth boxes,
best IoU first, at IoU >= 0.5. Detections matching a conf-0 (ignored) ground-truth box are
dropped, as MOTChallenge scoring does. Prints recall, precision and the number of boxes over two
people: a detection holding at least half of each of two people's boxes while matching neither
(IoU < 0.5), which is what a tracker cannot split again.
"""
import argparse
import collections
import json


def iou(a, b):
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def covered(gt, det):
    """The share of the ground-truth box inside the detection."""
    ix = max(0.0, min(gt[0] + gt[2], det[0] + det[2]) - max(gt[0], det[0]))
    iy = max(0.0, min(gt[1] + gt[3], det[1] + det[3]) - max(gt[1], det[1]))
    return ix * iy / (gt[2] * gt[3]) if gt[2] * gt[3] > 0 else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gt")
    ap.add_argument("trace")
    ap.add_argument("--min-score", type=float, required=True)
    ap.add_argument("--label", default="person")
    ap.add_argument("--row")
    a = ap.parse_args()
    gt = collections.defaultdict(list)
    with open(a.gt) as f:
        for line in f:
            p = line.strip().split(",")
            if len(p) < 7:
                continue
            gt[int(float(p[0]))].append(([float(v) for v in p[2:6]], float(p[6]) > 0))
    tp = fp = fn = doubles = frames = 0
    with open(a.trace) as f:
        for line in f:
            t = json.loads(line)
            if not t.get("detector_ran"):
                continue
            frames += 1
            frame = t["seq"] + 1
            dets = [
                (d["box"]["x"], d["box"]["y"], d["box"]["w"], d["box"]["h"])
                for d in t["detections"]
                if d["label"] == a.label and d["score"] >= a.min_score
            ]
            truth = gt.get(frame, [])
            pairs = sorted(
                ((iou(d, g[0]), di, gi) for di, d in enumerate(dets) for gi, g in enumerate(truth)),
                reverse=True,
            )
            det_used, gt_used = set(), set()
            for v, di, gi in pairs:
                if v < 0.5:
                    break
                if di in det_used or gi in gt_used:
                    continue
                det_used.add(di)
                gt_used.add(gi)
                if truth[gi][1]:
                    tp += 1
            fn += sum(1 for gi, g in enumerate(truth) if g[1] and gi not in gt_used)
            for di, d in enumerate(dets):
                if di in det_used:
                    continue
                fp += 1
                held = [g for g, scored in truth if covered(g, d) >= 0.5 and iou(d, g) < 0.5]
                if len(held) >= 2:
                    doubles += 1
    recall = tp / (tp + fn) if tp + fn else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    if a.row:
        print(f"| {a.row} | {recall:.3f} | {precision:.3f} | {doubles} |")
    else:
        print(f"{frames} frames: recall {recall:.3f} precision {precision:.3f} "
              f"boxes over two people {doubles} (TP {tp} FP {fp} FN {fn})")


if __name__ == "__main__":
    main()
