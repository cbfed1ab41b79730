#!/usr/bin/python3
"""Writes the int8 (QDQ) form of a NanoDet ONNX model from its fp32 graph and a calibration table.

The table (models/nanodet-g/calibration-WxH.json, committed) holds the activation ranges that
bench/quantize.py measured once with ONNX Runtime's static quantiser on pictures no benchmark
scores: for every tensor a quantised convolution reads or writes, its uint8 scale and zero point.
This script does the rest by arithmetic, so setup needs only Debian's python3-onnx (no pip, no
ONNX Runtime's Python package, no TensorFlow) and the bytes are the same on every machine:

- the graph is moved to opset 13 (per-channel DequantizeLinear needs its `axis`): Split's sizes
  become an input, the only op of the converter's set whose form changed;
- every convolution but the head's last ones (the score logits and box bins that Split reads,
  kept float as bench/quantize.py keeps them: a logit range learnt from few people would clip
  every confident score) gets int8 weights, symmetric per output channel in [-127, 127], and an
  int32 bias at the scale input x weight; its input and output tensors go through
  QuantizeLinear -> DequantizeLinear with the table's scale and zero point.

ONNX Runtime fuses each DequantizeLinear -> Conv -> QuantizeLinear into an integer convolution.

    /usr/bin/python3 models/qdq.py FP32.onnx TABLE.json OUT.onnx
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


class QdqError(Exception):
    pass


def float_convs(graph):
    """The convolutions kept float: for each Split, the Conv its input comes from."""
    prod = {o: n for n in graph.node for o in n.output}
    keep = set()
    for n in graph.node:
        if n.op_type == "Split":
            x = prod.get(n.input[0])
            while x is not None and x.op_type != "Conv":
                x = prod.get(x.input[0])
            if x is None:
                raise QdqError(f"{n.name}: no convolution feeds the split")
            keep.add(x.name)
    return keep


def quantize_weight(w):
    """Symmetric per-output-channel int8: scale = max|w| / 127, q = round(w / scale)."""
    absmax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).astype(np.float32)
    scale = (absmax / np.float32(127.0)).astype(np.float32)
    scale[scale == 0] = np.float32(1.0)
    q = np.clip(np.rint(w / scale.reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8)
    return q, scale


def quantize_bias(b, in_scale, w_scale):
    scale = (np.float32(in_scale) * w_scale).astype(np.float32)
    q = np.clip(np.rint(b.astype(np.float64) / scale.astype(np.float64)),
                np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
    return q, scale


def to_opset13(graph, inits):
    """Split's `split` attribute becomes its second input."""
    for n in graph.node:
        if n.op_type != "Split":
            continue
        attrs = [a for a in n.attribute if a.name == "split"]
        if not attrs:
            continue
        name = n.name + "_sizes"
        inits.append(numpy_helper.from_array(np.array(list(attrs[0].ints), np.int64), name))
        n.input.append(name)
        n.attribute.remove(attrs[0])


def quantize(model, table):
    graph = model.graph
    if any(o.version != 11 for o in model.opset_import if o.domain in ("", "ai.onnx")):
        raise QdqError("the fp32 graph is not opset 11, as models/tfjs2onnx.py writes it")
    acts = table["activations"]
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    keep_float = float_convs(graph)
    inits = [i for i in graph.initializer]
    to_opset13(graph, inits)

    convs = [n for n in graph.node if n.op_type == "Conv" and n.name not in keep_float]
    # The tensors to quantise: every non-constant input and output of those convolutions.
    tensors = []
    for n in convs:
        for t in (n.input[0], n.output[0]):
            if t not in tensors:
                tensors.append(t)
    missing = [t for t in tensors if t not in acts]
    if missing:
        raise QdqError(f"the table has no range for {len(missing)} tensors, e.g. {missing[0]}: "
                       "a table made for another graph?")

    def scalar(name, value, dtype):
        inits.append(numpy_helper.from_array(np.array(value, dtype), name))
        return name

    qdq_nodes = {}  # tensor -> [Q, DQ]
    dq_of = {}
    for t in tensors:
        scale, zp = acts[t]
        s = scalar(t + "_scale", np.float32(scale), np.float32)
        z = scalar(t + "_zero_point", zp, np.uint8)
        q_out, dq_out = t + "_quantized", t + "_dequantized"
        qdq_nodes[t] = [
            helper.make_node("QuantizeLinear", [t, s, z], [q_out], name=t + "_QuantizeLinear"),
            helper.make_node("DequantizeLinear", [q_out, s, z], [dq_out], name=t + "_DequantizeLinear"),
        ]
        dq_of[t] = dq_out

    def dequantized(name, q, scale, zero_dtype):
        """Constant `name` stored quantised (`q`, per-channel `scale`, zero point 0): its
        DequantizeLinear node and that node's output."""
        inits.append(numpy_helper.from_array(q, name + "_quantized"))
        s = scalar(name + "_scale", scale, np.float32)
        z = scalar(name + "_zero_point", np.zeros(len(scale), zero_dtype), zero_dtype)
        node = helper.make_node("DequantizeLinear", [name + "_quantized", s, z],
                                [name + "_dequantized"], name=name + "_DequantizeLinear", axis=0)
        return node, name + "_dequantized"

    weight_nodes = {}
    for n in convs:
        if len(n.input) < 2 or n.input[1] not in consts:
            raise QdqError(f"{n.name}: the weights are not a constant")
        qw, ws = quantize_weight(consts[n.input[1]].astype(np.float32))
        node, w = dequantized(n.input[1], qw, ws, np.int8)
        nodes, new_inputs = [node], [dq_of[n.input[0]], w]
        if len(n.input) > 2 and n.input[2]:
            qb, bs = quantize_bias(consts[n.input[2]], acts[n.input[0]][0], ws)
            node, b = dequantized(n.input[2], qb, bs, np.int32)
            nodes.append(node)
            new_inputs.append(b)
        weight_nodes[n.name] = (nodes, new_inputs)

    # Every reader of a quantised tensor reads its DequantizeLinear (the graph's outputs, which
    # are Identity nodes' outputs, are never among them).
    out = []
    input_name = graph.input[0].name
    if input_name in qdq_nodes:
        out.extend(qdq_nodes[input_name])
    for n in graph.node:
        if n.name in weight_nodes:
            nodes, new_inputs = weight_nodes[n.name]
            out.extend(nodes)
            del n.input[:]
            n.input.extend(new_inputs)
        else:
            for i, t in enumerate(n.input):
                if t in dq_of:
                    n.input[i] = dq_of[t]
        out.append(n)
        for t in n.output:
            if t in qdq_nodes:
                out.extend(qdq_nodes[t])

    used = {i for n in out for i in n.input}
    new_graph = helper.make_graph(out, graph.name, graph.input, graph.output,
                                  initializer=[i for i in inits if i.name in used])
    q = helper.make_model(new_graph, producer_name="ocellus-qdq",
                          opset_imports=[helper.make_opsetid("", OPSET)])
    q.ir_version = 7
    onnx.checker.check_model(q)
    return q, len(convs), len(tensors)


def main():
    if len(sys.argv) != 4:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        sys.exit(2)
    src, table_path, dst = sys.argv[1:]
    try:
        model = onnx.load(src)
        with open(table_path) as f:
            table = json.load(f)
        q, nconv, nact = quantize(model, table)
    except (QdqError, OSError, KeyError, ValueError) as e:
        print(f"qdq: {src}: {e}", file=sys.stderr)
        sys.exit(1)
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(q.SerializeToString())
    os.replace(tmp, dst)
    print(f"qdq: wrote {dst}: {nconv} int8 convolutions, {nact} quantised tensors", file=sys.stderr)


if __name__ == "__main__":
    main()
