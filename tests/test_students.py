"""Students: shapes, ranges, identity start, cost, the ensemble (kornia-style per operator)."""

from __future__ import annotations

import pytest
import torch

from training.students import (
    STUDENTS,
    Ensemble,
    ResidualStudent,
    SeedStudent,
    build_student,
    count_parameters,
    macs_per_pixel,
    student_kwargs,
)


@pytest.mark.parametrize("name", sorted(STUDENTS))
class TestEveryStudent:
    def test_shape_and_batch(self, name: str) -> None:
        model = build_student(name).eval()
        x = torch.rand(3, 3, 24, 40)
        y = model(x)
        assert y.shape == x.shape and torch.isfinite(y).all()

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
        expected = 9 * (12 * width + depth * width * width + width * 12) / 4
        assert macs_per_pixel(model) == pytest.approx(expected)

    def test_default_cost(self) -> None:
        assert macs_per_pixel(ResidualStudent()) == pytest.approx(10_944)
        assert count_parameters(ResidualStudent()) == 43_776

    def test_flat_areas_are_left_alone_whatever_the_weights(self) -> None:
        model = ResidualStudent(width=8, depth=2)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.5)
        flat = torch.full((1, 3, 16, 24), 0.3)
        flat[:, 1] = 0.7
        # exact up to float rounding (far below one 8-bit step, 3.9e-3)
        torch.testing.assert_close(model(flat), flat, rtol=0, atol=1e-4)
        textured = torch.rand(1, 3, 16, 24)
        assert not torch.allclose(model(textured), textured)


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
