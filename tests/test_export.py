"""ONNX export: the runtime's contract, metadata, parity, atomic write, loud failure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sharpcam.contract import INPUT_NAME, OUTPUT_NAME
from tests.helpers_training import TinyX2, trained_like
from training.onnx_io import ExportError, export_model, read_metadata
from training.students import Ensemble, SeedStudent


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Ensemble]:
    model = Ensemble([trained_like(0), trained_like(1)])
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    real = torch.rand(1, 3, 48, 64)
    report = export_model(model, path, metadata={"sharpcam.test": "figures"}, real_input=real)
    assert report.parity_real is not None
    assert report.parity_random <= 1e-4 and report.parity_real <= 1e-4
    return path, model


def test_contract(exported: tuple[Path, Ensemble]) -> None:
    path, _ = exported
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == (INPUT_NAME, OUTPUT_NAME)
    for value in (inp, out):
        t = value.type.tensor_type
        assert t.elem_type == onnx.TensorProto.FLOAT
        assert [d.dim_param or d.dim_value for d in t.shape.dim] == [
            "batch", 3, "height", "width"
        ]  # fmt: skip
    assert read_metadata(path) == {"sharpcam.test": "figures"}


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (2, 3, 64, 96), (1, 3, 360, 640)])
def test_ort_matches_torch_on_many_sizes(exported: tuple[Path, Ensemble], shape) -> None:
    path, model = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(*shape)
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    assert got.shape == shape
    assert np.abs(got - expected).max() <= 1e-4
    assert got.min() >= 0 and got.max() <= 1


def test_parity_failure_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.onnx_io as export

    monkeypatch.setattr(export, "max_abs_diff", lambda *a, **k: 0.5)
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous good file")
    with pytest.raises(ExportError, match=r"differs from PyTorch by 5\.00e-01"):
        export_model(Ensemble([SeedStudent()]), path, metadata={})
    assert path.read_bytes() == b"previous good file"
    assert list(tmp_path.iterdir()) == [path]


@pytest.fixture(scope="module")
def exported_x2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Ensemble]:
    torch.manual_seed(0)
    model = Ensemble([TinyX2(), TinyX2()])
    path = tmp_path_factory.mktemp("export") / "x2.onnx"
    report = export_model(
        model, path, metadata={"sharpcam.scale": "2"}, real_input=torch.rand(1, 3, 40, 56)
    )
    assert report.parity_random <= 1e-4 and report.parity_real is not None
    assert report.parity_real <= 1e-4
    return path, model


class TestScale2:
    """An x2 model keeps the names of the contract, with output ``[N, 3, 2H, 2W]``."""

    def test_names_and_shapes(self, exported_x2: tuple[Path, Ensemble]) -> None:
        path, _ = exported_x2
        proto = onnx.load(str(path))
        (inp,), (out,) = proto.graph.input, proto.graph.output
        assert (inp.name, out.name) == (INPUT_NAME, OUTPUT_NAME)
        dims = [
            [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (inp, out)
        ]
        assert dims == [["batch", 3, "height", "width"], ["batch", 3, "height_x2", "width_x2"]]
        assert read_metadata(path) == {"sharpcam.scale": "2"}

    @pytest.mark.parametrize("shape", [(1, 3, 8, 8), (2, 3, 64, 96), (1, 3, 184, 320)])
    def test_ort_matches_torch(self, exported_x2: tuple[Path, Ensemble], shape) -> None:
        path, model = exported_x2
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = torch.rand(*shape)
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        with torch.no_grad():
            expected = model(x).numpy()
        n, c, h, w = shape
        assert got.shape == (n, c, 2 * h, 2 * w)
        assert np.abs(got - expected).max() <= 1e-4
