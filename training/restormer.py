"""Restormer (Zamir et al., CVPR 2022), the frozen teacher, written from the paper.

The network is a 4-level U-shaped encoder/decoder of transformer blocks:

* a transformer block is ``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))``;
* MDTA (multi-Dconv head transposed attention) makes q, k, v with a 1x1 conv followed by
  a 3x3 depthwise conv, L2-normalises q and k along the pixels and attends across
  *channels* (a ``C/heads x C/heads`` map per head, scaled by a learnable temperature per
  head), so its cost is linear in the number of pixels;
* GDFN (gated-Dconv feed-forward) expands to ``2 * int(dim * ffn_expansion_factor)``
  channels with a 1x1 conv, runs a 3x3 depthwise conv, splits in two and gates one half
  with GELU of the other, then projects back with a 1x1 conv;
* LayerNorm normalises each pixel over its channels (``WithBias``: with mean and bias,
  ``BiasFree``: scale only, as in the official code);
* levels are joined by pixel-unshuffle (down: 3x3 conv to C/2, then 2x2 -> channels) and
  pixel-shuffle (up: 3x3 conv to 2C, then channels -> 2x2); decoder levels 3 and 2 reduce
  the skip concatenation with a 1x1 conv, level 1 keeps the 2C channels; refinement
  blocks follow, then a 3x3 output conv and the global input residual.

Attribute names follow the official implementation exactly, so the official release
checkpoints' state dicts (``{"params": state_dict}``) load with ``strict=True``. The
dual-pixel variant (6 input channels, ``skip_conv``) is not implemented: sharpcam only
uses the single-image defocus model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sharpcam.atomic import atomic_path

#: H and W of the input must be multiples of this (three 2x pixel-unshuffles).
MULTIPLE = 8

LayerNormType = Literal["WithBias", "BiasFree"]


@dataclass(frozen=True)
class RestormerConfig:
    """Hyper-parameters, named as in the official code.

    The defaults are those of the released single-image defocus deblurring model
    (``single_image_defocus_deblurring.pth``): 494 tensors, 26,126,644 parameters.

    Raises:
        ValueError: from ``__post_init__`` when the widths, heads or depths do not fit.
    """

    inp_channels: int = 3
    out_channels: int = 3
    dim: int = 48
    num_blocks: tuple[int, int, int, int] = (4, 6, 6, 8)
    num_refinement_blocks: int = 4
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    ffn_expansion_factor: float = 2.66
    bias: bool = False
    layernorm_type: LayerNormType = "WithBias"

    def __post_init__(self) -> None:
        if len(self.num_blocks) != 4 or len(self.heads) != 4:
            raise ValueError("num_blocks and heads need 4 entries, one per level")
        if self.dim < 2 or self.dim % 2:
            raise ValueError(f"dim must be even and >= 2 (down-sampling halves it), got {self.dim}")
        for level, heads in enumerate(self.heads):
            width = self.dim * 2**level
            if heads < 1 or width % heads:
                raise ValueError(
                    f"level {level + 1}: {width} channels cannot split into {heads} heads"
                )
        if min(self.num_blocks) < 1 or self.num_refinement_blocks < 0:
            raise ValueError("each level needs at least one block")
        if self.layernorm_type not in ("WithBias", "BiasFree"):
            raise ValueError(
                f"layernorm_type must be 'WithBias' or 'BiasFree', got {self.layernorm_type!r}"
            )


#: The configuration of the released single-image defocus deblurring checkpoint.
DEFOCUS_CONFIG = RestormerConfig()


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each pixel of a ``[N, C, H, W]`` map.

    The parameters live in ``self.body`` (``body.weight``, ``body.bias``) as in the official
    checkpoints; ``BiasFree`` has no bias and does not subtract the mean in the output
    (the variance is still taken around the mean), exactly like the official code.
    """

    def __init__(self, channels: int, kind: LayerNormType) -> None:
        super().__init__()
        self.body = _LayerNormParams(channels, with_bias=kind == "WithBias")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, keepdim=True, correction=0)
        scale = torch.rsqrt(var + 1e-5)
        weight = self.body.weight.view(1, -1, 1, 1)
        if self.body.bias is None:
            return x * scale * weight
        return (x - mean) * scale * weight + self.body.bias.view(1, -1, 1, 1)


class _LayerNormParams(nn.Module):
    """Holds the LayerNorm's affine parameters under the official names."""

    def __init__(self, channels: int, *, with_bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if with_bias else None


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention: attention across channels, per head.

    Shape:
        ``[N, C, H, W] -> [N, C, H, W]``.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(
            dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias
        )
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        # [N, heads, C/heads, H*W]: each head attends over its channels, pixels are features.
        q, k, v = (t.reshape(n, self.num_heads, c // self.num_heads, h * w) for t in (q, k, v))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        out = attn.softmax(dim=-1) @ v
        return self.project_out(out.reshape(n, c, h, w))


class GDFN(nn.Module):
    """Gated-Dconv feed-forward network.

    Shape:
        ``[N, C, H, W] -> [N, C, H, W]``.
    """

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(
            hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias
        )
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class TransformerBlock(nn.Module):
    """Pre-norm residual block: ``x + MDTA(LN(x))``, then ``x + GDFN(LN(x))``."""

    def __init__(self, dim: int, num_heads: int, config: RestormerConfig) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(dim, config.layernorm_type)
        self.attn = MDTA(dim, num_heads, config.bias)
        self.norm2 = ChannelLayerNorm(dim, config.layernorm_type)
        self.ffn = GDFN(dim, config.ffn_expansion_factor, config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class PatchEmbed(nn.Module):
    """3x3 conv from the image to ``dim`` features (``patch_embed.proj``; never a bias)."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """``[N, C, H, W] -> [N, 2C, H/2, W/2]``: 3x3 conv to C/2, then pixel-unshuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=3, padding=1, bias=False),
            nn.PixelUnshuffle(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """``[N, C, H, W] -> [N, C/2, 2H, 2W]``: 3x3 conv to 2C, then pixel-shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels * 2, kernel_size=3, padding=1, bias=False),
            nn.PixelShuffle(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _stage(dim: int, heads: int, depth: int, config: RestormerConfig) -> nn.Sequential:
    return nn.Sequential(*(TransformerBlock(dim, heads, config) for _ in range(depth)))


class Restormer(nn.Module):
    """Restormer image-to-image network (single-image variant, global input residual).

    Args:
        config: hyper-parameters; the default is the released defocus model's.

    Shape:
        - Input: ``[N, inp_channels, H, W]`` float, H and W multiples of :data:`MULTIPLE`
          (the :class:`training.teacher.Teacher` wrapper pads and crops for you).
        - Output: ``[N, out_channels, H, W]``, not clamped.

    Raises:
        ValueError: in ``forward`` when H or W is not a multiple of :data:`MULTIPLE`.

    >>> net = Restormer(RestormerConfig(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1))
    >>> net(torch.rand(2, 3, 16, 24)).shape
    torch.Size([2, 3, 16, 24])
    """

    def __init__(self, config: RestormerConfig = DEFOCUS_CONFIG) -> None:
        super().__init__()
        self.config = config
        c, d = config, config.dim
        if c.inp_channels != c.out_channels:
            raise ValueError("the global residual needs inp_channels == out_channels")
        self.patch_embed = PatchEmbed(c.inp_channels, d)
        self.encoder_level1 = _stage(d, c.heads[0], c.num_blocks[0], c)
        self.down1_2 = Downsample(d)
        self.encoder_level2 = _stage(d * 2, c.heads[1], c.num_blocks[1], c)
        self.down2_3 = Downsample(d * 2)
        self.encoder_level3 = _stage(d * 4, c.heads[2], c.num_blocks[2], c)
        self.down3_4 = Downsample(d * 4)
        self.latent = _stage(d * 8, c.heads[3], c.num_blocks[3], c)
        self.up4_3 = Upsample(d * 8)
        self.reduce_chan_level3 = nn.Conv2d(d * 8, d * 4, kernel_size=1, bias=c.bias)
        self.decoder_level3 = _stage(d * 4, c.heads[2], c.num_blocks[2], c)
        self.up3_2 = Upsample(d * 4)
        self.reduce_chan_level2 = nn.Conv2d(d * 4, d * 2, kernel_size=1, bias=c.bias)
        self.decoder_level2 = _stage(d * 2, c.heads[1], c.num_blocks[1], c)
        self.up2_1 = Upsample(d * 2)
        # Level 1 keeps the 2*dim channels of the skip concatenation (no 1x1 reduction).
        self.decoder_level1 = _stage(d * 2, c.heads[0], c.num_blocks[0], c)
        self.refinement = _stage(d * 2, c.heads[0], c.num_refinement_blocks, c)
        self.output = nn.Conv2d(d * 2, c.out_channels, kernel_size=3, padding=1, bias=c.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        if h % MULTIPLE or w % MULTIPLE:
            raise ValueError(
                f"Restormer needs H and W multiples of {MULTIPLE}, got {h}x{w}: "
                "pad the input (training.teacher.Teacher does it)"
            )
        enc1 = self.encoder_level1(self.patch_embed(image))
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        latent = self.latent(self.down3_4(enc3))
        dec3 = self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], dim=1))
        dec3 = self.decoder_level3(dec3)
        dec2 = self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], dim=1))
        dec2 = self.decoder_level2(dec2)
        dec1 = self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], dim=1))
        return self.output(self.refinement(dec1)) + image


def save_random_checkpoint(
    path: str | os.PathLike[str], config: RestormerConfig = DEFOCUS_CONFIG, *, seed: int = 0
) -> Path:
    """Save a randomly initialised Restormer in the official format ``{"params": state_dict}``.

    A stand-in for the real checkpoint in tests (same layout, same loader path). Every
    tensor is random, LayerNorm scales and temperatures included (they are slightly
    perturbed from 1/0), so a round trip shows that each one was really loaded.
    **Never use it as a teacher for training**: its outputs are noise.

    The file is written atomically; the caller's torch RNG state is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Restormer(config)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(("temperature", "body.weight", "body.bias")):
                    param.add_(0.05 * torch.randn_like(param))
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(final) as tmp:
        torch.save({"params": model.state_dict()}, tmp)
    return final
