"""Peer super-resolution models a user might pick instead of sharpcam (``../shared/peers``).

* OpenCV's ``dnn_superres`` models FSRCNN x2 and ESPCN x2 (TensorFlow ``.pb``). We have
  opencv-python, not contrib, and OpenCV 5's TensorFlow importer cannot read their final
  ``DepthToSpace`` node (it wants a ``blocksize`` parameter the node does not carry). So,
  as ``dnn_superres`` does, the luminance goes in and chroma is upscaled bicubically; the
  graph is cut just before ``DepthToSpace`` (the protobuf is walked at the wire level, no
  TensorFlow needed) and the pixel shuffle and what follows it (a bias add for FSRCNN, a
  tanh for ESPCN) are applied with numpy.
* SPAN x2 (ncnn): RGB in ``[0, 1]``, CHW, through the ``ncnn`` package.

:func:`load_peers` returns the peers it could load and, for every other one, a reason.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

#: Where the peers live, relative to the repository root.
DEFAULT_PEERS = Path(__file__).resolve().parents[1].parent / "shared" / "peers"

Upscaler = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Peer:
    """A loaded peer: ``fn`` maps an ``HxWx3 uint8`` RGB frame to ``(scale*H)x(scale*W)x3``."""

    name: str
    scale: int
    fn: Upscaler


# --- protobuf wire format, just enough to cut a TensorFlow GraphDef -------------------------


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes, bytes]]:
    """``(field number, value, raw bytes of the whole field)`` of a protobuf message."""
    i = 0
    while i < len(data):
        start = i
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            value, i = data[i : i + size], i + size
        elif wire == 1:
            value, i = data[i : i + 8], i + 8
        elif wire == 5:
            value, i = data[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value, data[start:i]


@dataclass(frozen=True)
class _Node:
    name: str
    op: str
    inputs: tuple[str, ...]
    raw: bytes  # the whole GraphDef field, to write the node back unchanged
    body: bytes


def _nodes(graph: bytes) -> list[_Node]:
    nodes = []
    for number, value, raw in _fields(graph):
        if number != 1 or not isinstance(value, bytes):
            continue
        parts: dict[int, list[bytes]] = {}
        for n, v, _ in _fields(value):
            if isinstance(v, bytes):
                parts.setdefault(n, []).append(v)
        nodes.append(
            _Node(
                parts[1][0].decode(),
                parts[2][0].decode(),
                tuple(x.decode() for x in parts.get(3, [])),
                raw,
                value,
            )
        )
    return nodes


def _const_floats(node: _Node) -> np.ndarray:
    """The float values of a ``Const`` node (attr ``value``: TensorProto)."""
    for number, entry, _ in _fields(node.body):
        if number != 5 or not isinstance(entry, bytes):  # attr map entry
            continue
        kv = {n: v for n, v, _ in _fields(entry)}
        if kv.get(1) != b"value" or not isinstance(kv.get(2), bytes):
            continue
        tensor = next(v for n, v, _ in _fields(kv[2]) if n == 8)  # AttrValue.tensor
        assert isinstance(tensor, bytes)
        for n, v, _ in _fields(tensor):
            if n == 4 and isinstance(v, bytes) and v:  # tensor_content
                return np.frombuffer(v, "<f4").copy()
            if n == 5:  # float_val, packed or not
                data = v if isinstance(v, bytes) else b""
                return np.array(struct.unpack(f"<{len(data) // 4}f", data), np.float32)
    raise ValueError(f"node {node.name} holds no float constant")


def tf_superres(pb: Path, scale: int) -> Upscaler:
    """An FSRCNN/ESPCN ``.pb`` of OpenCV's ``dnn_superres`` as an RGB upscaler."""
    graph = pb.read_bytes()
    nodes = _nodes(graph)
    by_name = {n.name: n for n in nodes}
    cut = next((i for i, n in enumerate(nodes) if n.op == "DepthToSpace"), None)
    if cut is None:
        raise ValueError(f"{pb.name} has no DepthToSpace node")
    tail: list[Callable[[np.ndarray], np.ndarray]] = []
    for node in nodes[cut + 1 :]:
        if node.op == "BiasAdd":
            bias = float(_const_floats(by_name[node.inputs[1]])[0])
            tail.append(lambda y, b=bias: y + b)
        elif node.op == "Tanh":
            tail.append(np.tanh)
        elif node.op != "Transpose" and node.op != "Const":
            raise ValueError(f"{pb.name}: unexpected {node.op} after DepthToSpace")
    kept = b"".join(
        raw
        for number, _, raw in _fields(graph)
        if number != 1 or not any(raw == n.raw for n in nodes[cut:])
    )
    if not hasattr(cv2.dnn, "readNetFromTensorflow"):
        raise ImportError(
            f"OpenCV {cv2.__version__} has no TensorFlow importer (removed in 5.1): "
            "install opencv-python<5.1, as pyproject.toml pins it"
        )
    net = cv2.dnn.readNetFromTensorflow(np.frombuffer(kept, np.uint8))

    def run(rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        ycrcb = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
        net.setInput(ycrcb[None, None, :, :, 0].astype(np.float32) / 255.0)
        out = net.forward()[0]  # (scale*scale, H, W), TensorFlow's depth order
        y = out.reshape(scale, scale, h, w).transpose(2, 0, 3, 1).reshape(h * scale, w * scale)
        for step in tail:
            y = step(y)
        big = cv2.resize(ycrcb, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)
        big[:, :, 0] = np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)
        return cv2.cvtColor(big, cv2.COLOR_YCrCb2RGB)

    return run


def span_ncnn(param: Path, weights: Path, threads: int = 2) -> Upscaler:
    """SPAN through ncnn: RGB ``[0, 1]`` CHW in blob ``data``, out of blob ``output``."""
    import ncnn

    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    if net.load_param(str(param)) or net.load_model(str(weights)):
        raise ValueError(f"ncnn cannot load {param.name}/{weights.name}")

    def run(rgb: np.ndarray) -> np.ndarray:
        chw = np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / 255.0
        extractor = net.create_extractor()
        blob = ncnn.Mat(chw)  # borrows chw's memory: chw must outlive the extraction
        extractor.input("data", blob)
        _, out = extractor.extract("output")
        hr = np.clip(np.array(out), 0.0, 1.0)
        del blob, chw
        return np.rint(hr.transpose(1, 2, 0) * 255.0).astype(np.uint8)

    return run


#: name -> (files under the peers folder, loader).
PEERS: dict[str, tuple[tuple[str, ...], Callable[..., Upscaler]]] = {
    "FSRCNN x2": (("opencv-dnn-superres/FSRCNN_x2.pb",), lambda pb: tf_superres(pb, 2)),
    "ESPCN x2": (("opencv-dnn-superres/ESPCN_x2.pb",), lambda pb: tf_superres(pb, 2)),
    "SPAN x2 (ncnn)": (("span/spanx2_ch48.param", "span/spanx2_ch48.bin"), span_ncnn),
}
#: Loaders that take a thread count.
THREADED = {"SPAN x2 (ncnn)"}


def load_peers(
    folder: Path | None = None, threads: int = 2
) -> tuple[list[Peer], list[tuple[str, str]]]:
    """The peers of :data:`PEERS` that load from ``folder``, and ``(name, reason)`` skips.

    ``threads``: ncnn's threads (OpenCV's are set with ``cv2.setNumThreads``).
    """
    folder = DEFAULT_PEERS if folder is None else folder
    loaded: list[Peer] = []
    skipped: list[tuple[str, str]] = []
    for name, (files, loader) in PEERS.items():
        paths = [folder / f for f in files]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            skipped.append((name, f"{', '.join(missing)} not found"))
            continue
        try:
            extra = {"threads": threads} if name in THREADED else {}
            loaded.append(Peer(name, 2, loader(*paths, **extra)))
        except (ImportError, ValueError, cv2.error) as exc:
            skipped.append((name, f"cannot load: {str(exc).splitlines()[0]}"))
    return loaded, skipped
