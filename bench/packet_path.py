#!/usr/bin/env python3
"""The packet path for recording (issue 44), measured before it is built: the CPU of one camera
session that both decodes frames for detection and hands on the camera's compressed packets,
done the two ways open to us, against decoding alone (what capture does today).

A real RTSP camera (GStreamer's gst-rtsp-server, tests/fixtures/rtsp_server.py) serves an H.264
clip; each variant reads it over TCP for SECONDS and its CPU (user + system, the process and its
children) is divided by the stream's seconds:

  ffmpeg-decode   ffmpeg decoding to BGR frames (OpenCV's FFmpeg backend does this today)
  ffmpeg-both     one ffmpeg: the same frames, and the packets copied into 10 s fragmented-MP4
                  segments (Frigate's way: one ffmpeg per camera input)
  gst-decode      GStreamer decoding to BGR frames (rtspsrc, avdec_h264, videoconvert)
  gst-both        one GStreamer session through a tee: the same frames, and the packets into a
                  fragmented MP4 (mp4mux, a fragment a second)

usage: bench/packet_path.py CLIP.mp4 [SECONDS] [ROUNDS]    (Debian's ffmpeg and python3-gi)
Prints a Markdown table: median (min-max) of ROUNDS interleaved rounds.
"""
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "..", "tests", "fixtures", "rtsp_server.py")
# Debian's Python, which has python3-gi (a pyenv or venv Python may not).
PY = "/usr/bin/python3"

GST_RUN = r"""
import sys, gi
gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst
Gst.init(None)
pipe = Gst.parse_launch(sys.argv[1])
loop = GLib.MainLoop()
bus = pipe.get_bus(); bus.add_signal_watch()
def on_msg(_b, m):
    if m.type in (Gst.MessageType.EOS, Gst.MessageType.ERROR):
        if m.type == Gst.MessageType.ERROR: print(m.parse_error(), file=sys.stderr)
        loop.quit()
bus.connect("message", on_msg)
pipe.set_state(Gst.State.PLAYING)
GLib.timeout_add(int(float(sys.argv[2]) * 1000), lambda: pipe.send_event(Gst.Event.new_eos()) and False)
loop.run()
pipe.set_state(Gst.State.NULL)
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def variants(url, secs, out):
    src = f"rtspsrc location={url} protocols=tcp latency=0 ! rtph264depay ! h264parse"
    frames = "avdec_h264 ! videoconvert ! video/x-raw,format=BGR ! fakesink sync=false"
    # -t before -i: the input stops after `secs`, so every output does.
    ff = ["ffmpeg", "-loglevel", "error", "-rtsp_transport", "tcp", "-t", str(secs), "-i", url]
    return {
        "ffmpeg-decode": ff + ["-map", "0:v", "-f", "rawvideo", "-pix_fmt", "bgr24", "-y", "/dev/null"],
        "ffmpeg-both": ff + [
            "-map", "0:v", "-c", "copy", "-f", "segment", "-segment_time", "10",
            "-segment_format", "mp4", "-segment_format_options",
            "movflags=+frag_keyframe+empty_moov+default_base_moof",
            os.path.join(out, "ff%03d.mp4"),
            "-map", "0:v", "-f", "rawvideo", "-pix_fmt", "bgr24", "-y", "/dev/null",
        ],
        "gst-decode": [PY, "-c", GST_RUN, f"{src} ! {frames}", str(secs)],
        "gst-both": [
            PY, "-c", GST_RUN,
            f"{src} ! tee name=t t. ! queue ! {frames} "
            f"t. ! queue ! mp4mux fragment-duration=1000 streamable=true ! "
            f"filesink location={os.path.join(out, 'gst.mp4')}",
            str(secs),
        ],
    }


def cpu_of(cmd):
    """CPU seconds (user + system) of `cmd` and everything it started, and its wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall


def main():
    clip = sys.argv[1]
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 20
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    port = free_port()
    server = subprocess.Popen([PY, SERVER, "--port", str(port), "--file", clip],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready", "the RTSP server did not start"
        url = f"rtsp://127.0.0.1:{port}/stream"
        results = {}
        with tempfile.TemporaryDirectory() as out:
            for r in range(rounds):
                for name, cmd in variants(url, secs, out).items():
                    cpu, wall = cpu_of(cmd)
                    results.setdefault(name, []).append(100 * cpu / secs)
                    print(f"round {r + 1} {name}: {100 * cpu / secs:.1f} % of a core "
                          f"({wall:.1f} s wall)", file=sys.stderr)
            written = {f: os.path.getsize(os.path.join(out, f)) for f in sorted(os.listdir(out))}
    finally:
        server.kill()
        server.wait()
    base = statistics.median(results["ffmpeg-decode"])
    print(f"CPU of one camera session over {secs:.0f} s of {os.path.basename(clip)}, "
          f"% of one core, median (min-max) of {rounds} interleaved rounds:\n")
    print("| variant | CPU, % of a core | / ffmpeg-decode |")
    print("|---|---|---|")
    for name, v in results.items():
        m = statistics.median(v)
        print(f"| {name} | {m:.1f} ({min(v):.1f}-{max(v):.1f}) | {m / base:.2f} |")
    print("\nfiles written by the last round:", ", ".join(f"{k} {v} B" for k, v in written.items()))


if __name__ == "__main__":
    main()
