"""A live-frame WebSocket broadcaster written the usual way in Python, to compare fan-out cost
with Ocellus: read the clip with OpenCV at its own fps, JPEG-encode each frame once, and
websockets.broadcast() it to every connected client. No detection (compare with Ocellus run with
the detector and motion off). Frames carry Ocellus's binary header so examples/ws_load measures
both the same way.

    /usr/bin/python3 bench/py_broadcast.py VIDEO      (prints "listening on HOST:PORT")

Needs Debian's python3-opencv and python3-websockets.
"""
import asyncio
import struct
import sys
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


async def produce(path):
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
            ok, jpeg = cv2.imencode(".jpg", frame, params)
            h, w = frame.shape[:2]
            header = struct.pack("<BBHHQq", 1, len(CAMERA), w, h, seq, ts) + CAMERA
            websockets.broadcast(clients, header + jpeg.tobytes())
        seq += 1
        due += 1.0 / fps
        await asyncio.sleep(max(0.0, due - time.monotonic()))


async def main():
    async with websockets.serve(handler, "127.0.0.1", 0, max_size=65536) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening on 127.0.0.1:{port}", flush=True)
        await produce(sys.argv[1])


if __name__ == "__main__":
    asyncio.run(main())
