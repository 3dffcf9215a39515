"""The frozen teacher: checkpoint checks, padding/tiling, and the on-disk output cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from training.restormer import Restormer, RestormerConfig, save_random_checkpoint
from training.teacher import Teacher, TeacherCache, cache_key, load_teacher
from training.weights import RESTORMER_DEFOCUS, WeightsError, file_sha256

SMALL = RestormerConfig(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random small Restormer in the official format (a stand-in, never a real teacher)."""
    return save_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pth", SMALL, seed=1)


@pytest.fixture(scope="module")
def other_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "other.pth", SMALL, seed=2)


@pytest.fixture
def teacher(small_ckpt: Path) -> Teacher:
    return load_teacher(small_ckpt, config=SMALL)


def count_calls(teacher: Teacher) -> list[int]:
    """Count forward calls of the teacher's real network (a forward hook, no fake)."""
    calls: list[int] = []
    teacher.model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    return calls


def patch(seed: int, size: tuple[int, int] = (16, 24)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


class TestLoadTeacher:
    def test_loads_frozen_with_the_file_hash(self, small_ckpt: Path) -> None:
        teacher = load_teacher(small_ckpt, config=SMALL)
        params = torch.load(small_ckpt, weights_only=True)["params"]
        state = teacher.model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in params.items())
        assert not teacher.model.training
        assert not any(p.requires_grad for p in teacher.model.parameters())
        assert teacher.checkpoint_hash == file_sha256(small_ckpt)
        assert len(teacher.checkpoint_hash) == 64 and teacher.path == small_ckpt
        assert not isinstance(teacher, nn.Module)  # cannot leak into a student's parameters

    def test_release_sized_round_trip(self, tmp_path: Path) -> None:
        path = save_random_checkpoint(tmp_path / "full.pth", seed=3)
        teacher = load_teacher(path)
        params = torch.load(path, weights_only=True)["params"]
        assert len(params) == 494
        state = teacher.model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in params.items())

    def test_none_uses_the_cached_download(self, small_ckpt: Path, tmp_path: Path) -> None:
        cached = tmp_path / RESTORMER_DEFOCUS.filename
        cached.write_bytes(small_ckpt.read_bytes())
        teacher = load_teacher(None, cache_dir=tmp_path, config=SMALL, progress=False)
        assert teacher.path == cached

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(WeightsError) as error:
            load_teacher(tmp_path / "nope.pth")
        assert "does not exist" in one_line(error) and "--teacher PATH" in str(error.value)

    def test_not_a_checkpoint(self, tmp_path: Path) -> None:
        (tmp_path / "x.pth").write_text("hello")
        with pytest.raises(WeightsError, match="not a readable torch checkpoint"):
            load_teacher(tmp_path / "x.pth")

    def test_bare_state_dict_is_refused(self, tmp_path: Path) -> None:
        torch.save(Restormer(SMALL).state_dict(), tmp_path / "bare.pth")
        with pytest.raises(WeightsError) as error:
            load_teacher(tmp_path / "bare.pth", config=SMALL)
        message = one_line(error)
        assert "expected a dict with 'params', found keys patch_embed.proj.weight" in message
        assert message.endswith(
            "pass the official single_image_defocus_deblurring.pth with --teacher PATH"
        )

    def test_names_missing_unexpected_and_misshapen_keys(
        self, small_ckpt: Path, tmp_path: Path
    ) -> None:
        params = dict(torch.load(small_ckpt, weights_only=True)["params"])
        del params["output.weight"]
        params["extra.weight"] = torch.zeros(1)
        params["patch_embed.proj.weight"] = torch.zeros(8, 6, 3, 3)
        torch.save({"params": params}, tmp_path / "bad.pth")
        with pytest.raises(WeightsError) as error:
            load_teacher(tmp_path / "bad.pth", config=SMALL)
        assert one_line(error) == (
            f"{tmp_path / 'bad.pth'} is not a Restormer defocus checkpoint: "
            "1 missing keys (output.weight), 1 unexpected (extra.weight), "
            "1 with the wrong shape "
            "(patch_embed.proj.weight [8, 6, 3, 3] instead of [8, 3, 3, 3]); "
            "pass the official single_image_defocus_deblurring.pth with --teacher PATH"
        )

    def test_architecture_mismatch(self, small_ckpt: Path) -> None:
        with pytest.raises(WeightsError, match=r"\d+ missing keys .*\d+ with the wrong shape"):
            load_teacher(small_ckpt)  # a small checkpoint is not the release-sized model


class TestTeacherCall:
    def test_pads_crops_and_clamps(self, teacher: Teacher) -> None:
        x = torch.rand(2, 3, 21, 30)
        out = teacher(x)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 1
        with torch.no_grad():
            padded = F.pad(x, (0, 2, 0, 3), mode="reflect")
            expected = teacher.model(padded)[..., :21, :30].clamp(0, 1)
        torch.testing.assert_close(out, expected)

    def test_output_is_an_ordinary_target_tensor(self, teacher: Teacher) -> None:
        x = torch.rand(1, 3, 16, 16, requires_grad=True)
        target = teacher(x)
        assert not target.is_inference() and not target.requires_grad
        student = torch.rand(1, 3, 16, 16, requires_grad=True)
        F.mse_loss(student, target).backward()  # an inference tensor would fail here
        assert student.grad is not None and x.grad is None
        assert all(p.grad is None for p in teacher.model.parameters())

    def test_tiny_images_are_padded_too(self, teacher: Teacher) -> None:
        assert teacher(torch.rand(1, 3, 3, 5)).shape == (1, 3, 3, 5)

    def test_tiles_give_the_untiled_result_for_a_local_network(self) -> None:
        torch.manual_seed(0)
        local = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)
        )
        teacher = Teacher(local, checkpoint_hash="0" * 64)  # receptive field radius 2
        x = torch.rand(2, 3, 70, 101)
        whole = teacher(x)
        for tile, overlap in [(32, 8), (16, 4), (24, 5), (64, 32)]:
            torch.testing.assert_close(teacher(x, tile=tile, tile_overlap=overlap), whole)

    def test_tiled_restormer(self, teacher: Teacher) -> None:
        x = torch.rand(1, 3, 40, 56)
        assert torch.equal(teacher(x, tile=64), teacher(x))  # one tile: the same run
        tiled = teacher(x, tile=24, tile_overlap=8)
        assert tiled.shape == x.shape and torch.isfinite(tiled).all()

    @pytest.mark.parametrize(
        ("frames", "kwargs", "error", "message"),
        [
            (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), {}, TypeError, "float tensor"),
            (np.zeros((1, 3, 8, 8), np.float32), {}, TypeError, "float tensor, got float32 array"),
            (torch.zeros(3, 8, 8), {}, ValueError, r"\[N, 3, H, W\], got \[3, 8, 8\]"),
            (torch.zeros(1, 4, 8, 8), {}, ValueError, r"\[N, 3, H, W\]"),
            (torch.zeros(1, 3, 8, 8), {"tile": 20}, ValueError, "multiple of 8"),
            (torch.zeros(1, 3, 8, 8), {"tile": 16, "tile_overlap": 16}, ValueError, "tile_overlap"),
        ],
    )
    def test_bad_input(self, teacher: Teacher, frames, kwargs, error, message) -> None:
        with pytest.raises(error, match=message):
            teacher(frames, **kwargs)

    def test_enhance_uint8(self, teacher: Teacher) -> None:
        patches = np.stack([patch(1), patch(2)])
        out = teacher.enhance_uint8(patches)
        assert out.shape == patches.shape and out.dtype == np.float32
        frames = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255
        np.testing.assert_allclose(out, teacher(frames).permute(0, 2, 3, 1).numpy(), atol=1e-6)


class TestTeacherCache:
    def test_second_get_does_not_run_the_model(self, teacher: Teacher, tmp_path: Path) -> None:
        cache = TeacherCache(tmp_path, teacher)
        calls = count_calls(teacher)
        key = cache_key("ab12cd34_0_0_16", "gaussian_blur")
        first = cache.get(key, patch(1))
        second = cache.get(key, patch(1))
        assert calls == [1]
        assert np.array_equal(first, second) and first.dtype == np.float32
        assert (cache.hits, cache.misses, cache.repaired) == (1, 1, 0)
        # a new cache object on the same folder finds the entry on disk
        assert np.array_equal(TeacherCache(tmp_path, teacher).get(key, patch(1)), first)
        assert calls == [1]

    def test_entry_is_float16_under_the_checkpoint_hash(
        self, teacher: Teacher, tmp_path: Path
    ) -> None:
        cache = TeacherCache(tmp_path, teacher)
        out = cache.get("blur/p1", patch(1))
        path = tmp_path / f"restormer-{teacher.checkpoint_hash}" / "blur" / "p1.npy"
        assert cache.path("blur/p1") == path
        stored = np.load(path)
        assert stored.dtype == np.float16 and stored.shape == (16, 24, 3)
        np.testing.assert_array_equal(stored.astype(np.float32), out)
        exact = teacher.enhance_uint8(patch(1)[None])[0]
        np.testing.assert_allclose(out, exact, atol=2.5e-4, rtol=0)  # float16 rounding only
        assert not list(path.parent.glob(".*"))  # no temporary files left

    def test_another_checkpoint_has_its_own_entries(
        self, teacher: Teacher, other_ckpt: Path, tmp_path: Path
    ) -> None:
        other = load_teacher(other_ckpt, config=SMALL)
        assert other.checkpoint_hash != teacher.checkpoint_hash
        a = TeacherCache(tmp_path, teacher).get("blur/p1", patch(1))
        calls = count_calls(other)
        b = TeacherCache(tmp_path, other).get("blur/p1", patch(1))
        assert calls == [1]
        assert not np.array_equal(a, b)
        assert len(list(tmp_path.iterdir())) == 2

    @pytest.mark.parametrize(
        "damage",
        [
            lambda p: p.write_bytes(b"garbage"),
            lambda p: p.write_bytes(p.read_bytes()[:-100]),  # truncated
            lambda p: np.save(p, np.zeros((16, 24, 3), np.float32)),  # wrong dtype
            lambda p: np.save(p, np.zeros((8, 8, 3), np.float16)),  # wrong shape
            lambda p: np.save(p, np.full((16, 24, 3), 2.0, np.float16)),  # out of range
        ],
    )
    def test_damaged_entry_is_recomputed(self, teacher: Teacher, tmp_path: Path, damage) -> None:
        cache = TeacherCache(tmp_path, teacher)
        good = cache.get("blur/p1", patch(1))
        damage(cache.path("blur/p1"))
        calls = count_calls(teacher)
        again = cache.get("blur/p1", patch(1))
        assert calls == [1] and cache.repaired == 1
        np.testing.assert_array_equal(again, good)
        np.testing.assert_array_equal(np.load(cache.path("blur/p1")).astype(np.float32), good)

    def test_precompute_batches_then_get_hits(self, teacher: Teacher, tmp_path: Path) -> None:
        cache = TeacherCache(tmp_path, teacher)
        items = [(f"blur/p{i}", patch(i)) for i in range(5)]
        items += [(f"blur/big{i}", patch(10 + i, (24, 24))) for i in range(2)]
        calls = count_calls(teacher)
        assert cache.precompute(items, batch_size=2, progress=False) == 7
        assert calls == [2, 2, 1, 2]  # batches never mix shapes
        assert cache.precompute(items, batch_size=2, progress=False) == 0
        for key, p in items:
            cache.get(key, p)
        assert calls == [2, 2, 1, 2] and cache.hits == 7
        single = TeacherCache(tmp_path / "other", teacher).get("blur/p3", patch(3))
        np.testing.assert_allclose(cache.get("blur/p3", patch(3)), single, atol=1e-3)

    def test_precompute_accepts_a_generator(self, teacher: Teacher, tmp_path: Path) -> None:
        cache = TeacherCache(tmp_path, teacher)
        assert cache.precompute(((f"d/p{i}", patch(i)) for i in range(3)), progress=True) == 3

    @pytest.mark.parametrize("key", ["", "../x", "a//b", ".hidden", "a/b c", "a/-x", "/abs"])
    def test_unsafe_keys_are_refused(self, teacher: Teacher, tmp_path: Path, key: str) -> None:
        with pytest.raises(ValueError, match="must match"):
            TeacherCache(tmp_path, teacher).get(key, patch(1))

    @pytest.mark.parametrize(
        "bad",
        [
            np.zeros((8, 8, 3), np.float32),
            np.zeros((8, 8), np.uint8),
            np.zeros((8, 8, 4), np.uint8),
        ],
    )
    def test_bad_patches_are_refused(self, teacher: Teacher, tmp_path: Path, bad) -> None:
        with pytest.raises(ValueError, match="HxWx3 uint8"):
            TeacherCache(tmp_path, teacher).get("d/p", bad)

    def test_cache_key(self) -> None:
        assert cache_key("0123abcd_256_512_256", "jpeg_q30") == "jpeg_q30/0123abcd_256_512_256"
        with pytest.raises(ValueError, match="must match"):
            cache_key("../p", "blur")
