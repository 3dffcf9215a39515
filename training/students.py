"""Student networks: small CNNs that learn to sharpen like the teacher.

Every student maps ``[N, 3, H, W]`` RGB in ``[0, 1]`` to ``[N, 3, scale*H, scale*W]``
(attribute ``scale``: 1 for the ``restore`` mode, 2 for ``x2``); H and W must be multiples
of its attribute ``multiple`` (at most 4 here; the runtime pads to multiples of 8).
:data:`STUDENTS` maps the ``--student`` names to classes with plain entries a search can
follow; :func:`macs_per_pixel` counts multiply-adds per output pixel.

* :class:`SeedStudent` is the seed write-up's 9-layer encoder-decoder, exactly.
* :class:`ResidualStudent` (``residual``, the default; two make the ``quality`` tier)
  predicts a correction added to its input, works at half resolution after a
  pixel-unshuffle, and starts as the identity. The other students are the same family
  with other sizes: ``fast`` (one makes the ``fast`` tier), and for the x2 mode
  ``residual-x2`` and ``fast-x2``, whose correction is added to a fixed bicubic x2
  upsample of the input (:class:`BicubicUpsample2x`) and which start as that upsample.
"""

from __future__ import annotations

import torch
from torch import nn


class SeedStudent(nn.Module):
    """The seed's StudentCNN: 3->32->64, max-pool, 64->64->64, bilinear x2, 64->32->3, tanh.

    The tanh output in ``[-1, 1]`` is scaled to ``[0, 1]`` as the write-up says.
    About 57.0k multiply-adds per output pixel, 113k parameters.

    Shape:
        - Input: ``(N, 3, H, W)``, H and W even.
        - Output: ``(N, 3, H, W)`` in ``[0, 1]``.
    """

    scale = 1
    multiple = 2

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(64, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 3, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.decoder(self.encoder(x)) + 1.0) * 0.5


#: Slope of the residual students' leaky ReLUs below zero.
NEGATIVE_SLOPE = 0.1

#: Parameter ``a`` of Keys' bicubic kernel: -0.75, as OpenCV's INTER_CUBIC and PyTorch use.
CUBIC_A = -0.75


def detail_layer(x: torch.Tensor) -> torch.Tensor:
    """``x`` minus its 3x3 local mean (edge-replicated border): zero wherever ``x`` is flat.

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: ``(N, C, H, W)``.
    """
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    return x - nn.functional.avg_pool2d(padded, 3, stride=1)


class DetailLayer(nn.Module):
    """:func:`detail_layer` as a module, so :func:`macs_per_pixel` counts its 3x3 mean
    (9 multiply-adds per value)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return detail_layer(x)

    def multiply_adds(self, out: torch.Tensor) -> int:
        return 9 * out.numel()


def cubic(t: float) -> float:
    """Keys' cubic convolution kernel with ``a =`` :data:`CUBIC_A` at offset ``t``."""
    t, a = abs(t), CUBIC_A
    if t <= 1:
        return ((a + 2) * t - (a + 3)) * t * t + 1
    if t < 2:
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return 0.0


def bicubic_x2_taps() -> torch.Tensor:
    """``(2, 5)``: the 1-D weights of the two output phases of a x2 bicubic upsample
    (half-pixel centres), over input offsets -2..2.

    Output pixel ``2i + p`` sits at input coordinate ``i - 0.25`` (``p = 0``) or
    ``i + 0.25`` (``p = 1``); each phase uses four of the five taps.
    """
    taps = torch.zeros(2, 5, dtype=torch.float64)
    for phase, centre in ((0, -0.25), (1, 0.25)):
        for k, offset in enumerate(range(-2, 3)):
            taps[phase, k] = cubic(offset - centre)
    return taps


class ResidualStudent(nn.Module):
    """A residual sharpener that works on the detail layer at half resolution.

    ``x -> detail layer (x - 3x3 mean) -> pixel-unshuffle x2 (12 ch) -> 3x3 conv 12->width,
    LeakyReLU -> depth x (3x3 conv width->width, LeakyReLU) -> 3x3 conv width->12 ->
    pixel-shuffle x2 -> + x``; no convolution has a bias.

    The unshuffle is lossless (it only rearranges pixels), so the net sees every input
    pixel while its convolutions run on a quarter of the positions: four times the
    receptive field per multiply-add. The last convolution starts at zero, so an untrained
    student is exactly the identity and training only has to learn the correction.

    Why the detail layer and no biases: about a third of the pixels of a degraded photo
    equal the ground truth exactly (flat areas), and the seed's L1 loss charges every
    correction there at full rate. A conventional net (ReLU, biases, raw input) cannot
    leave flat areas alone early in training, so L1 pulls it back to the identity and
    its units die: it stayed at +0.00 dB after 15 epochs here. Fed the detail layer,
    which is zero on flat areas, a bias-free net with leaky ReLUs (zero in, zero out)
    leaves them untouched by construction, and L1's gradient is all about the edges.
    The correction then scales with local contrast, which is what sharpening needs.

    Cost per output pixel: ``9 * (12*w + depth*w*w + w*12) / 4`` multiply-adds for the
    convolutions plus 27 for the detail layer's mean (width 32, depth 4: 10.9k; the seed
    student needs 57.0k).

    Args:
        width: feature channels.
        depth: number of width->width convolutions.

    Shape:
        - Input: ``(N, 3, H, W)``, H and W even.
        - Output: ``(N, 3, H, W)``; not clamped (the exported ensemble clamps).

    Example:
        >>> s = ResidualStudent()
        >>> x = torch.rand(1, 3, 16, 16)
        >>> bool(torch.equal(s(x), x))
        True
    """

    scale = 1
    multiple = 2

    def __init__(self, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        self.width = width
        self.depth = depth
        self.detail = DetailLayer()
        layers: list[nn.Module] = [nn.Conv2d(12, width, 3, padding=1, bias=False), _act()]
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), _act()]
        tail = nn.Conv2d(width, 12, 3, padding=1, bias=False)
        nn.init.zeros_(tail.weight)
        layers.append(tail)
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        detail = nn.functional.pixel_unshuffle(self.detail(x), 2)
        return x + nn.functional.pixel_shuffle(self.body(detail), 2)


class ZeroSumConv2d(nn.Conv2d):
    """A bias-free convolution whose kernels each sum to zero over their taps.

    The weight used is ``weight - its mean over (kh, kw)``, so a constant input (per
    channel) gives exactly zero: the job the residual student's detail layer does, folded
    into the first convolution. :meth:`fuse` stores the zero-sum weight once, after which
    the forward is a plain convolution (the same numbers). The ONNX exporter folds the
    subtraction into a constant either way, so an export needs no :meth:`fuse`.
    """

    fused: bool = False

    def effective_weight(self) -> torch.Tensor:
        if self.fused:
            return self.weight
        return self.weight - self.weight.mean(dim=(2, 3), keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.effective_weight(), None, self.stride, self.padding)

    @torch.no_grad()
    def fuse(self) -> None:
        self.weight.copy_(self.effective_weight())
        self.fused = True


def bicubic_window(unshuffle: int) -> tuple[int, int]:
    """``(kernel side, pad)`` of the x2 bicubic phase convolution at stride ``unshuffle``:
    ``(3u, u)``, the window of :class:`StridedStudent`'s first layer, or ``(5, 2)`` when
    ``u = 1`` (bicubic reads 2 pixels either side, more than a 3x3 window holds)."""
    return (3 * unshuffle, unshuffle) if unshuffle >= 2 else (5, 2)


def bicubic_phase_kernel(unshuffle: int) -> torch.Tensor:
    """``(3 * (2u)², 3, k, k)``: a x2 bicubic upsample as a stride-u convolution.

    Reads the input padded by ``p`` with a ``k x k`` window at stride ``u``
    (:func:`bicubic_window`: for ``u >= 2`` the same window as :class:`StridedStudent`'s
    first layer) and writes the ``(2u)²`` output phases of each channel in pixel-shuffle
    order, so ``pixel_shuffle(conv(pad(x, p)), 2u)`` is the bicubic x2 of ``x``.
    """
    taps = bicubic_x2_taps()
    u, r = unshuffle, 2 * unshuffle
    side, pad = bicubic_window(u)
    kernel = torch.zeros(3 * r * r, 3, side, side, dtype=torch.float64)
    for c in range(3):
        for py in range(r):
            for px in range(r):
                out = c * r * r + py * r + px
                for ky in range(side):
                    oy = ky - pad - py // 2 + 2  # tap index -2..2 -> 0..4
                    for kx in range(side):
                        ox = kx - pad - px // 2 + 2
                        if 0 <= oy < 5 and 0 <= ox < 5:
                            kernel[out, c, ky, kx] = taps[py % 2, oy] * taps[px % 2, ox]
    return kernel.float()


class FixedConv(nn.Module):
    """A convolution with a fixed kernel (a non-persistent buffer: not trained, not
    stored in checkpoints), counted by :func:`macs_per_pixel` like any convolution."""

    def __init__(self, kernel: torch.Tensor, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.register_buffer("kernel", kernel, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.kernel, stride=self.stride)

    def multiply_adds(self, out: torch.Tensor) -> int:
        _, cin, kh, kw = self.kernel.shape
        return out.numel() * cin * kh * kw


class StridedStudent(nn.Module):
    """The residual student rebuilt for speed: the same idea, fewer passes over the frame.

    ``x -> edge-replicate pad u -> conv 3u x 3u, stride u, 3->width, kernels summing to
    zero (ZeroSumConv2d), LeakyReLU -> depth x (3x3 conv width->width, LeakyReLU) ->
    3x3 conv width->3(us)² -> pixel-shuffle x(us) -> + base``, with ``base = x``
    (``scale=1``, ``restore``) or, for ``scale=2`` (``x2``), a fixed bicubic x2 upsample
    whose phases are added before the shuffle (:func:`bicubic_phase_kernel`).

    A 3u x 3u stride-u convolution is exactly a 3x3 convolution after a pixel-unshuffle
    by u, and its zero-sum kernels ignore flat areas exactly as the detail layer did
    (:class:`ResidualStudent`), border included thanks to the replicate pad. The graph
    then has no detail layer (pad, mean, subtraction) and no unshuffle (a transpose): on
    ONNX Runtime those cost about 40 % of a 2.6k-MAC student's time at 720p. No bias, leaky
    ReLUs, the last convolution starts at zero: an untrained student is the identity (or
    the bicubic upsample).

    Cost per output pixel: ``(27u²*w + 9*depth*w² + 9*w*3(us)²) / (us)²`` multiply-adds,
    plus ``81u²`` for the bicubic phases when ``s = 2`` (225 when ``u = 1``: a 5x5 window).

    ``u = 1`` with ``s = 2`` keeps every feature at the input's resolution, as FSRCNN/ESPCN
    do: the same multiply-adds buy a quarter of the width of ``u = 2`` but four times the
    positions.

    Args:
        width: feature channels.
        depth: number of width->width convolutions.
        unshuffle: the stride u of the first layer (1, 2 or 4).
        scale: 1 (same size out) or 2 (twice the size out).

    Attributes:
        scale: output size / input size.
        multiple: input H and W must be multiples of this (``unshuffle``; the runtime pads
            to 8).

    Shape:
        - Input: ``(N, 3, H, W)``, H and W multiples of :attr:`multiple`.
        - Output: ``(N, 3, scale*H, scale*W)``; not clamped (the exported ensemble clamps).
    """

    def __init__(self, width: int = 16, depth: int = 3, unshuffle: int = 2, scale: int = 1) -> None:
        super().__init__()
        if unshuffle not in (1, 2, 4) or scale not in (1, 2):
            raise ValueError(
                f"unshuffle must be 1, 2 or 4 and scale 1 or 2, "
                f"got unshuffle {unshuffle}, scale {scale}"
            )
        self.width, self.depth, self.unshuffle, self.scale = width, depth, unshuffle, scale
        self.multiple = unshuffle
        u, r = unshuffle, unshuffle * scale
        self.head = ZeroSumConv2d(3, width, 3 * u, stride=u, bias=False)
        layers: list[nn.Module] = [_act()]
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), _act()]
        tail = nn.Conv2d(width, 3 * r * r, 3, padding=1, bias=False)
        nn.init.zeros_(tail.weight)
        layers.append(tail)
        self.body = nn.Sequential(*layers)
        self.upsample = FixedConv(bicubic_phase_kernel(u), stride=u) if scale == 2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.unshuffle
        if self.upsample is not None and u == 1:  # bicubic needs a 5x5 window, the head 3x3
            padded = nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
            phases = self.body(self.head(padded[..., 1:-1, 1:-1])) + self.upsample(padded)
        else:
            padded = nn.functional.pad(x, (u, u, u, u), mode="replicate")
            phases = self.body(self.head(padded))
            if self.upsample is not None:
                phases = phases + self.upsample(padded)
        r = u * self.scale
        out = nn.functional.pixel_shuffle(phases, r) if r > 1 else phases
        return out if self.upsample is not None else x + out

    def fuse(self) -> StridedStudent:
        """Store the first layer's zero-sum weights once (see :class:`ZeroSumConv2d`)."""
        self.head.fuse()
        return self


class FastStudent(StridedStudent):
    """The ``fast`` tier's restore student, run alone: width 16, depth 3, stride 2
    (2.6k multiply-adds per output pixel)."""

    def __init__(self, width: int = 16, depth: int = 3, unshuffle: int = 2) -> None:
        super().__init__(width, depth, unshuffle, scale=1)


class ResidualX2Student(StridedStudent):
    """The ``quality`` tier's x2 student (two are averaged): bicubic x2 plus a learned
    residual, width 64, depth 2, stride 2 (7.1k multiply-adds per output pixel).

    Wide and shallow because that learned fastest in the design's short runs: at the same
    7.1k MACs/px, width 48 depth 4 gained less than half as much over bicubic."""

    def __init__(self, width: int = 64, depth: int = 2, unshuffle: int = 2) -> None:
        super().__init__(width, depth, unshuffle, scale=2)


class FastX2Student(StridedStudent):
    """The ``fast`` tier's x2 student, run alone: bicubic x2 plus a learned residual, width
    32, depth 2, stride 2 (2.6k multiply-adds per output pixel, 324 of them the bicubic).

    Stride 1 (width 16, depth 3, 2.5k) learned more in the design's short runs on photos
    (``training.design_learn``, 3,000 steps: +0.48 dB over bicubic against +0.41), but
    distilled from the x2 quality tier with the same recipe (8 epochs, call:0.8,seed:0.2,
    the training clips) it gained less on the call clips (H.264 +0.36 dB against +0.53, VP8
    +0.18 against +0.36, seed blur -0.08 against +0.40) and on the test photos (-0.05 against
    +0.05), so the fast tier stays at stride 2."""

    def __init__(self, width: int = 32, depth: int = 2, unshuffle: int = 2) -> None:
        super().__init__(width, depth, unshuffle, scale=2)


def _act() -> nn.Module:
    return nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)


#: ``--student`` name -> class.
STUDENTS: dict[str, type[nn.Module]] = {
    "seed": SeedStudent,
    "residual": ResidualStudent,
    "fast": FastStudent,
    "residual-x2": ResidualX2Student,
    "fast-x2": FastX2Student,
}


def build_student(name: str, **kwargs: int) -> nn.Module:
    """Instantiate a student by its ``--student`` name.

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    try:
        cls = STUDENTS[name]
    except KeyError:
        raise KeyError(f"unknown student {name!r}: choose one of {', '.join(STUDENTS)}") from None
    return cls(**kwargs)


def student_kwargs(model: nn.Module) -> dict[str, int]:
    """The constructor arguments that rebuild ``model`` (stored in checkpoints)."""
    if isinstance(model, ResidualStudent):
        return {"width": model.width, "depth": model.depth}
    if isinstance(model, StridedStudent):
        return {"width": model.width, "depth": model.depth, "unshuffle": model.unshuffle}
    return {}


class Ensemble(nn.Module):
    """The mean of several students, clamped to ``[0, 1]``: the exported graph.

    One student is allowed (the ``fast`` tiers): then the graph is that student, clamped.

    Attributes:
        scale: the students' common scale (1 or 2).
        multiple: input H and W must be multiples of this (the largest of the students').

    Shape:
        - Input: ``(N, 3, H, W)``.
        - Output: ``(N, 3, scale*H, scale*W)`` in ``[0, 1]``.
    """

    def __init__(self, students: list[nn.Module]) -> None:
        super().__init__()
        if not students:
            raise ValueError("an ensemble needs at least one student")
        scales = {int(getattr(s, "scale", 1)) for s in students}
        if len(scales) != 1:
            raise ValueError(f"students of an ensemble must share one scale, got {sorted(scales)}")
        self.students = nn.ModuleList(students)
        self.scale = scales.pop()
        self.multiple = max(int(getattr(s, "multiple", 1)) for s in students)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.students[0](x)
        for student in self.students[1:]:
            total = total + student(x)
        if len(self.students) > 1:
            total = total / len(self.students)
        return torch.clamp(total, 0.0, 1.0)

    def fuse(self) -> Ensemble:
        """Fuse every student that can be (:meth:`StridedStudent.fuse`); optional."""
        for student in self.students:
            if isinstance(student, StridedStudent):
                student.fuse()
        return self


def macs_per_pixel(model: nn.Module, size: int = 64) -> float:
    """Multiply-adds per OUTPUT pixel of ``model``, counted with hooks on a ``size`` square.

    Counts every convolution (``in/groups * kh * kw`` per output value) and every module
    with a ``multiply_adds(output) -> int`` method (the detail layer's 3x3 mean, the fixed
    bicubic upsample); element-wise additions, activations and shuffles are not counted.
    """
    total = 0

    def hook(module: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += out.numel() * (module.in_channels // module.groups) * kh * kw
        else:
            total += module.multiply_adds(out)  # type: ignore[operator]

    counted = [
        m for m in model.modules() if isinstance(m, nn.Conv2d) or hasattr(m, "multiply_adds")
    ]
    handles = [m.register_forward_hook(hook) for m in counted]
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    return total / (out.shape[-2] * out.shape[-1])


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
