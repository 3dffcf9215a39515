"""VGG16 features for the perceptual loss, with torchvision's ImageNet weights but no torchvision.

torchvision itself is not a dependency (its wheels pull a multi-GB CUDA torch), so the
convolutional stack is rebuilt here with torchvision's layer indices: the state-dict keys
are ``features.N.weight`` / ``features.N.bias`` for the convolutions
N = 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28 of torchvision's ``vgg16().features``
(ReLU after every conv, 2x2 max-pool after each block). Only the layers up to
:data:`RELU3_3` are built, since nothing deeper is used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sharpcam.atomic import atomic_path
from training.weights import (
    VGG16_IMAGENET,
    WeightsError,
    fetch_known,
    read_checkpoint,
    state_dict_mismatch,
)

#: VGG16's convolutional part: output channels per conv, "M" for a 2x2 max-pool.
VGG16_LAYOUT: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip

#: ``features[:RELU3_3]`` ends with the ReLU after conv3_3: 256 channels at 1/4 resolution.
RELU3_3 = 16

#: ImageNet statistics the weights were trained with (RGB, for inputs in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Side the perceptual loss resizes both images to (VGG16's training resolution).
PERCEPTUAL_SIZE = 224


def _layers(layout: tuple[int | str, ...]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    channels = 3
    for item in layout:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            assert isinstance(item, int)
            layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU()]
            channels = item
    return layers


def vgg16_feature_shapes() -> dict[str, torch.Size]:
    """Names and shapes of all ``features.*`` tensors of torchvision's VGG16 (26 tensors)."""
    shapes: dict[str, torch.Size] = {}
    for index, layer in enumerate(_layers(VGG16_LAYOUT)):
        if isinstance(layer, nn.Conv2d):
            shapes[f"features.{index}.weight"] = layer.weight.shape
            shapes[f"features.{index}.bias"] = torch.Size([layer.out_channels])
    return shapes


class VGG16Features(nn.Module):
    """VGG16's convolutional stack cut after layer ``end`` (default :data:`RELU3_3`).

    Expects ImageNet-normalised RGB (see :class:`PerceptualLoss`, which does it).

    Shape:
        - Input: ``[N, 3, H, W]`` float.
        - Output: for ``end=RELU3_3``, ``[N, 256, H // 4, W // 4]``.

    >>> VGG16Features()(torch.zeros(1, 3, 224, 224)).shape
    torch.Size([1, 256, 56, 56])
    """

    def __init__(self, end: int = RELU3_3) -> None:
        super().__init__()
        layers = _layers(VGG16_LAYOUT)
        if not 1 <= end <= len(layers):
            raise ValueError(f"end must be in [1, {len(layers)}], got {end}")
        self.end = end
        self.features = nn.Sequential(*layers[:end])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def load_vgg16_features(
    path: str | os.PathLike[str] | None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    end: int = RELU3_3,
    progress: bool = True,
) -> VGG16Features:
    """Load torchvision's ImageNet VGG16 weights into a frozen :class:`VGG16Features`.

    Args:
        path: a checkpoint in torchvision's format (a plain state dict, like
            ``vgg16-397923af.pth``); ``None`` downloads that file into ``cache_dir`` once.
        cache_dir: download folder (default :func:`training.weights.default_cache_dir`).
        end: cut point (default :data:`RELU3_3`).
        progress: show a download progress bar.

    Every ``features.*`` tensor of VGG16 must be present with its shape, so a VGG19 or a
    batch-norm VGG16 is refused; the ``classifier.*`` tensors (the fully connected head)
    are ignored on purpose: the perceptual loss uses convolutional features only.

    Returns:
        The module in eval mode with ``requires_grad=False`` on every parameter.

    Raises:
        WeightsError: one line: the file is missing or unreadable, not a state dict, or
            its ``features.*`` names/shapes differ from VGG16's; or the download failed.
    """
    fix = f"pass torchvision's {VGG16_IMAGENET.filename} with --vgg PATH"
    file = (
        Path(path)
        if path is not None
        else fetch_known(VGG16_IMAGENET, cache_dir, progress=progress)
    )
    state = read_checkpoint(file, what="VGG16 checkpoint", flag="--vgg")
    if not isinstance(state, Mapping):
        raise WeightsError(
            f"{file} is not a VGG16 state dict (found {type(state).__name__}); {fix}"
        )
    # The classifier (fully connected layers) is not used by the perceptual loss: skip it.
    features = {k: v for k, v in state.items() if not str(k).startswith("classifier.")}
    problem = state_dict_mismatch(vgg16_feature_shapes(), features)
    if problem is not None:
        raise WeightsError(f"{file} is not a torchvision VGG16 checkpoint: {problem}; {fix}")
    model = VGG16Features(end)
    used = model.state_dict().keys()  # the early-stopped stack needs only the first convs
    model.load_state_dict({k: v for k, v in features.items() if k in used}, strict=True)
    return model.eval().requires_grad_(False)


def save_random_vgg16_checkpoint(path: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """Save a random VGG16 in torchvision's format: all ``features.*`` and ``classifier.*``.

    A stand-in for ``vgg16-397923af.pth`` in tests (same keys and shapes, same loader
    path); **never use it for a real perceptual loss**. The classifier tensors (123.6 M
    values, ignored by the loader) are stored as zero-stride views of one value, so the
    file is about 59 MB instead of 528 MB. Written atomically; the caller's torch RNG
    state is left untouched.
    """
    generator = torch.Generator().manual_seed(seed)
    state = {
        name: torch.randn(shape, generator=generator) * 0.05
        for name, shape in vgg16_feature_shapes().items()
    }
    classifier = {0: (512 * 7 * 7, 4096), 3: (4096, 4096), 6: (4096, 1000)}  # Linear(in, out)
    for index, (n_in, n_out) in classifier.items():
        state[f"classifier.{index}.weight"] = torch.zeros(1).expand(n_out, n_in)
        state[f"classifier.{index}.bias"] = torch.zeros(1).expand(n_out)
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(final) as tmp:
        torch.save(state, tmp)
    return final


def perceptual_loss(
    pred: torch.Tensor, target: torch.Tensor, features: VGG16Features
) -> torch.Tensor:
    """Mean L1 distance between VGG16 feature maps of two RGB batches.

    Both images are resized to 224x224 with plain bilinear interpolation (antialias off:
    cheap, and the usual 256 -> 224 shrink is too mild to alias), normalised with the
    ImageNet mean/std, and passed through ``features``. The target's features are computed
    without gradient; the gradient flows to ``pred`` only.

    Args:
        pred: ``[N, 3, H, W]`` float RGB in ``[0, 1]`` (the student's output).
        target: ``[N, 3, H', W']`` float RGB in ``[0, 1]`` (e.g. the ground truth).
        features: a (frozen) :class:`VGG16Features`.

    Returns:
        Scalar tensor >= 0; exactly 0 when ``pred`` equals ``target``.

    Raises:
        ValueError: shapes are not ``[N, 3, H, W]`` with the same N.
    """
    if pred.ndim != 4 or pred.shape[1] != 3 or target.ndim != 4 or target.shape[1] != 3:
        raise ValueError(
            f"pred and target must be [N, 3, H, W], got {list(pred.shape)} and {list(target.shape)}"
        )
    if pred.shape[0] != target.shape[0]:
        raise ValueError(f"batch sizes differ: {pred.shape[0]} and {target.shape[0]}")
    with torch.no_grad():
        target_features = features(_prepare(target))
    return F.l1_loss(features(_prepare(pred)), target_features)


def _prepare(images: torch.Tensor) -> torch.Tensor:
    size = (PERCEPTUAL_SIZE, PERCEPTUAL_SIZE)
    if images.shape[-2:] != size:
        images = F.interpolate(
            images, size=size, mode="bilinear", align_corners=False, antialias=False
        )
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


class PerceptualLoss(nn.Module):
    """Module form of :func:`perceptual_loss` holding the frozen VGG16 features.

    The features stay in eval mode with no gradient to their weights even when the
    surrounding module is put in training mode.

    Args:
        features: from :func:`load_vgg16_features`.

    Shape:
        - pred: ``[N, 3, H, W]`` float RGB in ``[0, 1]``.
        - target: ``[N, 3, H', W']`` float RGB in ``[0, 1]``.
        - Output: scalar.

    >>> loss = PerceptualLoss(VGG16Features())
    >>> x = torch.rand(2, 3, 64, 64)
    >>> float(loss(x, x))
    0.0
    """

    def __init__(self, features: VGG16Features) -> None:
        super().__init__()
        self.features = features.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.features.eval()
        return self

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return perceptual_loss(pred, target, self.features)
