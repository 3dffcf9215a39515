"""``--init``: a run's students start from an exported model or a checkpoint (fine-tuning)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import training.distill as distill
from sharpcam.contract import INPUT_NAME
from tests.helpers_training import trained_like
from tests.synthetic import write_photos
from training.checkpoints import save_checkpoint
from training.config import RunError
from training.init_weights import initial_state
from training.onnx_io import export_model
from training.students import Ensemble, build_student

TINY = [
    "--epochs", "1", "--patch-size", "32", "--stride", "32", "--max-patches", "6",
    "--val-patches", "4", "--showcase", "2", "--no-teacher", "--no-perceptual",
]  # fmt: skip


def same(state: dict[str, torch.Tensor], model: torch.nn.Module) -> bool:
    return all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    a, b = trained_like(1, 16, 2), trained_like(2, 16, 2)
    path = tmp_path / "ensemble.onnx"
    export_model(Ensemble([a, b]), path, metadata={})
    return path, a, b


def blank() -> torch.nn.Module:
    return build_student("residual", width=16, depth=2)


def test_students_a_and_b_start_from_their_own_half_of_the_ensemble(pair) -> None:
    path, a, b = pair
    assert same(initial_state(path, "a", blank()), a)
    assert same(initial_state(path, "b", blank()), b)
    assert not same(initial_state(path, "a", blank()), b)


def test_a_one_student_file_starts_both(tmp_path: Path) -> None:
    one = trained_like(3, 16, 2)
    path = tmp_path / "one.onnx"
    export_model(Ensemble([one]), path, metadata={})
    assert same(initial_state(path, "a", blank()), one)
    assert same(initial_state(path, "b", blank()), one)


def test_a_checkpoint_starts_both(tmp_path: Path) -> None:
    one = trained_like(4, 16, 2)
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model": one.state_dict()})
    assert same(initial_state(path, "b", blank()), one)


def test_a_run_folder_starts_each_student_from_its_own_checkpoint(tmp_path: Path) -> None:
    """The way to fine-tune students whose ONNX graph folds a layer: A and B from the
    run's own best.pt files."""
    a, b = trained_like(5, 16, 2), trained_like(6, 16, 2)
    for which, student in (("a", a), ("b", b)):
        (tmp_path / f"student_{which}").mkdir()
        save_checkpoint(tmp_path / f"student_{which}" / "best.pt", {"model": student.state_dict()})
    assert same(initial_state(tmp_path, "a", blank()), a)
    assert same(initial_state(tmp_path, "b", blank()), b)
    (tmp_path / "student_b" / "best.pt").unlink()
    with pytest.raises(RunError, match=r"folder without student_b/best\.pt"):
        initial_state(tmp_path, "b", blank())


def test_other_sizes_are_one_clear_error(pair) -> None:
    path = pair[0]
    with pytest.raises(RunError, match=r"'body.0.weight' is \(16, 12, 3, 3\).*needs \(32, 12"):
        initial_state(path, "a", build_student("residual", width=32, depth=2))
    with pytest.raises(RunError, match=r"has no weight 'body\.8\.weight'"):
        initial_state(path, "a", build_student("residual", width=16, depth=3))


def test_a_graph_without_students_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.onnx"
    export_model(torch.nn.Conv2d(3, 3, 3, padding=1, bias=False), path, metadata={})
    with pytest.raises(RunError, match="no sharpcam student weights"):
        initial_state(path, "a", blank())


def test_a_run_at_lr_0_exports_the_model_it_started_from(tmp_path: Path, pair) -> None:
    """Real run, real export: with nothing learned, the export computes what --init held."""
    path = pair[0]
    photos = tmp_path / "photos"
    write_photos(photos, 6, 96, 128)
    out = tmp_path / "run"
    args = ["--data", photos, "--out", out, *TINY, "--width", "16", "--depth", "2"]
    assert distill.main([str(a) for a in [*args, "--init", path, "--lr", "0"]]) == 0
    x = np.random.default_rng(0).random((1, 3, 48, 64), dtype=np.float32)
    before = ort.InferenceSession(str(path)).run(None, {INPUT_NAME: x})[0]
    after = ort.InferenceSession(str(out / "sharpcam.onnx")).run(None, {INPUT_NAME: x})[0]
    assert np.abs(before - after).max() <= 1e-6
    assert "--init" in (out / "report.md").read_text()


def test_a_missing_init_file_stops_before_anything_is_written(tmp_path: Path, capsys) -> None:
    photos = tmp_path / "photos"
    write_photos(photos, 2, 96, 128)
    out = tmp_path / "run"
    code = distill.main(["--data", str(photos), "--out", str(out), "--init", "nope.onnx"])
    assert code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "--init nope.onnx does not exist" in err[0]
    assert not out.exists()
