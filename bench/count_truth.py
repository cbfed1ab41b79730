#!/usr/bin/env python3
"""Counting truth: the crossings of counting lines that a ground truth implies, against what
Ocellus counted on the same footage.

    bench/count_truth.py GT.txt LINES.toml WIDTH HEIGHT FPS [COUNTS.csv] [--row NAME] [--swap]

GT.txt is MOTChallenge ground truth (frame,id,x,y,w,h,conf,...; conf-0 rows ignored). LINES.toml
holds `[[cameras.lines]]` tables (name, points in 0-1), as an Ocellus config does. Each person's
path is its bottom-centre (where it stands), frame after frame, and a crossing is decided by the
same rule as src/pipeline/zones.rs (`Zones::update`): a side counts once the point is a tenth of the box's
height (at least 2 px) off the line, and a change of settled side is a crossing when the path
between the two settled points goes through the segment and the point stays on the new side for
SETTLE_MS (frame times from FPS). COUNTS.csv is `ocellus replay
--counts`'s output; its line rows are summed per line and direction.

Without COUNTS.csv: the ground truth's crossings per line and direction, as JSON. With it: a
Markdown table row per line (ground truth vs Ocellus, each way), then a total row; `--row NAME`
prints only the total, as one row named NAME. `--swap` swaps Ocellus' directions before the
comparison (a mirrored clip scored against the original's lines drawn mirrored is the same).
"""
import csv
import json
import sys
import tomllib
from collections import defaultdict

SETTLE_MS = 200  # src/pipeline/zones.rs


def side(a, b, p):
    """Distance of p from the line a-b, negative on the left of a -> b (y grows downwards)."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    length = max((dx * dx + dy * dy) ** 0.5, 1e-6)
    return (dx * (p[1] - a[1]) - dy * (p[0] - a[0])) / length


def segments_cross(p1, p2, a, b):
    def orient(o, s, t):
        return (s[0] - o[0]) * (t[1] - o[1]) - (s[1] - o[1]) * (t[0] - o[0])

    d1, d2 = orient(a, b, p1), orient(a, b, p2)
    d3, d4 = orient(p1, p2, a), orient(p1, p2, b)
    return (d1 > 0) != (d2 > 0) and (d3 > 0) != (d4 > 0)


def crossings(path, line, w, h):
    """`path`: [(ms, x, y, box_h)] bottom-centres in pixels, in time order. Returns each
    crossing's direction and time (when the point got to the other side), in order."""
    a = (line["points"][0][0] * w, line["points"][0][1] * h)
    b = (line["points"][1][0] * w, line["points"][1][1] * h)
    settled = None
    since = None
    out = []
    for ms, x, y, bh in path:
        margin = max(bh * 0.1, 2.0)
        d = side(a, b, (x, y))
        if abs(d) < margin:
            continue
        left = d < 0
        if settled is None:
            settled = ((x, y), left)
            continue
        if settled[1] == left or not segments_cross(settled[0], (x, y), a, b):
            settled, since = ((x, y), left), None
            continue
        since = ms if since is None else since
        if ms - since >= SETTLE_MS:
            out.append(("left" if left else "right", since))
            settled, since = ((x, y), left), None
    return out


def boxes(mot_path, fps, ground_truth=True):
    """(ms, id, (x, y, w, h)) for each row of a MOTChallenge file (a ground truth's conf-0 rows
    left out)."""
    with open(mot_path) as f:
        for row in csv.reader(f):
            if len(row) < 6 or (ground_truth and (len(row) < 7 or float(row[6]) == 0)):
                continue
            frame, pid = int(float(row[0])), int(float(row[1]))
            yield (frame - 1) * 1000.0 / fps, pid, tuple(map(float, row[2:6]))


def paths(mot_path, fps, ground_truth=True):
    """Each id's [(ms, x, y, box_h)] bottom-centre path, in time order."""
    out = defaultdict(list)
    for ms, pid, (x, y, bw, bh) in boxes(mot_path, fps, ground_truth):
        out[pid].append((ms, x + bw / 2, y + bh, bh))
    for pts in out.values():
        pts.sort()
    return out


def ground_truth(gt_path, lines, w, h, fps):
    counts = {l["name"]: {"left": 0, "right": 0} for l in lines}
    for pts in paths(gt_path, fps).values():
        for line in lines:
            for d, _ in crossings(pts, line, w, h):
                counts[line["name"]][d] += 1
    return counts


def ocellus(counts_csv, lines):
    counts = {l["name"]: {"left": 0, "right": 0} for l in lines}
    with open(counts_csv) as f:
        for row in csv.DictReader(f):
            if row["kind"] == "line" and row["name"] in counts:
                counts[row["name"]]["left"] += int(row["left"])
                counts[row["name"]]["right"] += int(row["right"])
    return counts


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    row_name = sys.argv[sys.argv.index("--row") + 1] if "--row" in sys.argv else None
    if row_name:
        args.remove(row_name)
    gt_path, lines_path, w, h, fps = args[0], args[1], float(args[2]), float(args[3]), float(args[4])
    with open(lines_path, "rb") as f:
        cfg = tomllib.load(f)
    lines = [l for cam in cfg.get("cameras", []) for l in cam.get("lines", [])]
    truth = ground_truth(gt_path, lines, w, h, fps)
    if len(args) < 6:
        json.dump(truth, sys.stdout, indent=1)
        print()
        return
    ours = ocellus(args[5], lines)
    if "--swap" in sys.argv:
        ours = {n: {"left": c["right"], "right": c["left"]} for n, c in ours.items()}
    total_truth = total_err = worst = worst_line = 0
    rows = []
    for line in lines:
        n = line["name"]
        t, o = truth[n], ours[n]
        err = abs(t["left"] - o["left"]) + abs(t["right"] - o["right"])
        total_truth += t["left"] + t["right"]
        total_err += err
        worst = max(worst, abs(t["left"] - o["left"]), abs(t["right"] - o["right"]))
        worst_line = max(worst_line, err)
        rows.append(f"| {n} | {t['left']} / {t['right']} | {o['left']} / {o['right']} | {err} |")
    pct = 100.0 * total_err / max(total_truth, 1)
    total_ours = sum(c["left"] + c["right"] for c in ours.values())
    if row_name:
        print(f"| {row_name} | {total_truth} | {total_ours} | {total_err} ({pct:.1f} %) | {worst} | {worst_line} |")
        return
    print("| line | ground truth: left / right | Ocellus: left / right | error |")
    print("|---|---|---|---|")
    for r in rows:
        print(r)
    print(f"| all {len(lines)} lines | {total_truth} | {total_ours} | {total_err} ({pct:.1f} %), worst direction off by {worst}, worst line by {worst_line} |")


if __name__ == "__main__":
    main()
