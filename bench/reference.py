#!/usr/bin/python3
"""The usual way to do Ocellus' work in Python with OpenCV, serially, for comparison:
read a frame, motion (MOG2 on a downscaled grey frame), FastestDet on every frame (decode with
numpy, NMS), JPEG-encode the frame. Uses Debian's python3-opencv (the same OpenCV 4.6 as Ocellus).

    /usr/bin/python3 bench/reference.py MODE VIDEO MODEL
    MODE: full (everything above), decode (read only), dnn (read + DNN + decode of the output)
    nanodet: the same work as full with NanoDet-g (MODEL: its ONNX file, 384x288) run by ONNX
    Runtime's Python package (default session options: one thread a core) and decoded with numpy;
    needs onnxruntime and numpy < 2 (bench/models.sh's venv): VENV/bin/python bench/reference.py ...
Prints one line: MODE frames seconds fps
"""
import sys
import time

import cv2
import numpy as np


MEAN = np.array([103.53, 116.28, 123.675], np.float32).reshape(1, 3, 1, 1)
STD = np.array([57.375, 57.12, 58.395], np.float32).reshape(1, 3, 1, 1)


def nanodet(session, names, frame, net_w=384, net_h=288, thr=0.4):
    """NanoDet-g's boxes in frame pixels: per stride, the best class and its score, the four side
    distances as the softmax expectation of their 11 bins, then class-wise NMS."""
    h, w = frame.shape[:2]
    blob = (cv2.dnn.blobFromImage(frame, 1.0, (net_w, net_h), (0, 0, 0), False, False) - MEAN) / STD
    outs = session.run(None, {names: blob.astype(np.float32)})
    by_rows = {}
    for o in outs:
        by_rows.setdefault(o.shape[1], []).append(o[0])
    boxes, scores, classes = [], [], []
    for stride in (8, 16, 32):
        gw, gh = -(-net_w // stride), -(-net_h // stride)
        pair = by_rows[gw * gh]
        cls, reg = (pair[0], pair[1]) if pair[0].shape[1] == 80 else (pair[1], pair[0])
        best = cls.argmax(axis=1)
        score = cls[np.arange(len(best)), best]
        keep = np.nonzero(score >= thr)[0]
        if keep.size == 0:
            continue
        d = reg[keep].reshape(-1, 4, 11)
        e = np.exp(d - d.max(axis=2, keepdims=True))
        dist = (e / e.sum(axis=2, keepdims=True) * np.arange(11)).sum(axis=2) * stride
        cx = (keep % gw + 0.5) * stride
        cy = (keep // gw + 0.5) * stride
        sx, sy = w / net_w, h / net_h
        x1, y1 = (cx - dist[:, 0]) * sx, (cy - dist[:, 1]) * sy
        x2, y2 = (cx + dist[:, 2]) * sx, (cy + dist[:, 3]) * sy
        boxes += np.stack([x1, y1, x2 - x1, y2 - y1], axis=1).tolist()
        scores += score[keep].tolist()
        classes += best[keep].tolist()
    if not boxes:
        return 0
    return len(cv2.dnn.NMSBoxesBatched(boxes, scores, classes, thr, 0.45))


def main() -> None:
    mode, video, model = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "nanodet":
        import onnxruntime

        session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
    cap = cv2.VideoCapture(video)
    net = cv2.dnn.readNetFromONNX(model) if mode in ("full", "dnn") else None
    mog = cv2.createBackgroundSubtractorMOG2(300, 25, False)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    frames = 0
    found = 0
    start = time.perf_counter()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames += 1
        if mode == "decode":
            continue
        h, w = frame.shape[:2]
        if mode in ("full", "nanodet"):
            # As src/pipeline/motion.rs scales down: grey, halved by area while twice the size, the rest
            # bilinear.
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            while grey.shape[1] >= 2 * 320 and grey.shape[0] >= 2 * (320 * h // w):
                grey = cv2.resize(grey, (grey.shape[1] // 2, grey.shape[0] // 2), interpolation=cv2.INTER_AREA)
            grey = cv2.resize(grey, (320, 320 * h // w), interpolation=cv2.INTER_LINEAR)
            grey = cv2.GaussianBlur(grey, (5, 5), 0)
            mask = mog.apply(grey)
            mask = cv2.dilate(cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel), kernel)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            _moving = [cv2.boundingRect(c) for c in contours if cv2.contourArea(c) >= 40]
        if mode == "nanodet":
            found += nanodet(session, input_name, frame)
            cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 75])
            continue
        net.setInput(cv2.dnn.blobFromImage(frame, 1 / 255.0, (352, 352)))
        out = net.forward()[0]  # [85, 22, 22]
        obj = out[0]
        cls = out[5:]
        best = cls.max(axis=0)
        score = obj.clip(0) ** 0.6 * best.clip(0) ** 0.4
        rows, cols = np.nonzero(score > 0.4)
        gh, gw = obj.shape
        boxes, scores = [], []
        for r, c in zip(rows, cols):
            cx = (c + np.tanh(out[1, r, c])) / gw * w
            cy = (r + np.tanh(out[2, r, c])) / gh * h
            bw = 1 / (1 + np.exp(-out[3, r, c])) * w
            bh = 1 / (1 + np.exp(-out[4, r, c])) * h
            boxes.append([int(cx - bw / 2), int(cy - bh / 2), int(bw), int(bh)])
            scores.append(float(score[r, c]))
        found += len(cv2.dnn.NMSBoxes(boxes, scores, 0.4, 0.45)) if boxes else 0
        if mode == "full":
            cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 75])
    secs = time.perf_counter() - start
    print(f"{mode} {frames} {secs:.3f} {frames / secs:.2f}")


if __name__ == "__main__":
    main()
