"""Training on a --degradation mix: the call cache is filled once, pairs follow the mix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import training.distill as distill
from tests.synthetic import write_photos
from training.calldata import MixedInputs, cache_folder, cache_spec, fill_call_cache, seed_lr
from training.config import Config, RunError, check_config
from training.data import PatchSet, make_split
from training.degradations import get_degradation, parse_mix
from training.onnx_io import read_metadata
from training.train import degrade, training_pair

TINY = [
    "--epochs", "1", "--patch-size", "32", "--stride", "32", "--max-patches", "8",
    "--val-patches", "4", "--showcase", "2", "--no-teacher", "--no-perceptual",
]  # fmt: skip


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    write_photos(folder, 10, 96, 128)
    return folder


def test_a_mixed_run_fills_the_cache_once_and_records_the_mix(
    photos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    args = [*TINY, "--degradation", "call:0.8,seed:0.2", "--cache-dir", str(tmp_path / "c")]
    assert distill.main(["--data", str(photos), "--out", str(tmp_path / "r1"), *args]) == 0
    assert any("call cache: 16 sequences built" in m for m in caplog.messages)
    config = Config(**json.loads((tmp_path / "r1" / "config.json").read_text()))
    folder = cache_folder(tmp_path / "c", config)
    assert len(list(folder.glob("*/key.json"))) == 16
    report = json.loads((tmp_path / "r1" / "report.json").read_text())
    assert "call:0.8,seed:0.2" in json.dumps(report)
    caplog.clear()
    assert distill.main(["--data", str(photos), "--out", str(tmp_path / "r2"), *args]) == 0
    assert any("0 sequences built" in m and "16 reused" in m for m in caplog.messages)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--degradation", "call:x"], "not a number"),
        (["--degradation", "blocking"], "evaluation degradation"),
        (["--degradation", "call:1", "--no-teacher"], None),
        (["--degradation", "call:1", "--w-teacher", "0.9"], "add --no-teacher"),
        (["--mode", "x3"], "unknown --mode"),
        (["--no-teacher", "--w-temporal", "0.5"], "needs consecutive frames"),
        (["--no-teacher", "--degradation", "call:1", "--w-temporal", "-1"], "needs consecutive"),
        (["--no-teacher", "--degradation", "call:1", "--w-temporal", "0.5"], None),
        (["--mode", "x2"], None),  # seed x2 with a teacher: Restormer gets the bicubic x2
        (["--mode", "deblock", "--no-teacher"], "deblock trains on --degradation codec alone"),
        (["--mode", "deblock", "--no-teacher", "--degradation", "codec:1,seed:1"], "not 'seed'"),
        (["--mode", "deblock", "--no-teacher", "--degradation", "codec"], None),
    ],
)
def test_bad_mixes_and_modes_are_one_line(extra: list[str], match: str | None) -> None:
    from training.config import parse_config

    config, _, _ = parse_config(["--data", "x", *extra])
    if "--no-teacher" not in extra:
        config = Config(**{**config.__dict__, "no_teacher": False})
    if match is None:
        check_config(config)
        return
    with pytest.raises(RunError, match=match) as info:
        check_config(config)
    assert "\n" not in str(info.value)


def test_x2_mode_refuses_a_scale_1_student(photos: Path, tmp_path: Path, capsys) -> None:
    args = [*TINY, "--mode", "x2", "--student", "residual", "--cache-dir", str(tmp_path / "c")]
    assert distill.main(["--data", str(photos), "--out", str(tmp_path / "r"), *args]) == 2
    assert "needs a student of scale 2" in capsys.readouterr().err


@pytest.fixture(scope="module")
def setup(photos: Path, tmp_path_factory: pytest.TempPathFactory):
    """A split, its call cache (half A and B) and half A's patches."""
    root = tmp_path_factory.mktemp("cache")
    split = make_split(photos, showcase=2)
    config = Config(data=str(photos), patch_size=32, degradation="call:0.5,seed:0.5")
    fill_call_cache(config, split, root)
    patches = PatchSet(photos, split.train_a, split.sha256, size=32, stride=32)
    return config, split, root, patches


class TestTrainingPairs:
    def test_a_single_per_image_degradation_draws_nothing(self, setup) -> None:
        patches = setup[3]
        inputs = MixedInputs(parse_mix("seed"), "restore", 42)
        d, g = training_pair(inputs, patches, 42, 3, 5)
        assert np.array_equal(g, patches[5])
        assert np.array_equal(d, degrade(get_degradation("seed"), patches[5], 42, 3, 5))

    def test_the_mix_shares_are_followed_and_call_frames_come_from_the_cache(self, setup) -> None:
        config, split, root, patches = setup
        inputs = MixedInputs.for_half(config, split, "a", root)
        picks = [inputs.pick(i, 0) for i in range(400)]
        share = sum(p.call_index is not None for p in picks) / 400
        assert share == pytest.approx(0.5, abs=0.08)
        assert [inputs.pick(i, 0) for i in range(400)] == picks  # reproducible
        assert [inputs.pick(i, 1) for i in range(400)] != picks  # fresh each epoch
        i = next(i for i, p in enumerate(picks) if p.call_index is not None)
        d, g = training_pair(inputs, patches, 42, 0, i)
        assert (d.shape, g.shape) == ((32, 32, 3), (32, 32, 3))
        assert not np.array_equal(d, g)

    def test_x2_pairs_are_half_size_inputs(self, setup, tmp_path: Path) -> None:
        config, split, _, patches = setup
        x2 = Config(**{**config.__dict__, "mode": "x2"})
        fill_call_cache(x2, split, tmp_path)
        inputs = MixedInputs.for_half(x2, split, "a", tmp_path)
        for i in range(12):
            d, g = training_pair(inputs, patches, 42, 0, i)
            assert d.shape == (16, 16, 3) and g.shape == (32, 32, 3)
            if inputs.pick(i, 0).call_index is None:
                assert np.array_equal(d, seed_lr(g))

    def test_an_unfilled_cache_is_a_clear_error(self, setup, tmp_path: Path) -> None:
        config, split = setup[0], setup[1]
        with pytest.raises(RunError, match="fill the cache first"):
            MixedInputs.for_half(config, split, "a", tmp_path / "empty")

    def test_the_cache_folder_keys_mode_size_and_seed(self, setup) -> None:
        config, _, root, _ = setup
        assert cache_folder(root, config).name == "restore_32px_seed42"
        assert len(list(cache_folder(root, config).glob("*/key.json"))) == 16


def test_a_temporal_run_records_the_term(photos: Path, tmp_path: Path) -> None:
    args = [*TINY, "--degradation", "call:0.5,seed:0.5", "--w-temporal", "0.5"]
    args += ["--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r")]
    assert distill.main(["--data", str(photos), *args]) == 0
    history = (tmp_path / "r" / "student_a" / "history.csv").read_text()
    assert "loss_temporal" in history
    assert "0.5*L1(dS,dGT)" in (tmp_path / "r" / "report.md").read_text()


def test_temporal_loss_charges_flicker_not_motion() -> None:
    import torch

    from training.losses import temporal_loss

    g0, g1 = torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.2)
    assert float(temporal_loss(g0 + 0.1, g1 + 0.1, g0, g1)) == pytest.approx(0.0, abs=1e-6)
    assert float(temporal_loss(g0, g1 + 0.05, g0, g1)) == pytest.approx(0.05)


def test_consecutive_frames_follow_each_other(setup) -> None:
    config, split, root, _ = setup
    inputs = MixedInputs.for_half(config, split, "a", root)
    d0, g0, d1, g1 = inputs.consecutive(3, 0)
    assert d0.shape == d1.shape == g0.shape == g1.shape == (32, 32, 3)
    assert not np.array_equal(g0, g1) or not np.array_equal(d0, d1)
    again = inputs.consecutive(3, 0)
    assert all(np.array_equal(a, b) for a, b in zip(again, (d0, g0, d1, g1), strict=True))


def test_temporal_pairs_follow_the_mix(setup, tmp_path: Path) -> None:
    """The temporal term's pairs carry the mix's degradations: about half of them the
    cached call frames, the rest the seed blur of the same two pristine frames."""
    config, split, root, _ = setup
    inputs = MixedInputs.for_half(config, split, "a", root)
    seed = get_degradation("seed")
    quads = [inputs.consecutive(i, 0) for i in range(200)]
    blurred = [
        np.array_equal(d0, seed(g0, np.random.default_rng(0)))
        and np.array_equal(d1, seed(g1, np.random.default_rng(0)))
        for d0, g0, d1, g1 in quads
    ]
    assert sum(blurred) / len(quads) == pytest.approx(0.5, abs=0.1)
    calls = [q for q, b in zip(quads, blurred, strict=True) if not b]
    cached = {inputs.temporal.pair(i)[0].tobytes() for i in range(len(inputs.temporal))}
    assert all(q[0].tobytes() in cached and q[2].tobytes() in cached for q in calls)
    x2 = Config(**{**config.__dict__, "mode": "x2"})
    fill_call_cache(x2, split, tmp_path)
    inputs = MixedInputs.for_half(x2, split, "a", tmp_path)
    halves = [inputs.consecutive(i, 0) for i in range(40)]
    assert any(np.array_equal(d, seed_lr(g)) for d, g, _, _ in halves)
    assert all(d.shape == (16, 16, 3) and g.shape == (32, 32, 3) for d, g, _, _ in halves)


class TestCallClips:
    """``--call-clips``: frames of real training clips feed the call sequences too."""

    def test_training_clips_add_sequences_to_each_half(
        self, photos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        from tests.helpers_media import make_clip

        clips = tmp_path / "clips"
        clips.mkdir()
        make_clip(clips / "grid_lrwp9a_tiny.mp4", frames=20, width=64, height=48)
        make_clip(clips / "grid_sbia1a_tiny.mp4", frames=20, width=64, height=48)
        make_clip(clips / "grid_lwbsza_tiny.mp4", frames=20, width=64, height=48)  # evaluation
        caplog.set_level("INFO")
        args = [
            *TINY, "--degradation", "call:0.8,seed:0.2", "--cache-dir", str(tmp_path / "c"),
            "--call-clips", str(clips), "--call-clip-sequences", "3",
        ]  # fmt: skip
        assert distill.main(["--data", str(photos), "--out", str(tmp_path / "r"), *args]) == 0
        # 8 training photos x 2 sequences, and 2 training clips x 3 (the evaluation clip none)
        assert any("call cache: 22 sequences built" in m for m in caplog.messages)
        config = Config(**json.loads((tmp_path / "r" / "config.json").read_text()))
        keys = [
            json.loads(k.read_text())
            for k in cache_folder(tmp_path / "c", config).glob("*/key.json")
        ]
        assert len(keys) == 22
        assert "grid_lwbsza" not in json.dumps(keys)
        meta = read_metadata(tmp_path / "r" / "sharpcam.onnx")  # the model says what it saw
        assert meta["sharpcam.data"].endswith(
            "training clips (3 windows each): half A grid_lrwp9a_tiny; half B grid_sbia1a_tiny"
        )
        assert meta["sharpcam.test"].endswith("(seed degradation)")  # the mix's photo part

    def test_a_re_export_without_the_clips_still_names_them(
        self, photos: Path, tmp_path: Path
    ) -> None:
        from training.finish import data_line

        gone = tmp_path / "moved-away"
        config = Config(data=str(photos), out=str(tmp_path / "r"), call_clips=str(gone))
        line = data_line(make_split(photos), config)
        assert line.endswith(
            f"; training clips of {gone} ({config.call_clip_sequences} windows each)"
        )

    def test_an_evaluation_clip_is_refused(self, photos: Path, tmp_path: Path, capsys) -> None:
        from tests.helpers_media import make_clip

        clip = tmp_path / "grid_swiz3n_tiny.mp4"
        make_clip(clip, frames=4, width=64, height=48)
        args = [*TINY, "--degradation", "call:1", "--call-clips", str(clip)]
        assert distill.main(["--data", str(photos), "--out", str(tmp_path / "r"), *args]) != 0
        err = capsys.readouterr().err
        assert "evaluation clip" in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def mixed(photos: Path, tmp_path_factory: pytest.TempPathFactory):
    """A split and the caches of a mix with both sequence parts (and what filling did)."""
    root = tmp_path_factory.mktemp("codec-cache")
    split = make_split(photos, showcase=2)
    config = Config(data=str(photos), patch_size=32, degradation="seed:0.4,codec:0.3,call:0.3")
    summaries = fill_call_cache(config, split, root)
    return config, split, root, summaries


class TestCodecPart:
    """``codec`` (codec blocking alone) is a sequence part beside ``call``, in its own cache."""

    def test_each_sequence_part_has_its_own_filled_folder(self, mixed) -> None:
        config, _, root, summaries = mixed
        assert [s.built for s in summaries] == [16, 16]
        call, codec = cache_folder(root, config, "call"), cache_folder(root, config, "codec")
        assert (call.name, codec.name) == ("restore_32px_seed42", "restore_32px_seed42_codec")
        for entry in codec.glob("*/key.json"):
            record = json.loads(entry.read_text())
            assert record["key"]["degradation"] == "codec"
            assert record["params"]["factor"] == 1.0 and "blur" not in record["params"]

    def test_deblock_mode_reads_the_restore_codec_sequences(self, mixed) -> None:
        """The codec sequences are full size in both scale-1 modes: one cache serves both."""
        config, _, root, _ = mixed
        deblock = Config(**{**config.__dict__, "mode": "deblock", "degradation": "codec"})
        assert cache_folder(root, deblock, "codec") == cache_folder(root, config, "codec")
        assert cache_spec(deblock, "codec") == cache_spec(config, "codec")

    def test_picks_follow_the_shares_and_name_their_part(self, mixed, photos: Path) -> None:
        config, split, root, _ = mixed
        inputs = MixedInputs.for_half(config, split, "a", root)
        picks = [inputs.pick(i, 0) for i in range(600)]
        codec = [p for p in picks if p.call_index is not None and p.sequence == "codec"]
        call = [p for p in picks if p.call_index is not None and p.sequence == "call"]
        assert len(codec) / 600 == pytest.approx(0.3, abs=0.07)
        assert len(call) / 600 == pytest.approx(0.3, abs=0.07)
        patches = PatchSet(photos, split.train_a, split.sha256, size=32, stride=32)
        i = picks.index(codec[0])
        d, g = training_pair(inputs, patches, 42, 0, i)
        assert d.shape == g.shape == (32, 32, 3) and not np.array_equal(d, g)

    @pytest.mark.parametrize(
        ("extra", "match"),
        [
            (["--mode", "x2", "--degradation", "codec:0.5,seed:0.5"], "x2 trains on call"),
            (["--degradation", "codec:0.5,seed:0.5", "--call-clips", "."], None),
            (["--degradation", "codec:1", "--w-temporal", "0.5"], None),
        ],
    )
    def test_config_checks(self, extra: list[str], match: str | None) -> None:
        from training.config import parse_config

        config, _, _ = parse_config(["--data", "x", "--no-teacher", *extra])
        if match is None:
            check_config(config)
            return
        with pytest.raises(RunError, match=match):
            check_config(config)


def test_the_report_says_which_degradation_the_photo_test_used() -> None:
    """A mix of sequences only trains on no per-image degradation: the report must not
    describe the photo test set's seed blur as the training degradation."""
    from training.finish import degradation_line

    assert degradation_line(Config(degradation="call:0.8,seed:0.2")).startswith(
        "call:0.8,seed:0.2: downsample x2"
    )
    line = degradation_line(Config(degradation="codec", mode="deblock"))
    assert line.startswith("codec (encoded sequences only); the photo test set uses seed: ")
