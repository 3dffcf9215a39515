"""VGG16 features and the perceptual loss, on checkpoints in torchvision's format made here."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import training.vgg
from training.vgg import (
    IMAGENET_MEAN,
    RELU3_3,
    PerceptualLoss,
    VGG16Features,
    _prepare,
    load_vgg16_features,
    perceptual_loss,
    save_random_vgg16_checkpoint,
    vgg16_feature_shapes,
)
from training.weights import VGG16_IMAGENET, WeightsError, file_sha256

# torchvision's vgg16(): (index in features, in channels, out channels) of each 3x3 conv,
# and (index in classifier, in features, out features) of each Linear, written out by hand.
CONVS = [
    (0, 3, 64), (2, 64, 64),
    (5, 64, 128), (7, 128, 128),
    (10, 128, 256), (12, 256, 256), (14, 256, 256),
    (17, 256, 512), (19, 512, 512), (21, 512, 512),
    (24, 512, 512), (26, 512, 512), (28, 512, 512),
]  # fmt: skip
LINEARS = [(0, 25088, 4096), (3, 4096, 4096), (6, 4096, 1000)]


def torchvision_format(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with torchvision's VGG16 keys and shapes; random features.

    The classifier tensors are zero-stride views (real shapes, tiny file): the loader
    ignores them and a real 411 MB fully connected layer would only slow the test.
    """
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for index, n_in, n_out in CONVS:
        state[f"features.{index}.weight"] = torch.randn(n_out, n_in, 3, 3, generator=g) * 0.05
        state[f"features.{index}.bias"] = torch.randn(n_out, generator=g) * 0.05
    for index, n_in, n_out in LINEARS:
        state[f"classifier.{index}.weight"] = torch.zeros(1).expand(n_out, n_in)
        state[f"classifier.{index}.bias"] = torch.zeros(1).expand(n_out)
    return state


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(torchvision_format(), path)
    return path


@pytest.fixture(scope="module")
def features(checkpoint: Path) -> VGG16Features:
    return load_vgg16_features(checkpoint)


def unreachable_url() -> str:
    """A URL on a local port nobody listens on (connection refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{VGG16_IMAGENET.filename}"


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


class TestLayout:
    def test_feature_keys_match_torchvision(self) -> None:
        expected = {}
        for index, n_in, n_out in CONVS:
            expected[f"features.{index}.weight"] = [n_out, n_in, 3, 3]
            expected[f"features.{index}.bias"] = [n_out]
        assert {k: list(v) for k, v in vgg16_feature_shapes().items()} == expected

    def test_stack_stops_at_relu3_3(self) -> None:
        model = VGG16Features()
        assert RELU3_3 == 16 and len(model.features) == 16
        assert isinstance(model.features[-1], torch.nn.ReLU)
        assert list(model.state_dict()) == [
            f"features.{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14) for p in ("weight", "bias")
        ]

    def test_output_shape(self, features: VGG16Features) -> None:
        with torch.no_grad():
            assert features(torch.rand(2, 3, 224, 224)).shape == (2, 256, 56, 56)


class TestLoader:
    def test_loads_the_used_layers_frozen(self, checkpoint: Path, features: VGG16Features) -> None:
        state = torch.load(checkpoint, weights_only=True)
        loaded = features.state_dict()
        assert loaded.keys() < state.keys()
        assert all(torch.equal(loaded[k], state[k]) for k in loaded)
        assert not features.training
        assert not any(p.requires_grad for p in features.parameters())

    def test_helper_checkpoint_is_in_the_same_format(self, tmp_path: Path) -> None:
        path = save_random_vgg16_checkpoint(tmp_path / "v.pth", seed=1)
        state = torch.load(path, weights_only=True)
        assert {k: v.shape for k, v in state.items()} == {
            k: v.shape for k, v in torchvision_format().items()
        }
        load_vgg16_features(path)
        assert path.stat().st_size < 80e6

    def test_none_uses_the_cached_download(
        self, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The published file, pinned to this stand-in's hash; its URL goes nowhere, so
        # the file already in the cache must be used without any network access.
        known = replace(VGG16_IMAGENET, url=unreachable_url(), sha256=file_sha256(checkpoint))
        monkeypatch.setattr(training.vgg, "VGG16_IMAGENET", known)
        (tmp_path / known.filename).write_bytes(checkpoint.read_bytes())
        model = load_vgg16_features(None, cache_dir=tmp_path, progress=False)
        assert not model.training

    def test_none_without_network_is_one_line(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        known = replace(VGG16_IMAGENET, url=unreachable_url())
        monkeypatch.setattr(training.vgg, "VGG16_IMAGENET", known)
        with pytest.raises(WeightsError) as error:
            load_vgg16_features(None, cache_dir=tmp_path, progress=False)
        message = one_line(error)
        assert message.startswith(f"cannot download {known.url} (")
        assert message.endswith("pass the file with --vgg PATH")
        assert list(tmp_path.iterdir()) == []

    def test_wrong_keys(self, tmp_path: Path) -> None:
        state = torchvision_format()
        state["features.1.weight"] = state.pop("features.0.weight")
        torch.save(state, tmp_path / "bad.pth")
        with pytest.raises(WeightsError) as error:
            load_vgg16_features(tmp_path / "bad.pth")
        assert one_line(error) == (
            f"{tmp_path / 'bad.pth'} is not a torchvision VGG16 checkpoint: "
            "1 missing keys (features.0.weight), 1 unexpected (features.1.weight); "
            "pass torchvision's vgg16-397923af.pth with --vgg PATH"
        )

    def test_wrong_shape(self, tmp_path: Path) -> None:
        state = torchvision_format()
        state["features.28.weight"] = torch.zeros(512, 512, 1, 1)
        torch.save(state, tmp_path / "bad.pth")
        with pytest.raises(WeightsError, match=r"features\.28\.weight \[512, 512, 1, 1\] instead"):
            load_vgg16_features(tmp_path / "bad.pth")

    def test_batch_norm_vgg_is_refused(self, tmp_path: Path) -> None:
        state = torchvision_format()
        state["features.1.running_mean"] = torch.zeros(64)
        torch.save(state, tmp_path / "bn.pth")
        with pytest.raises(WeightsError, match=r"1 unexpected \(features\.1\.running_mean\)"):
            load_vgg16_features(tmp_path / "bn.pth")

    def test_not_a_state_dict(self, tmp_path: Path) -> None:
        torch.save([torch.zeros(1)], tmp_path / "list.pth")
        with pytest.raises(WeightsError, match=r"not a VGG16 state dict \(found list\)"):
            load_vgg16_features(tmp_path / "list.pth")

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(WeightsError, match="does not exist; pass an existing file with --vgg"):
            load_vgg16_features(tmp_path / "none.pth")


class TestPerceptualLoss:
    def test_zero_for_identical_images(self, features: VGG16Features) -> None:
        x = torch.rand(2, 3, 256, 256)
        assert PerceptualLoss(features)(x, x.clone()).item() == 0.0

    def test_positive_for_different_images(self, features: VGG16Features) -> None:
        x = torch.rand(2, 3, 64, 64)
        assert PerceptualLoss(features)(x, (x + 0.1).clamp(0, 1)).item() > 0.0

    def test_gradient_reaches_the_image_only(self, features: VGG16Features) -> None:
        loss_fn = PerceptualLoss(features)
        pred = torch.rand(1, 3, 48, 80, requires_grad=True)
        target = torch.rand(1, 3, 48, 80, requires_grad=True)
        loss_fn(pred, target).backward()
        assert pred.grad is not None and pred.grad.abs().sum() > 0
        assert target.grad is None
        assert all(p.grad is None for p in features.parameters())

    def test_stays_frozen_in_training_mode(self, features: VGG16Features) -> None:
        loss_fn = PerceptualLoss(features).train()
        assert loss_fn.training and not loss_fn.features.training
        assert not any(p.requires_grad for p in loss_fn.parameters())

    def test_module_equals_function(self, features: VGG16Features) -> None:
        pred, target = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 40, 24)
        expected = perceptual_loss(pred, target, features)
        assert torch.equal(PerceptualLoss(features)(pred, target), expected)

    def test_imagenet_normalisation_and_resize(self) -> None:
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(2, 3, 100, 60)
        prepared = _prepare(mean)
        assert prepared.shape == (2, 3, 224, 224)
        torch.testing.assert_close(prepared, torch.zeros_like(prepared))

    @pytest.mark.parametrize(
        ("pred", "target", "message"),
        [
            ((1, 3, 8, 8), (2, 3, 8, 8), "batch sizes differ"),
            ((1, 1, 8, 8), (1, 1, 8, 8), r"must be \[N, 3, H, W\]"),
            ((3, 8, 8), (3, 8, 8), r"must be \[N, 3, H, W\]"),
        ],
    )
    def test_bad_shapes(self, features: VGG16Features, pred, target, message) -> None:
        with pytest.raises(ValueError, match=message):
            perceptual_loss(torch.rand(pred), torch.rand(target), features)
