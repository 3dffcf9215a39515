"""End-to-end distillation runs on tiny self-made photos: outputs, resume, crashes, errors.

Every run here uses the real code path (real data prep, real training steps, real
evaluation, real ONNX export checked by ONNX Runtime) at toy sizes.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import training.distill as distill
import training.train as train
from sharpcam.contract import INPUT_NAME, OUTPUT_NAME
from tests.helpers_training import TinyX2, trained_like
from tests.synthetic import write_photo, write_photos
from training.checkpoints import load_student, read_history, save_checkpoint
from training.onnx_io import read_metadata
from training.students import Ensemble

TINY = [
    "--epochs", "1", "--patch-size", "32", "--stride", "32", "--max-patches", "12",
    "--val-patches", "4", "--showcase", "2", "--checkpoint-every", "5",
]  # fmt: skip
NO_NETS = ["--no-teacher", "--no-perceptual"]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    write_photos(folder, 10, 96, 128)
    return folder


def run_main(*args: str | Path) -> int:
    return distill.main([str(a) for a in args])


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def finished_run(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert run_main("--data", photos, "--out", out, *TINY, *NO_NETS) == 0
    return out


class TestEndToEnd:
    def test_writes_every_artefact(self, finished_run: Path) -> None:
        for name in (
            "config.json", "split.json", "report.md", "report.json", "curves.png",
            "showcase.png", "sharpcam.onnx", "student_a/best.pt", "student_a/last.pt",
            "student_a/history.csv", "student_b/best.pt", "student_b/history.csv",
            "teacher.json", "MODEL_CARD.md",
        ):  # fmt: skip
            assert (finished_run / name).is_file(), name
        assert len(list((finished_run / "showcase").glob("*.png"))) == 2

    def test_report_puts_identity_first_with_gains(self, finished_run: Path) -> None:
        report = json.loads((finished_run / "report.json").read_text())
        methods = [r["method"] for r in report["rows"]]
        assert methods[0] == "identity"
        assert methods[2:] == ["student A", "student B", "ensemble (A+B)/2"]
        assert methods[1].startswith("unsharp mask")
        identity = report["rows"][0]
        assert identity["d_psnr"] == 0 and 0 < identity["ssim"] < 1
        for row in report["rows"]:
            assert row["d_psnr"] == pytest.approx(row["psnr"] - identity["psnr"])
        assert report["facts"]["loss"] == "0.1*L1(S,GT)"

    def test_exported_ensemble_matches_the_checkpoints(self, finished_run: Path) -> None:
        a = load_student(finished_run / "student_a" / "best.pt")
        b = load_student(finished_run / "student_b" / "best.pt")
        session = ort.InferenceSession(
            str(finished_run / "sharpcam.onnx"), providers=["CPUExecutionProvider"]
        )
        x = torch.rand(1, 3, 96, 128)
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        with torch.no_grad():
            expected = Ensemble([a, b])(x).numpy()
        assert np.abs(got - expected).max() <= 1e-4
        meta = read_metadata(finished_run / "sharpcam.onnx")
        assert {"sharpcam.recipe", "sharpcam.data", "sharpcam.loss", "sharpcam.test"} <= set(meta)
        assert meta["sharpcam.loss"] == "0.1*L1(S,GT)"
        assert "degraded input PSNR" in meta["sharpcam.test"]

    def test_split_manifest_is_the_seed_split(self, finished_run: Path, photos: Path) -> None:
        split = json.loads((finished_run / "split.json").read_text())
        assert split["seed"] == 42 and len(split["test"]) == 2
        assert len(split["train_a"]) == len(split["train_b"]) == 4
        assert set(split["sha256"]) == {p.name for p in photos.iterdir()}


class TestResume:
    def test_refuses_to_overwrite_a_run(self, finished_run: Path, photos: Path, capsys) -> None:
        assert run_main("--data", photos, "--out", finished_run, *TINY, *NO_NETS) == 2
        assert "already holds a run: add --resume" in one_error_line(capsys)

    def test_refuses_a_changed_recipe(self, finished_run: Path, photos: Path, capsys) -> None:
        code = run_main("--data", photos, "--out", finished_run, "--resume", "--lr", "0.5")
        assert code == 2
        assert "these options differ: lr" in one_error_line(capsys)

    def test_nothing_to_resume(self, tmp_path: Path, photos: Path, capsys) -> None:
        assert run_main("--data", photos, "--out", tmp_path / "new", "--resume") == 2
        assert "nothing to resume" in one_error_line(capsys)

    def test_interrupt_then_resume_equals_an_uninterrupted_run(
        self,
        photos: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        args = ["--data", photos, *TINY, *NO_NETS, "--epochs", "2"]
        assert run_main(*args, "--out", tmp_path / "straight") == 0

        calls = {"n": 0}
        real_degrade = train.degrade

        def interrupting(degradation, patch, seed, epoch, index):
            if epoch != train.VALIDATION_STREAM:
                calls["n"] += 1
                if calls["n"] == 19:  # student A, epoch 2, step 7 (12 steps per epoch)
                    raise KeyboardInterrupt
            return real_degrade(degradation, patch, seed, epoch, index)

        monkeypatch.setattr(train, "degrade", interrupting)
        assert run_main(*args, "--out", tmp_path / "broken") == 130
        saved = torch.load(tmp_path / "broken" / "student_a" / "last.pt", weights_only=False)
        assert (saved["state"]["epoch"], saved["state"]["step"]) == (1, 6)
        assert not (tmp_path / "broken" / "student_b").exists()
        resumed_steps: list[tuple[int, int]] = []

        def counting(degradation, patch, seed, epoch, index):
            if epoch != train.VALIDATION_STREAM:
                resumed_steps.append((epoch, index))
            return real_degrade(degradation, patch, seed, epoch, index)

        monkeypatch.setattr(train, "degrade", counting)
        caplog.set_level("INFO")
        assert run_main(*args, "--out", tmp_path / "broken", "--resume") == 0
        # It continued from last.pt: student A ran only the 6 steps left of epoch 2, then
        # student B its 2 x 12 (a resume that restarted A from scratch would run 48).
        assert "student A: resuming at epoch 2, step 6" in caplog.messages
        assert len(resumed_steps) == 6 + 24
        assert {epoch for epoch, _ in resumed_steps[:6]} == {1}
        for which in ("a", "b"):
            straight = torch.load(tmp_path / "straight" / f"student_{which}" / "last.pt",
                                  weights_only=False)  # fmt: skip
            resumed = torch.load(tmp_path / "broken" / f"student_{which}" / "last.pt",
                                 weights_only=False)  # fmt: skip
            for key, value in straight["model"].items():
                torch.testing.assert_close(resumed["model"][key], value, rtol=1e-5, atol=1e-6)
            assert len(resumed["state"]["history"]) == 2

    def test_resume_refuses_a_changed_photo(
        self, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
    ) -> None:
        data = tmp_path / "data"
        data.mkdir()
        for p in photos.iterdir():
            (data / p.name).write_bytes(p.read_bytes())
        out = tmp_path / "run"

        def interrupt(*args):
            raise KeyboardInterrupt

        monkeypatch.setattr(train, "degrade", interrupt)  # stop at the first step
        assert run_main("--data", data, "--out", out, *TINY, *NO_NETS) == 130
        monkeypatch.undo()
        split = json.loads((out / "split.json").read_text())
        changed = data / split["train_b"][0]
        write_photo(changed, 96, 128, seed=99)  # same name and size, other pixels
        log = (out / "commands.log").read_text()
        capsys.readouterr()

        assert run_main("--data", data, "--out", out, "--resume") == 2
        line = one_error_line(capsys)
        assert f"{changed} changed since the split was made" in line
        assert "restore it or start a new run" in line
        assert (out / "commands.log").read_text() == log

    def test_more_epochs_on_resume(self, photos: Path, tmp_path: Path) -> None:
        out = tmp_path / "run"
        assert run_main("--data", photos, "--out", out, *TINY, *NO_NETS) == 0
        first = (out / "student_a" / "history.csv").read_text().splitlines()
        (out / "student_a" / "done.json").unlink()
        (out / "student_b" / "done.json").unlink()
        assert run_main("--data", photos, "--out", out, "--resume", "--epochs", "2") == 0
        again = (out / "student_a" / "history.csv").read_text().splitlines()
        assert len(again) == 3 and again[:2] == first


class TestAtomicCheckpoints:
    def test_crash_during_save_keeps_the_previous_checkpoint(
        self, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        out = tmp_path / "run"
        assert run_main("--data", photos, "--out", out, *TINY, *NO_NETS) == 0
        last = out / "student_a" / "last.pt"
        before = last.read_bytes()

        def dying_save(obj, f, *args, **kwargs):
            Path(f).write_bytes(b"half a checkpoint")
            raise OSError("disk full")

        monkeypatch.setattr(torch, "save", dying_save)
        with pytest.raises(OSError, match="disk full"):
            save_checkpoint(last, {"model": {}})
        assert last.read_bytes() == before
        assert sorted(p.name for p in last.parent.iterdir()) == [
            "best.pt", "done.json", "history.csv", "last.pt"
        ]  # fmt: skip
        torch.load(last, weights_only=False)  # still a valid checkpoint


class TestWithTeacherAndVGG:
    """All three loss terms, with random official-format checkpoints made here (the real
    weights cannot be downloaded on this machine). This checks the wiring, not quality."""

    def test_all_terms_active(self, photos: Path, tmp_path: Path) -> None:
        from training.restormer import save_random_checkpoint
        from training.vgg import save_random_vgg16_checkpoint

        teacher = save_random_checkpoint(tmp_path / "single_image_defocus_deblurring.pth")
        vgg = save_random_vgg16_checkpoint(tmp_path / "vgg16-397923af.pth")
        out, cache = tmp_path / "run", tmp_path / "cache"
        code = run_main(
            "--data", photos, "--out", out, *TINY, "--max-patches", "4",
            "--teacher", teacher, "--vgg", vgg, "--cache-dir", cache,
        )  # fmt: skip
        assert code == 0
        report = json.loads((out / "report.json").read_text())
        assert report["facts"]["loss"] == "0.9*L1(S,T) + 0.1*L1(S,GT) + 0.005*Perceptual(S,GT)"
        assert report["rows"][-1]["method"] == "teacher (Restormer)"
        cached = list((cache / "teacher-outputs").rglob("*.npy"))
        assert len(cached) == 8  # 4 patches of each half, computed once
        row = read_history(out / "student_a" / "history.csv")[0]
        assert all(float(row[k]) > 0 for k in ("loss_teacher", "loss_gt", "loss_perceptual"))


def exported_teacher(path: Path, model: torch.nn.Module) -> Path:
    from training.onnx_io import export_model

    export_model(model, path, metadata={})
    return path


def file_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


class TestTeacherModel:
    """A sharpcam model as the frozen teacher (issue 10): an exported ONNX or a best.pt."""

    def test_onnx_teacher_is_cached_and_recorded(self, photos: Path, tmp_path: Path) -> None:
        teacher = exported_teacher(tmp_path / "quality.onnx", Ensemble([trained_like(3, 8, 1)]))
        digest = file_sha256(teacher)
        out, cache = tmp_path / "run", tmp_path / "cache"
        code = run_main(
            "--data", photos, "--out", out, *TINY, "--max-patches", "4", "--no-perceptual",
            "--teacher-model", teacher, "--cache-dir", cache, "--tier", "fast",
        )  # fmt: skip
        assert code == 0
        # one cached output per training patch of each half, under the file's SHA-256
        cached = sorted((cache / "teacher-outputs" / f"sharpcam-{digest}").rglob("*.npy"))
        assert len(cached) == 8
        assert np.load(cached[0]).shape == (32, 32, 3)
        report = json.loads((out / "report.json").read_text())
        assert report["facts"]["loss"] == "0.9*L1(S,T) + 0.1*L1(S,GT)"
        assert report["facts"]["teacher"].startswith(
            f"sharpcam model quality.onnx (x1, sha256 {digest[:12]}"
        )
        assert report["rows"][-1]["method"] == "teacher (sharpcam)"
        meta = read_metadata(out / "sharpcam.onnx")
        assert meta["sharpcam.teacher"] == report["facts"]["teacher"]
        assert (meta["sharpcam.tier"], meta["sharpcam.mode"], meta["sharpcam.scale"]) == (
            "fast", "restore", "1"
        )  # fmt: skip
        # the fast tier ships one student, the one validation preferred (not the ensemble)
        assert meta["sharpcam.students"] == "1"
        assert re.search(r"student [AB] PSNR", meta["sharpcam.test"])
        assert "ensemble (A+B)/2" not in [r["method"] for r in report["rows"]]
        assert "sharpcam model quality.onnx" in (out / "report.md").read_text()
        card = (out / "MODEL_CARD.md").read_text()
        assert "sharpcam model quality.onnx" in card and "fast" in card
        assert "degraded input (identity)" in card
        row = read_history(out / "student_a" / "history.csv")[0]
        assert row["loss_teacher"] > 0

    def test_call_frames_get_the_teacher_run_on_them(self, photos: Path, tmp_path: Path) -> None:
        """The fast tier is distilled on the call mix: call frames have no per-patch cache
        key, so the sharpcam teacher runs on each one; photo patches still hit the cache."""
        from training.calldata import MixedInputs
        from training.config import Config
        from training.data import make_split
        from training.model_teacher import load_model_teacher
        from training.teacher import TeacherCache
        from training.train import teacher_target

        model = Ensemble([trained_like(5, 8, 1)])
        onnx_path = exported_teacher(tmp_path / "quality.onnx", model)
        out, cache = tmp_path / "run", tmp_path / "cache"
        code = run_main(
            "--data", photos, "--out", out, *TINY, "--max-patches", "4", "--no-perceptual",
            "--teacher-model", onnx_path, "--cache-dir", cache, "--tier", "fast",
            "--degradation", "call:0.8,seed:0.2",
        )  # fmt: skip
        assert code == 0
        assert read_history(out / "student_a" / "history.csv")[0]["loss_teacher"] > 0
        assert "call:0.8,seed:0.2" in read_metadata(out / "sharpcam.onnx")["sharpcam.degradation"]

        config = Config(
            data=str(photos), patch_size=32, max_patches=4, degradation="call:0.8,seed:0.2"
        )
        split = make_split(photos, seed=config.seed, test_size=0.2, showcase=1)
        inputs = MixedInputs.for_half(config, split, "a", cache)
        teacher = TeacherCache(tmp_path / "t", load_model_teacher(onnx_path, torch.device("cpu")))
        i = next(i for i in range(100) if inputs.pick(i, 0).call_index is not None)
        frame = inputs.call_pair(inputs.pick(i, 0))[0]
        got = teacher_target(teacher, lambda x: x, inputs, None, config, 0, i, frame)  # type: ignore[arg-type]
        with torch.no_grad():
            x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
            expected = model(x)[0].clamp(0, 1).permute(1, 2, 0).numpy()
        assert np.abs(got - expected).max() <= 1e-4
        assert teacher.misses == 0 and teacher.hits == 0  # computed, not cached

    def test_cached_targets_are_the_teacher_outputs(self, tmp_path: Path) -> None:
        from training.model_teacher import load_model_teacher
        from training.teacher import TeacherCache

        model = Ensemble([trained_like(4, 8, 1)])
        teacher = load_model_teacher(
            exported_teacher(tmp_path / "t.onnx", model), torch.device("cpu")
        )
        patch = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
        got = TeacherCache(tmp_path / "cache", teacher).get("seed/p0", patch)
        with torch.no_grad():
            x = torch.from_numpy(patch).permute(2, 0, 1)[None].float() / 255
            expected = model(x)[0].permute(1, 2, 0).numpy()
        assert np.abs(got - expected).max() <= 1e-3  # float16 storage

    def test_student_checkpoint_teacher(
        self, photos: Path, finished_run: Path, tmp_path: Path
    ) -> None:
        best = finished_run / "student_a" / "best.pt"
        out = tmp_path / "run"
        code = run_main(
            "--data", photos, "--out", out, *TINY, "--max-patches", "4", "--no-perceptual",
            "--teacher-model", best, "--cache-dir", tmp_path / "cache",
        )  # fmt: skip
        assert code == 0
        meta = read_metadata(out / "sharpcam.onnx")
        assert meta["sharpcam.teacher"].startswith("sharpcam model best.pt (x1, sha256 ")

    def test_unreadable_teacher_model(self, photos: Path, tmp_path: Path, capsys) -> None:
        bogus = tmp_path / "model.onnx"
        bogus.write_text("not onnx")
        out = tmp_path / "o"
        code = run_main("--data", photos, "--out", out, "--no-perceptual", "--teacher-model", bogus)
        assert code == 2
        line = one_error_line(capsys)
        assert "not a readable ONNX file" in line and "best.pt" in line
        assert not (out / "config.json").exists()

    def test_teacher_model_and_no_teacher_contradict(
        self, photos: Path, tmp_path: Path, capsys
    ) -> None:
        teacher = tmp_path / "t.onnx"
        teacher.write_bytes(b"x")
        code = run_main(
            "--data", photos, "--out", tmp_path / "o", *NO_NETS, "--teacher-model", teacher
        )
        assert code == 2
        assert "contradict" in one_error_line(capsys)


class TestX2Mode:
    """``--mode x2``: half-size input, full-size output, exported with scale 2 (issue 9)."""

    @pytest.fixture
    def tiny_x2(self, monkeypatch: pytest.MonkeyPatch) -> str:
        import training.students as students

        monkeypatch.setitem(students.STUDENTS, "tiny-x2", TinyX2)
        return "tiny-x2"

    def test_x2_run_with_an_x2_sharpcam_teacher(
        self, photos: Path, tmp_path: Path, tiny_x2: str
    ) -> None:
        torch.manual_seed(1)
        teacher = exported_teacher(tmp_path / "x2.onnx", Ensemble([TinyX2()]))
        out, cache = tmp_path / "run", tmp_path / "cache"
        code = run_main(
            "--data", photos, "--out", out, *TINY, "--max-patches", "4", "--no-perceptual",
            "--mode", "x2", "--student", tiny_x2, "--teacher-model", teacher,
            "--cache-dir", cache,
        )  # fmt: skip
        assert code == 0
        # the x2 teacher was fed the 16x16 input and its 32x32 outputs were cached
        folder = cache / "teacher-outputs" / f"sharpcam-{file_sha256(teacher)}" / "seed-x2"
        cached = sorted(folder.rglob("*.npy"))
        assert len(cached) == 8 and np.load(cached[0]).shape == (32, 32, 3)
        meta = read_metadata(out / "sharpcam.onnx")
        assert (meta["sharpcam.scale"], meta["sharpcam.mode"], meta["sharpcam.tier"]) == (
            "2", "x2", "quality"
        )  # fmt: skip
        assert meta["sharpcam.degradation"] == "seed"
        assert float(meta["sharpcam.macs_per_pixel"]) > 0
        assert meta["sharpcam.teacher"].startswith("sharpcam model x2.onnx (x2, ")
        session = ort.InferenceSession(
            str(out / "sharpcam.onnx"), providers=["CPUExecutionProvider"]
        )
        x = torch.rand(1, 3, 48, 64)
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        a = load_student(out / "student_a" / "best.pt")
        b = load_student(out / "student_b" / "best.pt")
        with torch.no_grad():
            expected = Ensemble([a, b])(x).numpy()
        assert got.shape == (1, 3, 96, 128)
        assert np.abs(got - expected).max() <= 1e-4
        report = json.loads((out / "report.json").read_text())
        assert "bicubic" in report["facts"]["identity"]
        assert [r["method"] for r in report["rows"]][-1] == "teacher (sharpcam)"
        identity = report["rows"][0]
        assert 0 < identity["ssim"] < 1 and identity["psnr"] > 15

    def test_restormer_is_fed_the_bicubic_upscale(self) -> None:
        from training.batches import teacher_feed
        from training.teacher import Teacher

        lr = np.zeros((16, 24, 3), np.uint8)
        restormer_like = Teacher(torch.nn.Identity(), checkpoint_hash="0" * 64)
        assert teacher_feed("x2", restormer_like)(lr).shape == (32, 48, 3)
        x2_model = type("X2", (), {"scale": 2})()
        assert teacher_feed("x2", x2_model)(lr).shape == (16, 24, 3)
        assert teacher_feed("restore", restormer_like)(lr).shape == (16, 24, 3)

    def test_restormer_cache_in_x2_holds_outputs_for_the_bicubic_upscale(
        self, photos: Path, tmp_path: Path
    ) -> None:
        """The run's teacher-cache fill, with a scale-1 teacher (the identity standing in
        for Restormer): every entry is the teacher's output on the bicubic x2 upscale of the
        half-size input, at the target's size."""
        from training.batches import half_patches, teacher_key
        from training.calldata import seed_lr
        from training.config import Config
        from training.data import make_split
        from training.modes import upscale
        from training.run import fill_teacher_cache
        from training.teacher import Teacher, TeacherCache

        config = Config(
            data=str(photos), out=str(tmp_path), mode="x2", patch_size=32, stride=32,
            max_patches=3,
        )  # fmt: skip
        split = make_split(photos)
        cache = TeacherCache(
            tmp_path / "cache", Teacher(torch.nn.Identity(), checkpoint_hash="0" * 64)
        )
        fill_teacher_cache(config, split, cache)
        patches = half_patches(config, split, "a")
        for i in range(len(patches)):
            entry = np.load(cache.path(teacher_key(patches, i, config)))
            expected = upscale(seed_lr(np.ascontiguousarray(patches[i])), 2) / 255
            assert entry.shape == (32, 32, 3)
            assert np.abs(entry.astype(np.float32) - expected).max() <= 1e-3

    def test_x2_needs_an_x2_student(self, photos: Path, tmp_path: Path, capsys) -> None:
        code = run_main("--data", photos, "--out", tmp_path / "o", *NO_NETS, "--mode", "x2")
        assert code == 2
        line = one_error_line(capsys)
        assert "--mode x2 needs a student of scale 2, but 'residual' has scale 1" in line

    def test_restore_refuses_an_x2_teacher(self, photos: Path, tmp_path: Path, capsys) -> None:
        teacher = exported_teacher(tmp_path / "x2.onnx", Ensemble([TinyX2()]))
        code = run_main(
            "--data", photos, "--out", tmp_path / "o", "--no-perceptual",
            "--teacher-model", teacher,
        )  # fmt: skip
        assert code == 2
        assert "is a x2 model: --mode restore needs a x1 teacher" in one_error_line(capsys)


class TestBadInput:
    def test_missing_data_folder(self, tmp_path: Path, capsys) -> None:
        assert run_main("--data", tmp_path / "nope", "--out", tmp_path / "o", *NO_NETS) == 2
        assert "does not exist: pass --data" in one_error_line(capsys)

    def test_empty_data_folder(self, tmp_path: Path, capsys) -> None:
        (tmp_path / "empty").mkdir()
        assert run_main("--data", tmp_path / "empty", "--out", tmp_path / "o", *NO_NETS) == 2
        assert "holds no images" in one_error_line(capsys)

    def test_bad_data_folder_fails_before_torch_is_imported(self, tmp_path: Path) -> None:
        (tmp_path / "empty").mkdir()
        code = (
            "import sys; from training.distill import main; "
            f"rc = main(['--data', {str(tmp_path / 'empty')!r}, '--out', "
            f"{str(tmp_path / 'o')!r}]); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO
        )
        assert result.returncode == 2, result.stderr
        assert "holds no images" in result.stderr
        assert not (tmp_path / "o").exists()

    def test_failed_start_leaves_nothing_behind(self, photos: Path, tmp_path: Path, capsys) -> None:
        bogus = tmp_path / "notes.pth"
        bogus.write_text("hello")
        out = tmp_path / "o"
        args = ["--data", photos, "--out", out, *TINY, "--no-perceptual"]
        assert run_main(*args, "--teacher", bogus) == 2
        one_error_line(capsys)
        for name in ("config.json", "commands.log", "split.json"):
            assert not (out / name).exists(), name
        # the same command without the bad teacher then starts afresh, no --resume needed
        assert run_main(*args, "--no-teacher") == 0
        assert len((out / "commands.log").read_text().splitlines()) == 1

    def test_no_image_divisible_by_8(self, tmp_path: Path, capsys) -> None:
        data = tmp_path / "odd"
        data.mkdir()
        write_photo(data / "a.png", 90, 100)
        write_photo(data / "b.jpg", 96, 100)
        assert run_main("--data", data, "--out", tmp_path / "o", *NO_NETS) == 2
        assert "no usable image" in one_error_line(capsys)

    def test_corrupt_image_is_skipped_with_a_warning(
        self, photos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        data = tmp_path / "data"
        data.mkdir()
        for p in photos.iterdir():
            (data / p.name).write_bytes(p.read_bytes())
        (data / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        assert run_main("--data", data, "--out", tmp_path / "o", *TINY, *NO_NETS) == 0
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert warnings == ["skipping zz_corrupt.png: the file cannot be decoded as an image"]
        split = json.loads((tmp_path / "o" / "split.json").read_text())
        assert ["zz_corrupt.png", "unreadable"] in split["dropped"]

    def test_unwritable_output_folder(self, photos: Path, tmp_path: Path, capsys) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("not a folder")
        assert run_main("--data", photos, "--out", blocker / "run", *NO_NETS) == 2
        assert "cannot write to the output folder" in one_error_line(capsys)

    def test_teacher_file_that_is_not_restormer(self, photos: Path, tmp_path: Path, capsys) -> None:
        bogus = tmp_path / "bogus.pth"
        torch.save({"params": {"conv.weight": torch.zeros(3, 3, 3, 3)}}, bogus)
        code = run_main(
            "--data", photos, "--out", tmp_path / "o", "--teacher", bogus, "--no-perceptual"
        )
        assert code == 2
        line = one_error_line(capsys)
        assert "teacher unavailable" in line and "missing" in line and "--no-teacher" in line

    def test_teacher_file_that_is_not_a_checkpoint(
        self, photos: Path, tmp_path: Path, capsys
    ) -> None:
        bogus = tmp_path / "notes.pth"
        bogus.write_text("hello")
        code = run_main(
            "--data", photos, "--out", tmp_path / "o", "--teacher", bogus, "--no-perceptual"
        )
        assert code == 2
        assert "not a readable torch checkpoint" in one_error_line(capsys)

    def test_unreachable_teacher_download(
        self, photos: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import dataclasses

        import training.teacher as teacher

        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        dead = dataclasses.replace(
            teacher.RESTORMER_DEFOCUS, url=f"http://127.0.0.1:{port}/restormer.pth"
        )
        monkeypatch.setattr(teacher, "RESTORMER_DEFOCUS", dead)
        code = run_main(
            "--data", photos, "--out", tmp_path / "o", "--no-perceptual",
            "--cache-dir", tmp_path / "cache",
        )  # fmt: skip
        assert code == 2
        line = one_error_line(capsys)
        assert "teacher unavailable" in line and "--teacher PATH" in line
        assert "--no-teacher" in line


def test_module_entry_point_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training.distill", "--help"],
        capture_output=True, text=True, cwd=REPO, check=True,
    )  # fmt: skip
    for flag in ("--data", "--resume", "--preset", "--no-teacher", "--no-perceptual"):
        assert flag in result.stdout


@pytest.mark.slow
def test_torchrun_two_processes(photos: Path, tmp_path: Path) -> None:
    """DistributedDataParallel over two CPU processes (gloo), as torchrun starts it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(port),
            "-m", "training.distill", "--data", str(photos), "--out", str(tmp_path / "ddp"),
            *TINY, *NO_NETS,
        ],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "ddp" / "sharpcam.onnx").is_file()
    assert "2 processes" in result.stderr
