"""A live-frame WebSocket broadcaster written the usual way in Python, to compare fan-out cost
with Ocellus: read the clip with OpenCV at its own fps, JPEG-encode each frame once, and
websockets.broadcast() it to every connected client. No detection (compare with Ocellus run with
the detector and motion off). Frames carry Ocellus's binary header so examples/ws_load measures
both the same way.

    /usr/bin/python3 bench/py_broadcast.py VIDEO [--width W] [--raw]   (prints "listening on HOST:PORT")

--width W scales frames to W pixels wide before encoding (Ocellus's thumbnail streams).
--raw is the raw-send limit: each WebSocket frame (header and payload) is built once and handed to
every client's transport as it is, one send() per client and no per-client framing, which is the
least any broadcaster can do per delivered frame on this kernel.

Needs Debian's python3-opencv and python3-websockets.
"""
import argparse
import asyncio
import struct
import time

import cv2
import websockets

CAMERA = b"street"
clients = set()


async def handler(ws, *_):
    clients.add(ws)
    try:
        async for _ in ws:  # subscribe requests and the like: ignored, everyone gets frames
            pass
    except websockets.ConnectionClosed:
        pass
    finally:
        clients.discard(ws)


def ws_frame(payload):
    """An unmasked, unfragmented binary frame (RFC 6455, 5.2)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x82, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x82, 126, n)
    else:
        head = struct.pack("!BBQ", 0x82, 127, n)
    return head + payload


def send_raw(frame):
    for ws in list(clients):
        transport = ws.transport
        if transport is not None and not transport.is_closing():
            transport.write(frame)


async def produce(path, width, raw):
    cap = cv2.VideoCapture(path)
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    params = [cv2.IMWRITE_JPEG_QUALITY, 75]
    seq = 0
    due = time.monotonic()
    while True:
        ok, frame = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        ts = int(time.time() * 1000)
        if clients:
            if width:
                h, w = frame.shape[:2]
                frame = cv2.resize(frame, (width, h * width // w), interpolation=cv2.INTER_AREA)
            ok, jpeg = cv2.imencode(".jpg", frame, params)
            h, w = frame.shape[:2]
            header = struct.pack("<BBHHQq", 1, len(CAMERA), w, h, seq, ts) + CAMERA
            message = header + jpeg.tobytes()
            if raw:
                send_raw(ws_frame(message))
            else:
                websockets.broadcast(clients, message)
        seq += 1
        due += 1.0 / fps
        await asyncio.sleep(max(0.0, due - time.monotonic()))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("video")
    ap.add_argument("--width", type=int, default=0)
    ap.add_argument("--raw", action="store_true")
    args = ap.parse_args()
    async with websockets.serve(handler, "127.0.0.1", 0, max_size=65536) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on 127.0.0.1:{port}", flush=True)
        await produce(args.video, args.width, args.raw)


if __name__ == "__main__":
    asyncio.run(main())
