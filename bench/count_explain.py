#!/usr/bin/env python3
"""Why Ocellus' line counts differ from the ground truth's: each missed and each extra crossing,
with the person it belongs to and how far that person really went.

    bench/count_explain.py GT.txt LINES.toml WIDTH HEIGHT FPS TRACKS.txt

TRACKS.txt is `ocellus replay VIDEO --config LINES.toml --tracks TRACKS.txt`'s output: the boxes
of every track with an event, which are the tracks `--counts` counts. Both paths go through
bench/count_truth.py's rule (src/pipeline/zones.rs's), so the per-line totals here are the ones
count_truth.py reports. A crossing of ours belongs to the ground-truth person its box overlaps
most (IoU >= 0.3) when it crossed; a ground-truth crossing is matched by one of ours of the same
person and direction within 1.5 s. For each extra one, the person's foot's range of distances from
the line (within 3 s) is printed beside the side rule's margin: a person who went 6 px past a
line whose margin is 7 px is a crossing to Ocellus' boxes and none to the ground truth's, and no
rule gets such a case right but by chance.
"""
import sys
import tomllib
from collections import defaultdict

from count_truth import boxes, crossings, paths, side

MATCH_MS = 1500
WINDOW_MS = 3000


def boxes_by_time(mot_path, fps, ground_truth):
    """id -> {ms: (x, y, w, h)}"""
    out = defaultdict(dict)
    for ms, pid, box in boxes(mot_path, fps, ground_truth):
        out[pid][ms] = box
    return out


def iou(a, b):
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def main():
    if len(sys.argv) != 7:
        sys.exit(__doc__)
    gt_path, lines_path, w, h, fps, tracks_path = sys.argv[1:]
    w, h, fps = float(w), float(h), float(fps)
    with open(lines_path, "rb") as f:
        cfg = tomllib.load(f)
    lines = [l for cam in cfg.get("cameras", []) for l in cam.get("lines", [])]
    gt_paths, our_paths = paths(gt_path, fps), paths(tracks_path, fps, ground_truth=False)
    gt_at, our_at = boxes_by_time(gt_path, fps, True), boxes_by_time(tracks_path, fps, False)

    def person_at(box, ms):
        best, best_iou = None, 0.3
        for pid, at in gt_at.items():
            if ms in at:
                v = iou(box, at[ms])
                if v > best_iou:
                    best, best_iou = pid, v
        return best

    def reach(pid, line_pts, ms):
        """Where `pid`'s foot was around `ms`: its nearest and furthest distance from the line on
        the right side (negative: on the left), and the side rule's margin there."""
        a, b = line_pts
        near = [(side(a, b, (x, y)), max(0.1 * bh, 2.0)) for t, x, y, bh in gt_paths.get(pid, [])
                if abs(t - ms) <= WINDOW_MS]
        if not near:
            return None
        return min(d for d, _ in near), max(d for d, _ in near), max(m for _, m in near)

    total = 0
    for line in lines:
        pts = (
            (line["points"][0][0] * w, line["points"][0][1] * h),
            (line["points"][1][0] * w, line["points"][1][1] * h),
        )
        truth = [(ms, d, pid) for pid, p in gt_paths.items() for d, ms in crossings(p, line, w, h)]
        ours = []
        for tid, p in our_paths.items():
            for d, ms in crossings(p, line, w, h):
                ours.append((ms, d, tid, person_at(our_at[tid][ms], ms)))
        err = sum(
            abs(sum(1 for c in truth if c[1] == d) - sum(1 for c in ours if c[1] == d))
            for d in ("left", "right")
        )
        total += err
        print(f"{line['name']}: ground truth {len(truth)}, Ocellus {len(ours)}, off by {err}")
        used = set()
        for ms, d, pid in sorted(truth):
            match = [
                k for k, (oms, od, _, opid) in enumerate(sorted(ours))
                if k not in used and od == d and opid == pid and abs(oms - ms) <= MATCH_MS
            ]
            if match:
                used.add(match[0])
            else:
                print(f"  missed: person {pid} {d} at {ms / 1000:.1f} s")
        for k, (ms, d, tid, pid) in enumerate(sorted(ours)):
            if k in used:
                continue
            why = ""
            if pid is not None and (r := reach(pid, pts, ms)):
                why = (f"; the person's foot was {r[0]:+.1f} to {r[1]:+.1f} px from the line"
                       f" (+: right of it; margin {r[2]:.1f})")
            who = f"person {pid}" if pid is not None else "no person"
            print(f"  extra: track {tid} ({who}) {d} at {ms / 1000:.1f} s{why}")
    print(f"all lines: off by {total}")


if __name__ == "__main__":
    main()
