"""Student networks: small CNNs that learn to sharpen like the teacher.

Every student maps ``[N, 3, H, W]`` RGB in ``[0, 1]`` to the same shape; H and W must be
even (the runtime pads to multiples of 8). :data:`STUDENTS` maps the ``--student`` names
to classes with plain entries a search can follow.

* :class:`SeedStudent` is the seed write-up's 9-layer encoder-decoder, exactly.
* :class:`ResidualStudent` (the default) predicts a correction added to its input, works at
  half resolution after a pixel-unshuffle, and starts as the identity.
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


#: Slope of the residual student's leaky ReLUs below zero.
NEGATIVE_SLOPE = 0.1


def detail_layer(x: torch.Tensor) -> torch.Tensor:
    """``x`` minus its 3x3 local mean (edge-replicated border): zero wherever ``x`` is flat.

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: ``(N, C, H, W)``.
    """
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    return x - nn.functional.avg_pool2d(padded, 3, stride=1)


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

    Cost per output pixel: ``9 * (12*w + depth*w*w + w*12) / 4`` multiply-adds
    (width 32, depth 4: 10.9k; the seed student needs 57.0k).

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

    def __init__(self, width: int = 32, depth: int = 4) -> None:
        super().__init__()
        self.width = width
        self.depth = depth
        layers: list[nn.Module] = [nn.Conv2d(12, width, 3, padding=1, bias=False), _act()]
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), _act()]
        tail = nn.Conv2d(width, 12, 3, padding=1, bias=False)
        nn.init.zeros_(tail.weight)
        layers.append(tail)
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        detail = nn.functional.pixel_unshuffle(detail_layer(x), 2)
        return x + nn.functional.pixel_shuffle(self.body(detail), 2)


def _act() -> nn.Module:
    return nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)


#: ``--student`` name -> class.
STUDENTS: dict[str, type[nn.Module]] = {
    "seed": SeedStudent,
    "residual": ResidualStudent,
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
    return {}


class Ensemble(nn.Module):
    """The mean of several students, clamped to ``[0, 1]``: the exported graph.

    Shape:
        - Input: ``(N, 3, H, W)``.
        - Output: ``(N, 3, H, W)`` in ``[0, 1]``.
    """

    def __init__(self, students: list[nn.Module]) -> None:
        super().__init__()
        if not students:
            raise ValueError("an ensemble needs at least one student")
        self.students = nn.ModuleList(students)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.students[0](x)
        for student in self.students[1:]:
            total = total + student(x)
        return torch.clamp(total / len(self.students), 0.0, 1.0)


def macs_per_pixel(model: nn.Module, size: int = 64) -> float:
    """Multiply-adds per output pixel of ``model``'s convolutions, counted with hooks."""
    total = 0

    def hook(module: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        kh, kw = module.kernel_size
        total += out.numel() * (module.in_channels // module.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    return total / (size * size)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
