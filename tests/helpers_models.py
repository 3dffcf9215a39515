"""Small ONNX models that follow (or deliberately break) the sharpcam contract.

Until the shipped ``models/sharpcam.onnx`` exists, tests make their own:

* :func:`unsharp_model` — a real sharpener built with ``onnx.helper`` (no torch): a
  depthwise 3x3 unsharp-mask convolution, clamped to [0, 1]. Fast to build and run.
* :func:`torch_model` — :class:`TinySharpener`, a small residual CNN exported from PyTorch,
  for parity checks against PyTorch itself.
* :func:`broken_model` — contract violations (wrong name, channels, dtype, fixed size).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sharpcam.contract import INPUT_NAME, OUTPUT_NAME

#: ONNX Runtime 1.31 reads IR version ≤ 13; onnx 1.23 would write 14 by default.
IR_VERSION = 9
OPSET = 17


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def unsharp_kernel(amount: float = 0.5) -> np.ndarray:
    """``[3,1,3,3]`` float32 depthwise kernel: identity plus ``amount`` x Laplacian."""
    k = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float32) * amount
    k[1, 1] += 1.0
    return np.repeat(k[None, None], 3, axis=0)


def unsharp_reference(frame: np.ndarray, amount: float = 0.5) -> np.ndarray:
    """What :func:`unsharp_model` computes, in numpy, on an already padded
    ``[1,3,H,W]`` float32 tensor (zero padding at the tensor's border, like the Conv)."""
    k = unsharp_kernel(amount)[0, 0]
    padded = np.pad(frame, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros_like(frame)
    h, w = frame.shape[2:]
    for dy in range(3):
        for dx in range(3):
            out += k[dy, dx] * padded[:, :, dy : dy + h, dx : dx + w]
    return np.clip(out, 0.0, 1.0)


def unsharp_model(path: Path, amount: float = 0.5) -> Path:
    """A contract model: ``Clip(DepthwiseConv3x3(frames), 0, 1)``; written to ``path``."""
    x = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 3, "H", "W"])
    inits = [
        numpy_helper.from_array(unsharp_kernel(amount), "kernel"),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(1.0, np.float32), "hi"),
    ]
    nodes = [
        helper.make_node("Conv", [INPUT_NAME, "kernel"], ["conv"], group=3, pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["conv", "lo", "hi"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(nodes, "unsharp", [x], [y], inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    model.metadata_props.add(key="made_by", value="tests/helpers_models.py")
    return _save(model, path)


def broken_model(
    path: Path,
    *,
    input_name: str = INPUT_NAME,
    output_name: str = OUTPUT_NAME,
    channels: int = 3,
    elem_type: int = TensorProto.FLOAT,
    size: tuple[int | str, int | str] = ("H", "W"),
) -> Path:
    """An identity-like model with the given input/output description (to break one part
    of the contract at a time)."""
    dims = ["N", channels, *size]
    x = helper.make_tensor_value_info(input_name, elem_type, dims)
    y = helper.make_tensor_value_info(output_name, elem_type, dims)
    graph = helper.make_graph(
        [helper.make_node("Identity", [input_name], [output_name])], "g", [x], [y]
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    return _save(model, path)


def torch_model(path: Path, seed: int = 0):
    """Export :class:`TinySharpener` (seeded weights) to ``path``; return the module."""
    import torch

    module = tiny_sharpener(seed).eval()
    sample = torch.rand(1, 3, 32, 40)
    dynamic = {0: "N", 2: "H", 3: "W"}
    torch.onnx.export(
        module,
        (sample,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: dynamic},
        opset_version=OPSET,
        dynamo=False,
    )
    return module


def tiny_sharpener(seed: int = 0):
    """A residual CNN: ``clamp(x + conv(relu(conv(x))), 0, 1)``, 3→8→3 channels."""
    import torch
    from torch import nn

    class TinySharpener(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 3, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.clamp(x + 0.3 * self.b(torch.relu(self.a(x))), 0.0, 1.0)

    torch.manual_seed(seed)
    return TinySharpener()


def halving_model(path: Path) -> Path:
    """Meets the contract on paper (names, dtype, dynamic dims) but its output is half the
    input's size (a 2x2 max-pool): only running it shows the problem."""
    x = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 3, "H2", "W2"])
    pool = helper.make_node(
        "MaxPool", [INPUT_NAME], [OUTPUT_NAME], kernel_shape=[2, 2], strides=[2, 2]
    )
    graph = helper.make_graph([pool], "halving", [x], [y])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    return _save(model, path)


def set_metadata(path: Path, **meta: str) -> Path:
    """Set ``sharpcam.KEY = value`` metadata on the model at ``path`` (in place)."""
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update({f"sharpcam.{key}": str(value) for key, value in meta.items()})
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    return _save(model, path)


def nearest_x2_model(path: Path, *, metadata: bool = True) -> Path:
    """A real ×2 model built with ``onnx.helper``: a fixed 1x1 convolution copies each
    channel 4 times, ``DepthToSpace`` (pixel shuffle) lays the copies out as 2x2 blocks,
    then ``Clip``: nearest-neighbour upscaling, ``[N,3,H,W] -> [N,3,2H,2W]``. With
    ``metadata`` it says ``sharpcam.scale = 2``, ``sharpcam.mode = x2``."""
    x = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 3, "H2", "W2"])
    kernel = np.zeros((12, 3, 1, 1), np.float32)
    for c in range(3):
        kernel[c * 4 : c * 4 + 4, c] = 1.0  # DepthToSpace CRD: channel c*4+k -> block k
    inits = [
        numpy_helper.from_array(kernel, "kernel"),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(1.0, np.float32), "hi"),
    ]
    nodes = [
        helper.make_node("Conv", [INPUT_NAME, "kernel"], ["copies"]),
        helper.make_node("DepthToSpace", ["copies"], ["big"], blocksize=2, mode="CRD"),
        helper.make_node("Clip", ["big", "lo", "hi"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(nodes, "nearest_x2", [x], [y], inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    if metadata:
        for key, value in (("scale", "2"), ("mode", "x2"), ("tier", "quality")):
            model.metadata_props.add(key=f"sharpcam.{key}", value=value)
        model.metadata_props.add(key="sharpcam.macs_per_pixel", value="3")
    return _save(model, path)


def nearest_x2(image: np.ndarray) -> np.ndarray:
    """What :func:`nearest_x2_model` computes on an ``HxWxC`` uint8 image."""
    return np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)
