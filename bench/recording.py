#!/usr/bin/env python3
"""What recording costs (issue 44): the daemon's CPU and memory with one RTSP camera at
1280x720, 25 fps, H.264, recording off, in events mode and continuous, in one run; the disk
bytes an hour of continuous recording takes; and how soon an event's clip can be served after
its end + post-roll.

A real RTSP camera (GStreamer's gst-rtsp-server, tests/fixtures/rtsp_server.py) serves CLIP; the
daemon (target/release/ocellus) reads it with `detector.kind = "none"` and motion off, so that
what is measured is capture and recording, not the network. Each mode runs SECONDS after the
camera connects; its CPU (user + system from /proc/PID/stat) is divided by those seconds. ROUNDS
interleaved rounds, median (min-max).

  off         recording off: capture decodes through OpenCV's FFmpeg backend
  events      one GStreamer session (tee): packets to the recorder, frames decoded; no event
              happens (no detector), so this is the pre-roll ring's cost
  continuous  the same, every packet written to fragmented-MP4 segments, synced once a fragment

usage: bench/recording.py CLIP.mp4 [SECONDS] [ROUNDS]

How soon a clip can be served: `bench/recording.py --clip-latency CLIP.mp4 [EVENTS]` runs the
daemon with its default detector on the camera (CLIP: the street clip as H.264,
media/vtest-h264.mp4) recording events, and for each of EVENTS ended events polls its clip every
50 ms (the index, by Range) until the clip stops growing. The clip is servable whole from the
first poll that saw its final length; that moment is measured from the event's end + post-roll
(its last picture is then on the camera) and from the event's end message.
"""
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
SERVER = os.path.join(ROOT, "tests", "fixtures", "rtsp_server.py")
BIN = os.path.join(ROOT, "target", "release", "ocellus")
PY = "/usr/bin/python3"
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def run_mode(url, mode, secs):
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "ocellus.toml")
        record = f'[cameras.record]\nmode = "{mode}"\n'
        with open(cfg, "w") as f:
            f.write(
                f'[storage]\npath = "{d}/events.db"\n[detector]\nkind = "none"\n'
                f'[motion]\nenabled = false\n'
                f'[[cameras]]\nid = "cam"\nsource = "{url}"\n{record}'
            )
        p = subprocess.Popen(
            [BIN, "run", "--config", cfg, "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            base = p.stdout.readline().split()[-1].rstrip("/")
            t0 = time.time()
            while True:
                cams = json.loads(get(base + "/api/cameras"))
                if cams[0]["state"] == "connected" and (
                    mode == "off" or (cams[0].get("recording") or {}).get("state") in ("idle", "recording")
                ):
                    break
                if time.time() - t0 > 30:
                    raise SystemExit(f"{mode}: camera never connected: {cams}")
                time.sleep(0.1)
            time.sleep(2)  # past the start-up (model-less, but the first GOPs)
            c0, w0 = cpu_s(p.pid), time.time()
            time.sleep(secs)
            c1, w1 = cpu_s(p.pid), time.time()
            stats = json.loads(get(base + "/api/stats"))
            fps = stats["cameras"][0]["captured_fps"]
            rec_bytes = 0
            rec_dir = os.path.join(d, "recordings", "cam")
            if os.path.isdir(rec_dir):
                rec_bytes = sum(os.path.getsize(os.path.join(rec_dir, n)) for n in os.listdir(rec_dir))
            return {
                "cpu": 100.0 * (c1 - c0) / (w1 - w0),
                "rss": rss_mib(p.pid),
                "fps": fps,
                "bytes_per_s": rec_bytes / (w1 - t0),
            }
        finally:
            p.terminate()
            p.wait(10)


def mp4_duration_s(data):
    """The movie's duration from the `mvhd` in the first bytes of an MP4 (the index is first)."""
    i = data.find(b"mvhd")
    if i < 4:
        return None
    version = data[i + 4]
    if version == 1:
        timescale, duration = struct.unpack(">IQ", data[i + 24:i + 36])
    else:
        timescale, duration = struct.unpack(">II", data[i + 16:i + 24])
    return duration / timescale


def clip_head(url):
    req = urllib.request.Request(url, headers={"Range": "bytes=0-262143"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read()
    except urllib.error.HTTPError:
        return b""


def clip_latency(clip, want):
    port = free_port()
    srv = subprocess.Popen([PY, SERVER, "--port", str(port), "--file", clip],
                           stdout=subprocess.PIPE, text=True)
    d = tempfile.TemporaryDirectory()
    p = None
    try:
        assert srv.stdout.readline().strip() == "ready"
        cfg = os.path.join(d.name, "ocellus.toml")
        with open(cfg, "w") as f:
            f.write(f'[storage]\npath = "{d.name}/events.db"\n'
                    f'[[cameras]]\nid = "cam"\nsource = "rtsp://127.0.0.1:{port}/stream"\n'
                    '[cameras.record]\nmode = "events"\n')
        p = subprocess.Popen([BIN, "run", "--config", cfg, "--listen", "127.0.0.1:0"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        base = p.stdout.readline().split()[-1].rstrip("/")
        post_s = 5.0
        seen, rows = set(), []
        t_start = time.time()
        while len(rows) < want:
            if time.time() - t_start > 60 * want:
                raise SystemExit(f"only {len(rows)} events ended in time")
            events = json.loads(get(base + "/api/events?limit=20"))["events"]
            ended = [e for e in events if e.get("end_ms") and e.get("clip") and e["id"] not in seen]
            if not ended:
                time.sleep(0.2)
                continue
            e = min(ended, key=lambda e: e["id"])
            seen.add(e["id"])
            t_msg = time.time()  # within 0.2 s of the end message
            due = e["end_ms"] / 1000 + post_s
            url = base + e["clip"]
            history = []
            while True:
                dur = mp4_duration_s(clip_head(url))
                now = time.time()
                history.append((now, dur))
                # Final: unchanged for 3 s once the post-roll is past.
                if now > due + 3 and all(h[1] == dur for h in history if h[0] >= now - 3):
                    break
                time.sleep(0.05)
            final = history[-1][1]
            t_ok = next(t for t, dur in history if dur == final)
            rows.append((e["id"], final, t_ok - due, t_ok - max(t_msg, due)))
            print(f"event {e['id']}: clip {final:.1f} s, servable {t_ok - due:+.2f} s after end + post-roll",
                  file=sys.stderr)
        lat = [r[2] for r in rows]
        print(f"| events | clip servable after end + post-roll, s: median (min-max) |")
        print("|---|---|")
        print(f"| {len(rows)} | {statistics.median(lat):.2f} ({min(lat):.2f}-{max(lat):.2f}) |")
    finally:
        if p:
            p.terminate()
            p.wait(10)
        srv.kill()
        d.cleanup()


def main():
    if sys.argv[1] == "--clip-latency":
        return clip_latency(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 10)
    clip = sys.argv[1]
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 30
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    port = free_port()
    srv = subprocess.Popen([PY, SERVER, "--port", str(port), "--file", clip],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        url = f"rtsp://127.0.0.1:{port}/stream"
        modes = ["off", "events", "continuous"]
        results = {m: [] for m in modes}
        for _ in range(rounds):
            for m in modes:
                results[m].append(run_mode(url, m, secs))
        med = lambda xs: statistics.median(xs)
        print(f"| recording | daemon CPU, % of a core | RSS, MiB | capture fps | disk |")
        print("|---|---|---|---|---|")
        for m in modes:
            r = results[m]
            cpu = [x["cpu"] for x in r]
            disk = med([x["bytes_per_s"] for x in r]) * 3600 / 1e9
            disk_s = f"{disk:.2f} GB/h" if m == "continuous" else "-"
            print(f"| {m} | {med(cpu):.1f} ({min(cpu):.1f}-{max(cpu):.1f}) | "
                  f"{med([x['rss'] for x in r]):.0f} | {med([x['fps'] for x in r]):.1f} | {disk_s} |")
    finally:
        srv.kill()


if __name__ == "__main__":
    main()
