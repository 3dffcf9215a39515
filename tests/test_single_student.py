"""One student cut out of an exported ensemble (the ``balanced`` tier): exact, checked, scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sharpcam.contract import INPUT_NAME
from sharpcam.models import read_info
from tests.synthetic import write_photos
from training.data import make_split
from training.onnx_io import export_model
from training.single_student import Score, SingleStudentError, cut, main, prove_cut
from training.students import Ensemble, build_student


def random_student(name: str, seed: int, **kwargs: int) -> torch.nn.Module:
    """A student whose last layer is not zero (so it is not the identity)."""
    torch.manual_seed(seed)
    student = build_student(name, **kwargs)
    with torch.no_grad():
        for p in student.parameters():
            if p.requires_grad:
                p.normal_(0.0, 0.2)
    return student.eval()


def export_ensemble(path: Path, name: str, scale: str, **kwargs: int) -> list[torch.nn.Module]:
    students = [random_student(name, seed, **kwargs) for seed in (1, 2)]
    metadata = {
        "sharpcam.scale": scale,
        "sharpcam.mode": "restore" if scale == "1" else "x2",
        "sharpcam.tier": "quality",
        "sharpcam.macs_per_pixel": "2000",
        "sharpcam.students": "2",
    }
    export_model(Ensemble(students), path, metadata=metadata)
    return students


def run_onnx(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT_NAME: x})[0]


@pytest.mark.parametrize(
    ("name", "scale", "kwargs"),
    [("residual", "1", {"width": 8, "depth": 1}), ("residual-x2", "2", {"width": 8, "depth": 1})],
    ids=["restore", "x2"],
)
def test_each_cut_student_is_exactly_that_student(
    tmp_path: Path, name: str, scale: str, kwargs: dict[str, int]
) -> None:
    path = tmp_path / "ensemble.onnx"
    students = export_ensemble(path, name, scale, **kwargs)
    model = onnx.load(str(path))
    x = np.random.default_rng(0).random((1, 3, 40, 56), dtype=np.float32)
    assert prove_cut(model, [x]) <= 1e-5
    outputs = []
    for which, student in zip("ab", students, strict=True):
        single = cut(model, which)
        onnx.checker.check_model(single, full_check=True)
        with torch.no_grad():
            expected = student(torch.from_numpy(x)).clamp(0, 1).numpy()
        got = run_onnx(single, x)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-5
        names = {i.name for i in single.graph.initializer}
        other = "students.1." if which == "a" else "students.0."
        assert not any(n.startswith(other) for n in names), "the other student's weights stayed"
        outputs.append(got)
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-3  # two different students


def test_the_share_of_the_gain_is_only_a_ratio_when_the_ensemble_gains() -> None:
    ssim = {"input": 0.9, "ensemble": 0.9, "a": 0.9, "b": 0.9}
    gaining = Score("seed", 3, {"input": 30.0, "ensemble": 31.0, "a": 30.8, "b": 30.9}, ssim)
    assert "80% of the ensemble's gain" in gaining.line("a")
    # two losses make a positive ratio that means nothing ("338 % of the gain")
    losing = Score("seed", 3, {"input": 30.0, "ensemble": 29.9, "a": 29.6, "b": 29.8}, ssim)
    assert "no gain to share" in losing.line("a") and "%" not in losing.line("a")


def test_refuses_a_graph_that_is_not_an_ensemble(tmp_path: Path) -> None:
    path = tmp_path / "one.onnx"
    export_model(Ensemble([random_student("fast", 0)]), path, metadata={})
    with pytest.raises(SingleStudentError, match=r"does not end in Add -> Div -> Clip"):
        cut(onnx.load(str(path)), "a")


def test_writes_the_balanced_tier_with_its_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    write_photos(photos, 6, height=96, width=128)
    run = tmp_path / "run"
    run.mkdir()
    make_split(photos).save(run / "split.json")
    model = tmp_path / "ensemble.onnx"
    export_ensemble(model, "residual", "1", width=8, depth=1)
    out = tmp_path / "models" / "balanced.onnx"
    argv = ["--model", str(model), "--student", "b", "--data", str(photos), "--run", str(run)]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "student A" in printed and "student B" in printed
    # the random ensemble loses to its input here: no meaningless share of a loss is printed
    assert printed.count("the ensemble has no gain to share") == 2 and "%" not in printed
    info = read_info(out)
    assert (info.tier, info.mode, info.scale) == ("balanced", "restore", 1)
    assert info.macs_per_pixel == 1000  # half the ensemble's
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["sharpcam.students"] == "1"
    assert meta["sharpcam.derived_from"].startswith("student B of ensemble.onnx")
    assert "degraded input PSNR" in meta["sharpcam.test"] and "student B" in meta["sharpcam.test"]
    assert [p.name for p in out.parent.iterdir()] == ["balanced.onnx"]  # no temporary left


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "does not exist"),
        ("not_onnx", "is not an ONNX model"),
        ("single", "not 2: pass an ensemble"),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: str, message: str
) -> None:
    photos = tmp_path / "photos"
    write_photos(photos, 6, height=96, width=128)
    make_split(photos).save(tmp_path / "split.json")
    model = tmp_path / "m.onnx"
    if setup == "not_onnx":
        model.write_bytes(b"not a model")
    elif setup == "single":
        export_model(
            Ensemble([random_student("fast", 0)]), model, metadata={"sharpcam.students": "1"}
        )
    out = tmp_path / "out.onnx"
    argv = ["--model", str(model), "--data", str(photos), "--run", str(tmp_path)]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()
