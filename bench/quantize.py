#!/usr/bin/env python3
"""Quantises a NanoDet ONNX model to int8 with ONNX Runtime's static quantiser (QDQ, per-channel
weights), calibrated on pictures the benchmark never scores: scikit-image's sample photographs
(a person, animals, objects, textures), each also flipped and cropped, through NanoDet's
own preprocessing.

    python bench/quantize.py IN.onnx OUT.onnx WIDTH HEIGHT [--table TABLE.json]

With --table it also writes the calibration table models/qdq.py reads (the scale and zero point
of every activation it quantised): how models/nanodet-g/calibration-*.json were made.

Needs onnxruntime, numpy < 2, opencv-python-headless and scikit-image (bench/models.sh makes a
venv with them). A tool run once per input size, not part of setup: setup builds the shipped int8
model with models/qdq.py from the fp32 graph and the committed table.
"""
import os
import sys

import cv2
import numpy as np
import skimage.data
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

MEAN = np.array([103.53, 116.28, 123.675], np.float32).reshape(1, 3, 1, 1)
STD = np.array([57.375, 57.12, 58.395], np.float32).reshape(1, 3, 1, 1)
# The photographs scikit-image carries in its wheel (no download).
PICTURES = ["astronaut", "camera", "cat", "chelsea", "coffee", "rocket", "hubble_deep_field",
            "immunohistochemistry", "grass", "gravel", "brick", "colorwheel"]


def pictures():
    for name in PICTURES:
        img = getattr(skimage.data, name)()
        if isinstance(img, tuple):
            img = img[0]
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        bgr = cv2.cvtColor(img[..., :3].astype(np.uint8), cv2.COLOR_RGB2BGR)
        h, w = bgr.shape[:2]
        yield bgr
        yield bgr[:, ::-1].copy()
        yield bgr[h // 4:, w // 4:].copy()
        yield cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


class Reader(CalibrationDataReader):
    def __init__(self, name, width, height):
        self.items = iter(
            {name: ((cv2.dnn.blobFromImage(p, 1.0, (width, height), (0, 0, 0), False, False)
                     - MEAN) / STD).astype(np.float32)}
            for p in pictures())

    def get_next(self):
        return next(self.items, None)


def write_table(quantized, path, what):
    """The activations' scale and zero point, as the quantiser chose them, by tensor name."""
    import json

    import onnx
    from onnx import numpy_helper
    model = onnx.load(quantized)
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    acts = {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in consts:
            acts[n.input[0]] = [float(consts[n.input[1]]), int(consts[n.input[2]])]
    about = (f"uint8 activations of NanoDet-g ({what}): [scale, zero point] as ONNX Runtime's "
             f"MinMax calibration chose them in bench/quantize.py on {len(PICTURES) * 4} pictures "
             "from scikit-image's samples; read by models/qdq.py")
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(acts.items())]
    with open(path, "w") as f:
        f.write('{\n "about": ' + json.dumps(about) + ',\n "activations": {\n')
        f.write(",\n".join(lines) + "\n }\n}\n")


def main():
    if len(sys.argv) not in (5, 7) or (len(sys.argv) == 7 and sys.argv[5] != "--table"):
        sys.exit("usage: bench/quantize.py IN.onnx OUT.onnx WIDTH HEIGHT [--table TABLE.json]")
    src, dst, width, height = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    table = sys.argv[6] if len(sys.argv) == 7 else None
    import onnx
    from onnx import version_converter
    # Per-channel QDQ needs opset 13 (DequantizeLinear's axis); the converter writes opset 11
    # for OpenCV 4.6, which cannot run the int8 graph anyway.
    up = dst + ".opset13.onnx"
    onnx.save(version_converter.convert_version(onnx.load(src), 13), up)
    pre = dst + ".pre.onnx"
    quant_pre_process(up, pre, skip_symbolic_shape=True)
    graph = onnx.load(pre).graph
    name = graph.input[0].name
    # The head's last convolutions (the score logits and side bins, read by Split) stay float:
    # calibration pictures hold few people, and a logit range learnt from them would clip every
    # confident person score.
    prod = {o: n for n in graph.node for o in n.output}
    keep_float = []
    for n in graph.node:
        if n.op_type == "Split":
            x = prod[n.input[0]]
            while x.op_type != "Conv":
                x = prod[x.input[0]]
            keep_float.append(x.name)
    quantize_static(pre, dst, Reader(name, width, height), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
                    nodes_to_exclude=keep_float)
    os.remove(up)
    os.remove(pre)
    if table:
        write_table(dst, table, f"{src} at {width}x{height}")
    print(f"quantize: {dst} from {src}, calibrated on {len(PICTURES) * 4} pictures", file=sys.stderr)


if __name__ == "__main__":
    main()
