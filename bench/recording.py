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
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
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


def main():
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
