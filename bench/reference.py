#!/usr/bin/python3
"""The usual way to do Ocellus' work in Python with OpenCV, serially, for comparison:
read a frame, motion (MOG2 on a downscaled grey frame), FastestDet on every frame (decode with
numpy, NMS), JPEG-encode the frame. Uses Debian's python3-opencv (the same OpenCV 4.6 as Ocellus).

    /usr/bin/python3 bench/reference.py MODE VIDEO MODEL
    MODE: full (everything above), decode (read only), dnn (read + DNN + decode of the output)
Prints one line: MODE frames seconds fps
"""
import sys
import time

import cv2
import numpy as np


def main() -> None:
    mode, video, model = sys.argv[1], sys.argv[2], sys.argv[3]
    cap = cv2.VideoCapture(video)
    net = cv2.dnn.readNetFromONNX(model) if mode != "decode" else None
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
        if mode == "full":
            small = cv2.resize(frame, (320, 320 * h // w), interpolation=cv2.INTER_AREA)
            grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (5, 5), 0)
            mask = mog.apply(grey)
            mask = cv2.dilate(cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel), kernel)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            _moving = [cv2.boundingRect(c) for c in contours if cv2.contourArea(c) >= 40]
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
