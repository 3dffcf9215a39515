"""Restormer: the official checkpoint layout, and the blocks behaving as the paper says."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from training.restormer import (
    DEFOCUS_CONFIG,
    MDTA,
    ChannelLayerNorm,
    Restormer,
    RestormerConfig,
    save_random_checkpoint,
)

SMALL = RestormerConfig(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    """The default (release-sized) model's state dict, built once."""
    return Restormer().state_dict()


class TestOfficialLayout:
    """The default configuration must match ``single_image_defocus_deblurring.pth``."""

    def test_defaults_are_the_release_configuration(self) -> None:
        c = DEFOCUS_CONFIG
        assert (c.inp_channels, c.out_channels, c.dim) == (3, 3, 48)
        assert c.num_blocks == (4, 6, 6, 8) and c.num_refinement_blocks == 4
        assert c.heads == (1, 2, 4, 8) and c.ffn_expansion_factor == 2.66
        assert c.bias is False and c.layernorm_type == "WithBias"

    def test_tensor_and_parameter_counts(self, state: dict[str, torch.Tensor]) -> None:
        assert len(state) == 494
        assert sum(t.numel() for t in state.values()) == 26_126_644

    @pytest.mark.parametrize(
        ("name", "shape"),
        [
            ("patch_embed.proj.weight", [48, 3, 3, 3]),
            ("encoder_level1.0.norm1.body.weight", [48]),
            ("encoder_level1.0.norm1.body.bias", [48]),
            ("encoder_level1.0.attn.temperature", [1, 1, 1]),
            ("encoder_level1.0.attn.qkv.weight", [144, 48, 1, 1]),
            ("encoder_level1.0.attn.qkv_dwconv.weight", [144, 1, 3, 3]),
            ("encoder_level1.0.attn.project_out.weight", [48, 48, 1, 1]),
            # hidden = int(48 * 2.66) = 127; project_in makes 2 * 127 channels
            ("encoder_level1.0.ffn.project_in.weight", [254, 48, 1, 1]),
            ("encoder_level1.0.ffn.dwconv.weight", [254, 1, 3, 3]),
            ("encoder_level1.0.ffn.project_out.weight", [48, 127, 1, 1]),
            ("down1_2.body.0.weight", [24, 48, 3, 3]),
            ("encoder_level2.5.attn.temperature", [2, 1, 1]),
            ("latent.7.attn.temperature", [8, 1, 1]),
            ("latent.7.ffn.project_in.weight", [2042, 384, 1, 1]),
            ("up4_3.body.0.weight", [768, 384, 3, 3]),
            ("reduce_chan_level3.weight", [192, 384, 1, 1]),
            ("reduce_chan_level2.weight", [96, 192, 1, 1]),
            ("up2_1.body.0.weight", [192, 96, 3, 3]),
            ("decoder_level1.3.attn.qkv.weight", [288, 96, 1, 1]),
            ("refinement.3.ffn.project_out.weight", [96, 255, 1, 1]),
            ("output.weight", [3, 96, 3, 3]),
        ],
    )
    def test_official_names_and_shapes(
        self, state: dict[str, torch.Tensor], name: str, shape: list[int]
    ) -> None:
        assert list(state[name].shape) == shape

    def test_no_bias_where_the_release_has_none(self, state: dict[str, torch.Tensor]) -> None:
        biases = [k for k in state if k.endswith(".bias")]
        assert biases and all(".norm" in k for k in biases)
        assert "reduce_chan_level1.weight" not in state  # level 1 keeps the concatenation


class TestForward:
    def test_shape_and_residual(self) -> None:
        torch.manual_seed(0)
        net = Restormer(SMALL).eval()
        x = torch.rand(2, 3, 24, 40)
        y = net(x)
        assert y.shape == x.shape and y.dtype == torch.float32
        with torch.no_grad():
            net.output.weight.zero_()
        # With the output conv zeroed only the global input residual is left.
        assert torch.equal(net(x), x)

    def test_batch_items_are_independent(self) -> None:
        torch.manual_seed(1)
        net = Restormer(SMALL).eval()
        x = torch.rand(3, 3, 16, 16)
        with torch.no_grad():
            together = net(x)
            alone = net(x[1:2])
        torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=1e-5)

    def test_gradients_reach_every_parameter(self) -> None:
        torch.manual_seed(2)
        net = Restormer(SMALL)
        net(torch.rand(1, 3, 16, 16)).square().mean().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())

    def test_rejects_sizes_that_are_not_multiples_of_8(self) -> None:
        with pytest.raises(ValueError, match="multiples of 8, got 20x16"):
            Restormer(SMALL)(torch.rand(1, 3, 20, 16))

    def test_bias_free_variant_has_no_norm_bias(self) -> None:
        config = RestormerConfig(
            dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=0, layernorm_type="BiasFree"
        )
        net = Restormer(config)
        assert not any(k.endswith("norm1.body.bias") for k in net.state_dict())
        assert net(torch.rand(1, 3, 8, 8)).shape == (1, 3, 8, 8)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"dim": 7}, "dim must be even"),
            ({"dim": 6, "heads": (4, 1, 1, 1)}, "6 channels cannot split into 4 heads"),
            ({"num_blocks": (1, 0, 1, 1)}, "at least one block"),
            ({"layernorm_type": "Other"}, "layernorm_type"),
        ],
    )
    def test_config_errors(self, kwargs: dict[str, object], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            RestormerConfig(**kwargs)  # type: ignore[arg-type]


class TestBlocks:
    def test_with_bias_layernorm_is_layernorm_over_channels(self) -> None:
        norm = ChannelLayerNorm(6, "WithBias")
        with torch.no_grad():
            norm.body.weight.copy_(torch.linspace(0.5, 2.0, 6))
            norm.body.bias.copy_(torch.linspace(-1.0, 1.0, 6))
        x = torch.randn(2, 6, 5, 7) * 3 + 1
        expected = F.layer_norm(
            x.permute(0, 2, 3, 1), (6,), norm.body.weight, norm.body.bias, eps=1e-5
        ).permute(0, 3, 1, 2)
        torch.testing.assert_close(norm(x), expected)

    def test_bias_free_layernorm_scales_without_centring(self) -> None:
        norm = ChannelLayerNorm(4, "BiasFree")
        x = torch.randn(1, 4, 3, 3) + 2.0
        var = x.var(dim=1, unbiased=False, keepdim=True)
        torch.testing.assert_close(norm(x), x / torch.sqrt(var + 1e-5))

    def test_mdta_is_channel_attention_per_head(self) -> None:
        torch.manual_seed(3)
        attn = MDTA(dim=8, num_heads=2, bias=False)
        with torch.no_grad():
            attn.temperature.copy_(torch.tensor([0.5, 2.0]).view(2, 1, 1))
        x = torch.randn(1, 8, 4, 5)
        q, k, v = attn.qkv_dwconv(attn.qkv(x)).chunk(3, dim=1)
        heads = []
        for h in range(2):  # written out per head, as the paper describes it
            qh, kh, vh = (t[0, 4 * h : 4 * h + 4].reshape(4, 20) for t in (q, k, v))
            qh = qh / qh.norm(dim=1, keepdim=True)
            kh = kh / kh.norm(dim=1, keepdim=True)
            weights = torch.softmax(qh @ kh.T * attn.temperature[h, 0, 0], dim=1)  # 4x4
            heads.append(weights @ vh)
        expected = attn.project_out(torch.cat(heads).reshape(1, 8, 4, 5))
        torch.testing.assert_close(attn(x), expected)


class TestRandomCheckpoint:
    def test_official_format_and_seeded(self, tmp_path) -> None:
        before = torch.random.get_rng_state()
        a = save_random_checkpoint(tmp_path / "a.pth", SMALL, seed=5)
        b = save_random_checkpoint(tmp_path / "b.pth", SMALL, seed=5)
        c = save_random_checkpoint(tmp_path / "c.pth", SMALL, seed=6)
        assert torch.equal(torch.random.get_rng_state(), before)
        sa, sb, sc = (torch.load(p, weights_only=True) for p in (a, b, c))
        assert set(sa) == {"params"}
        assert list(sa["params"]) == list(Restormer(SMALL).state_dict())
        assert all(torch.equal(sa["params"][k], sb["params"][k]) for k in sa["params"])
        # every tensor is random, LayerNorm scales and temperatures included
        assert all(not torch.equal(sa["params"][k], sc["params"][k]) for k in sa["params"])
        assert not list(tmp_path.glob(".*"))  # no temporary files left

    def test_loads_strictly_into_a_fresh_model(self, tmp_path) -> None:
        path = save_random_checkpoint(tmp_path / "r.pth", SMALL, seed=7)
        params = torch.load(path, weights_only=True)["params"]
        net = Restormer(SMALL)
        net.load_state_dict(params, strict=True)
        assert all(torch.equal(net.state_dict()[k], v) for k, v in params.items())
