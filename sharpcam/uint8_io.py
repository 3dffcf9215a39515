"""Colour/dtype conversion inside the ONNX graph: a uint8 NHWC wrapper around a model.

The contract's model takes ``[N,3,H,W] float32`` RGB in ``[0,1]``. :func:`uint8_wrapper`
puts ``Cast -> scale -> Transpose`` in front of it and ``Transpose -> scale -> round ->
Clip -> Cast`` behind it, so the wrapped graph takes and gives ``[N,H,W,3] uint8`` RGB:
the frame the host already has. The transposes do not care about the model's scale, so
the same wrapper serves ×1 and ×2 models. On a GPU this moves a quarter of the bytes across the bus
and does the conversion on the device; measured on an H100 with CUDA (``sharpcam bench
--io-compare``) it cut the host's part of a 720p frame from 7.8 to 3.6 ms and of a 1080p
frame from 17.1 to 7.7 ms. On a CPU, OpenCV's SIMD conversion on the host is faster
(1080p: 8.1 vs 21.6 ms), so the engine uses this only on GPU providers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sharpcam.contract import INPUT_NAME, OUTPUT_NAME
from sharpcam.frames import padded_size

U8_INPUT = "u8_frames"
U8_OUTPUT = "u8_sharpened"
#: Second output of the wrapper: the sum of the model's float output, ``[1,1,1,1]``. NaN
#: or Inf anywhere in the frame makes it non-finite (the uint8 cast would hide them).
U8_CHECK = "u8_check"


def uint8_wrapper(model_path: Path, *, layout: bool = True) -> bytes:
    """The model at ``model_path`` wrapped to take and give ``[N,H,W,3] uint8`` RGB.

    Outputs are rounded half up and saturated to ``[0, 255]``; :data:`U8_CHECK` is the
    sum of the float output, non-finite when it holds NaN or Inf.

    With ``layout=False`` the graph keeps the model's float ``[N,3,H,W]`` input in
    ``[0,1]`` and gives ``x*255 + 0.5`` saturated to ``[0, 255]``, still float
    ``[N,3,sH,sW]`` (input :data:`~sharpcam.contract.INPUT_NAME`, outputs :data:`U8_OUTPUT`
    and :data:`U8_CHECK`): the caller does the uint8 casts (truncating) and the layout
    changes itself. OpenVINO's preprocessing does them inside the reorders its CPU plugin
    makes anyway (:mod:`sharpcam.backends.openvino`).
    """
    model = onnx.load(str(model_path))
    graph = model.graph
    model_in = "_f_in" if layout else INPUT_NAME
    for node in graph.node:
        node.input[:] = [model_in if i == INPUT_NAME else i for i in node.input]
        node.output[:] = ["_f_out" if o == OUTPUT_NAME else o for o in node.output]
    front = [
        helper.make_node("Cast", [U8_INPUT], ["_c0"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["_c0", "_inv255"], ["_c1"]),
        helper.make_node("Transpose", ["_c1"], ["_f_in"], perm=[0, 3, 1, 2]),
    ]
    rounded = "_d3" if layout else U8_OUTPUT
    back = [
        helper.make_node("Mul", ["_d0" if layout else "_f_out", "_255"], ["_d1"]),
        helper.make_node("Add", ["_d1", "_half"], ["_d2"]),
        helper.make_node("Clip", ["_d2", "_zero", "_top"], [rounded]),
        helper.make_node("ReduceSum", ["_f_out"], [U8_CHECK], keepdims=1),
    ]
    if layout:
        back = [
            helper.make_node("Transpose", ["_f_out"], ["_d0"], perm=[0, 2, 3, 1]),
            *back,
            helper.make_node("Cast", [rounded], [U8_OUTPUT], to=TensorProto.UINT8),
        ]
    consts = {"_inv255": 1 / 255, "_255": 255.0, "_half": 0.5, "_zero": 0.0, "_top": 255.0}
    graph.initializer.extend(
        numpy_helper.from_array(np.array(v, np.float32), k) for k, v in consts.items()
    )
    nodes = [*(front if layout else []), *graph.node, *back]
    del graph.node[:]
    graph.node.extend(nodes)
    nhwc = ["n", "h", "w", 3]
    if layout:
        del graph.input[:]
        graph.input.append(helper.make_tensor_value_info(U8_INPUT, TensorProto.UINT8, nhwc))
    out_type, out_shape = (
        (TensorProto.UINT8, nhwc) if layout else (TensorProto.FLOAT, ["n", 3, "h", "w"])
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(U8_OUTPUT, out_type, out_shape))
    graph.output.append(helper.make_tensor_value_info(U8_CHECK, TensorProto.FLOAT, [1, 1, 1, 1]))
    del graph.value_info[:]
    return model.SerializeToString()


class Uint8Buffers:
    """Reused ``[1,H',W',3] uint8`` input and ``[1,sH',sW',3]`` output for one frame size
    (``s`` the model's scale); backends bind them to their sessions.

    The frame is reflect-padded (``dcb|abcd``) into the input buffer by OpenCV; the
    result is cropped back (``s`` times the frame size) with one copy.
    """

    def __init__(self, height: int, width: int, scale: int = 1) -> None:
        self.size = (height, width)
        self.scale = scale
        ph, pw = padded_size(height, width)
        self.input = np.empty((1, ph, pw, 3), np.uint8)
        self.output = np.empty((1, ph * scale, pw * scale, 3), np.uint8)
        self.check = np.zeros((1, 1, 1, 1), np.float32)
        """Where the wrapper's :data:`U8_CHECK` (sum of the float output) is written."""

    def finite(self) -> bool:
        """Whether the last run's float output was free of NaN and Inf."""
        return bool(np.isfinite(self.check[0, 0, 0, 0]))

    def load(self, frame: np.ndarray, *, bgr: bool = False) -> None:
        """Pad ``frame`` (``HxWx3 uint8``) into the input buffer as RGB."""
        h, w = self.size
        ph, pw = self.input.shape[1:3]
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if bgr else frame
        cv2.copyMakeBorder(rgb, 0, ph - h, 0, pw - w, cv2.BORDER_REFLECT_101, dst=self.input[0])

    def unload(self, out: np.ndarray | None = None, *, bgr: bool = False) -> np.ndarray:
        """The output cropped to ``scale`` times the frame size (into ``out`` if given)."""
        h, w = self.size
        crop = self.output[0, : h * self.scale, : w * self.scale]
        if bgr:
            return cv2.cvtColor(crop, cv2.COLOR_RGB2BGR, dst=out)
        if out is None:
            return crop.copy()  # never a view: the buffer is overwritten by the next frame
        np.copyto(out, crop)
        return out


class Uint8Plan(Uint8Buffers):
    """:class:`Uint8Buffers` bound to a wrapped ONNX Runtime session with I/O binding."""

    def __init__(self, session: Any, height: int, width: int, scale: int = 1) -> None:
        super().__init__(height, width, scale)
        self.session = session
        self.binding = session.io_binding()
        self.binding.bind_cpu_input(U8_INPUT, self.input)
        self.binding.bind_output(
            U8_OUTPUT, "cpu", 0, np.uint8, list(self.output.shape), self.output.ctypes.data
        )
        self.binding.bind_output(
            U8_CHECK, "cpu", 0, np.float32, [1, 1, 1, 1], self.check.ctypes.data
        )

    def execute(self) -> None:
        """Run the model on the loaded input."""
        self.session.run_with_iobinding(self.binding)

    def run(self, frame: np.ndarray) -> np.ndarray:
        """Load, run, unload: the sharpened ``frame``."""
        self.load(frame)
        self.execute()
        return self.unload()
