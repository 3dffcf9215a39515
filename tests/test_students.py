"""Students: shapes, ranges, identity start, cost, the ensemble (kornia-style per operator)."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch.nn import functional as F

from sharpcam.contract import INPUT_NAME, OUTPUT_NAME
from training.onnx_io import export_model
from training.students import (
    STUDENTS,
    Ensemble,
    ResidualStudent,
    SeedStudent,
    StridedStudent,
    bicubic_phase_kernel,
    bicubic_window,
    bicubic_x2_taps,
    build_student,
    count_parameters,
    macs_per_pixel,
    student_kwargs,
)

#: The tiers' budget: multiply-adds per output pixel of one fast student.
FAST_BUDGET = 3_000
#: name -> scale of the registered students.
SCALES = {"seed": 1, "residual": 1, "fast": 1, "residual-x2": 2, "fast-x2": 2}


def randomise(model: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    """``model`` with random weights everywhere (the residual tails start at zero)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, std)
    return model.eval()


@pytest.mark.parametrize("name", sorted(STUDENTS))
class TestEveryStudent:
    def test_shape_and_batch(self, name: str) -> None:
        model = build_student(name).eval()
        x = torch.rand(3, 3, 24, 40)
        y = model(x)
        assert y.shape == (3, 3, 24 * model.scale, 40 * model.scale)
        assert torch.isfinite(y).all()

    @pytest.mark.parametrize("odd", [(3, 5), (7, 1)])
    def test_odd_multiples_of_its_multiple(self, name: str, odd: tuple[int, int]) -> None:
        model = randomise(build_student(name))
        h, w = odd[0] * model.multiple, odd[1] * model.multiple
        assert model(torch.rand(1, 3, h, w)).shape == (1, 3, h * model.scale, w * model.scale)

    def test_scale_attribute(self, name: str) -> None:
        model = build_student(name)
        assert model.scale == SCALES[name]
        assert 8 % model.multiple == 0  # the runtime's padding to 8 is enough

    def test_gradients_reach_every_parameter(self, name: str) -> None:
        model = build_student(name)
        with torch.no_grad():  # the residual tail starts at zero: perturb so all get grads
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        model(torch.rand(1, 3, 16, 16)).mean().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    def test_rebuild_from_kwargs(self, name: str) -> None:
        model = build_student(name)
        again = build_student(name, **student_kwargs(model))
        again.load_state_dict(model.state_dict())
        x = torch.rand(1, 3, 16, 16)
        assert torch.equal(model.eval()(x), again.eval()(x))

    def test_no_costlier_than_the_seed(self, name: str) -> None:
        assert macs_per_pixel(build_student(name)) <= macs_per_pixel(SeedStudent())


class TestSeedStudent:
    def test_matches_the_write_up(self) -> None:
        model = SeedStudent()
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert [(c.in_channels, c.out_channels) for c in convs] == [
            (3, 32), (32, 64), (64, 64), (64, 64), (64, 32), (32, 3)
        ]  # fmt: skip
        assert count_parameters(model) == 112_579
        assert macs_per_pixel(model) == pytest.approx(57_024)

    def test_output_in_unit_range(self) -> None:
        y = SeedStudent()(torch.rand(1, 3, 16, 16) * 10 - 5)
        assert y.min() >= 0 and y.max() <= 1


class TestResidualStudent:
    def test_starts_as_identity(self) -> None:
        x = torch.rand(2, 3, 32, 48)
        assert torch.equal(ResidualStudent()(x), x)

    @pytest.mark.parametrize(("width", "depth"), [(32, 4), (48, 4), (64, 5)])
    def test_cost_formula(self, width: int, depth: int) -> None:
        model = ResidualStudent(width, depth)
        convs = 9 * (12 * width + depth * width * width + width * 12) / 4
        assert macs_per_pixel(model) == pytest.approx(convs + 27)  # + the detail layer's mean

    def test_default_cost(self) -> None:
        assert macs_per_pixel(ResidualStudent()) == pytest.approx(10_944 + 27)
        assert count_parameters(ResidualStudent()) == 43_776

    def test_shipped_checkpoint_layout_is_unchanged(self) -> None:
        # checkpoints of v1 load as before: same keys, no buffers stored
        keys = list(ResidualStudent().state_dict())
        assert keys == [f"body.{i}.weight" for i in (0, 2, 4, 6, 8, 10)]


class TestEnsemble:
    def test_mean_of_students_clamped(self) -> None:
        a, b = ResidualStudent(), ResidualStudent()
        with torch.no_grad():
            a.body[-1].weight.normal_(0, 0.5)
            b.body[-1].weight.normal_(0, 0.5)
        x = torch.rand(1, 3, 16, 16)
        expected = ((a(x) + b(x)) / 2).clamp(0, 1)
        assert torch.allclose(Ensemble([a, b])(x), expected)
        assert Ensemble([a, b])(x).max() <= 1

    def test_needs_a_student(self) -> None:
        with pytest.raises(ValueError):
            Ensemble([])


def test_unknown_student_name() -> None:
    with pytest.raises(KeyError, match="choose one of"):
        build_student("transformer")


class TestStridedStudent:
    @pytest.mark.parametrize(
        ("width", "depth", "unshuffle", "scale"),
        [
            (16, 3, 2, 1),
            (32, 2, 4, 1),
            (8, 1, 1, 1),
            (32, 3, 2, 2),
            (48, 4, 2, 2),
            (8, 0, 4, 2),
            (16, 3, 1, 2),
        ],
    )
    def test_cost_formula(self, width: int, depth: int, unshuffle: int, scale: int) -> None:
        model = StridedStudent(width, depth, unshuffle, scale)
        u2, r2 = unshuffle**2, (unshuffle * scale) ** 2
        convs = (27 * u2 * width + 9 * depth * width**2 + 9 * width * 3 * r2) / r2
        side = 3 * unshuffle if unshuffle > 1 else 5  # bicubic: a window of 2 pixels each side
        upsample = 9 * side**2 if scale == 2 else 0  # side² x 3 taps per phase, per output pixel
        assert macs_per_pixel(model) == pytest.approx(convs + upsample)

    @pytest.mark.parametrize("unshuffle", [1, 2, 4])
    def test_strided_head_is_unshuffle_then_3x3(self, unshuffle: int) -> None:
        model = randomise(StridedStudent(8, 0, unshuffle))
        conv = torch.nn.Conv2d(3 * unshuffle**2, 8, 3, padding=1, bias=False)
        with (
            torch.no_grad()
        ):  # same weights, rearranged: (o, c, u*ky+i, u*kx+j) -> (o, c*u²+i*u+j, ky, kx)
            w = model.head.effective_weight().reshape(8, 3, 3, unshuffle, 3, unshuffle)
            conv.weight.copy_(w.permute(0, 1, 3, 5, 2, 4).reshape(conv.weight.shape))
        x = torch.rand(1, 3, 8 * unshuffle, 4 * unshuffle)
        padded = F.pad(x, (unshuffle,) * 4, mode="replicate")
        cropped = padded[..., unshuffle:-unshuffle, unshuffle:-unshuffle]
        # inside the border the two agree exactly; at the border the replicate pad differs
        # from zero padding after the unshuffle, which is the point of padding first
        head = model.head(padded)[..., 1:-1, 1:-1]
        ref = conv(F.pixel_unshuffle(cropped, unshuffle))[..., 1:-1, 1:-1]
        torch.testing.assert_close(head, ref, rtol=0, atol=1e-5)

    @pytest.mark.parametrize("name", ["fast", "residual-x2", "fast-x2"])
    def test_flat_areas_are_left_alone_whatever_the_weights(self, name: str) -> None:
        model = randomise(build_student(name), std=0.1)  # gain ~1 per layer: rounding stays small
        flat = torch.full((1, 3, 16, 24), 0.3)
        flat[:, 1] = 0.7
        expected = F.interpolate(flat, scale_factor=model.scale)
        torch.testing.assert_close(model(flat), expected, rtol=0, atol=1e-4)
        textured = torch.rand(1, 3, 16, 24)
        assert not torch.allclose(
            model(textured), F.interpolate(textured, scale_factor=model.scale)
        )

    def test_fuse_keeps_the_output(self) -> None:
        model = randomise(build_student("fast-x2"))
        x = torch.rand(1, 3, 16, 24)
        before = model(x)
        model.fuse()
        assert model.head.fused
        torch.testing.assert_close(model(x), before, rtol=0, atol=1e-6)
        sums = model.head.weight.sum((2, 3))
        torch.testing.assert_close(sums, torch.zeros_like(sums), rtol=0, atol=1e-6)

    def test_bad_factors(self) -> None:
        with pytest.raises(ValueError, match="unshuffle"):
            StridedStudent(unshuffle=3)
        with pytest.raises(ValueError, match="scale"):
            StridedStudent(scale=4)

    def test_x2_at_full_input_resolution_starts_as_bicubic(self) -> None:
        x = torch.rand(1, 3, 14, 18)
        expected = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
        model = StridedStudent(8, 1, unshuffle=1, scale=2)
        torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)
        flat = torch.full((1, 3, 14, 18), 0.4)  # zero-sum head: flat stays flat, trained or not
        torch.testing.assert_close(
            randomise(model, std=0.1)(flat), F.interpolate(flat, scale_factor=2), rtol=0, atol=1e-4
        )


@pytest.mark.parametrize("name", ["residual-x2", "fast-x2"])
def test_x2_starts_as_the_bicubic_upsample(name: str) -> None:
    x = torch.rand(2, 3, 24, 40)
    expected = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    torch.testing.assert_close(build_student(name)(x), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["fast"])
def test_restore_starts_as_identity(name: str) -> None:
    x = torch.rand(2, 3, 24, 40)
    assert torch.equal(build_student(name)(x), x)


@pytest.mark.parametrize("unshuffle", [1, 2, 4])
def test_bicubic_phase_kernel_is_bicubic(unshuffle: int) -> None:
    x = torch.rand(1, 3, 8 * unshuffle, 4 * unshuffle)
    padded = F.pad(x, (bicubic_window(unshuffle)[1],) * 4, mode="replicate")
    phases = F.conv2d(padded, bicubic_phase_kernel(unshuffle), stride=unshuffle)
    expected = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    torch.testing.assert_close(F.pixel_shuffle(phases, 2 * unshuffle), expected, rtol=0, atol=1e-5)


class TestBicubic:
    def test_taps_sum_to_one_and_mirror(self) -> None:
        taps = bicubic_x2_taps()
        torch.testing.assert_close(taps.sum(1), torch.ones(2, dtype=torch.float64))
        torch.testing.assert_close(taps[0], taps[1].flip(0))

    def test_matches_opencv_inter_cubic(self) -> None:
        image = np.random.default_rng(0).random((14, 18, 3)).astype(np.float32)
        padded = F.pad(torch.from_numpy(image).permute(2, 0, 1)[None], (2,) * 4, mode="replicate")
        ours = F.pixel_shuffle(F.conv2d(padded, bicubic_phase_kernel(2), stride=2), 4)
        opencv = cv2.resize(image, (36, 28), interpolation=cv2.INTER_CUBIC)
        np.testing.assert_allclose(ours[0].permute(1, 2, 0).numpy(), opencv, atol=1e-4)

    def test_fixed_kernel_is_not_trained_nor_stored(self) -> None:
        model = build_student("fast-x2")
        assert count_parameters(model.upsample) == 0
        assert not any(k.startswith("upsample") for k in model.state_dict())


@pytest.mark.parametrize("name", ["fast", "fast-x2"])
def test_fast_students_fit_the_budget(name: str) -> None:
    assert macs_per_pixel(build_student(name)) <= FAST_BUDGET


@pytest.mark.parametrize(("names", "size"), [(["fast"], (40, 24)), (["fast-x2"], (24, 40)),
                                             (["residual-x2"] * 2, (8, 24))])  # fmt: skip
def test_onnx_export_matches_torch(names: list[str], size: tuple[int, int], tmp_path) -> None:
    model = Ensemble([randomise(build_student(n)) for n in names])
    path = tmp_path / "m.onnx"
    report = export_model(model, path, metadata={"sharpcam.scale": str(model.scale)})
    assert report.parity_random <= 1e-4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, *size)
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert got.shape == (1, 3, size[0] * model.scale, size[1] * model.scale)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_ensemble_scale_and_multiple() -> None:
    assert Ensemble([build_student("fast-x2")]).scale == 2
    assert Ensemble([build_student("fast"), build_student("residual")]).multiple == 2
    with pytest.raises(ValueError, match="one scale"):
        Ensemble([build_student("fast"), build_student("fast-x2")])


def test_one_student_ensemble_is_the_student_clamped() -> None:
    student = randomise(build_student("fast"), std=0.5)
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(Ensemble([student])(x), student(x).clamp(0, 1))


def test_fused_export_has_no_weight_arithmetic(tmp_path) -> None:
    model = Ensemble([randomise(build_student("fast"))])
    unfused = tmp_path / "unfused.onnx"
    export_model(model, unfused, metadata={})
    fused = tmp_path / "fused.onnx"
    export_model(model.fuse(), fused, metadata={})
    ops = [n.op_type for n in onnx.load(str(fused)).graph.node]
    assert "ReduceMean" not in ops and ops.count("Conv") == 5
    x = np.random.default_rng(0).random((1, 3, 24, 40), dtype=np.float32)
    a, b = (
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: x})[
            0
        ]
        for p in (unfused, fused)
    )
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
