"""``--init FILE``: start the students from trained weights instead of a random draw.

Fine-tuning starts a run from what a shipped model already learned (the deblock model
started from ``sharpcam.onnx``'s students). ``FILE`` is an exported sharpcam ``.onnx``
(student A starts from the graph's ``students.0`` weights, B from ``students.1``; a
one-student file starts both), a training run's folder (A from its ``student_a/best.pt``,
B from ``student_b/best.pt``: the way to fine-tune students whose exported graph folds a
layer, as the ``fast`` and x2 students' zero-sum first layer), or a student's
``best.pt``/``last.pt`` (both students start from it). The architecture must be the run's
``--student`` with the same sizes: any missing or misshapen weight is one line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.checkpoints import load_checkpoint
from training.config import RunError


def _onnx_students(path: Path) -> dict[int, dict[str, np.ndarray]]:
    """The ensemble's weights per student index, by parameter name."""
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:
        raise RunError(f"--init {path} is not a readable ONNX file ({exc})") from exc
    students: dict[int, dict[str, np.ndarray]] = {}
    for tensor in graph.initializer:
        head, _, rest = tensor.name.partition(".")
        index, _, name = rest.partition(".")
        if head == "students" and index.isdigit() and name:
            students.setdefault(int(index), {})[name] = numpy_helper.to_array(tensor)
    if not students:
        raise RunError(
            f"--init {path} holds no sharpcam student weights (no 'students.N.*' "
            "initializers): pass a model exported by training.export or a best.pt"
        )
    return students


def initial_state(path: str | Path, which: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict that student ``which`` ("a" or "b") of ``model``'s architecture starts
    from; :class:`RunError` when ``path`` does not fit that architecture."""
    path = Path(path)
    if path.is_dir():
        checkpoint = path / f"student_{which}" / "best.pt"
        if not checkpoint.is_file():
            raise RunError(
                f"--init {path} is a folder without {checkpoint.relative_to(path)}: pass a "
                "training run's folder (student_a/ and student_b/ with best.pt)"
            )
        path = checkpoint
    if path.suffix == ".onnx":
        students = _onnx_students(path)
        index = 1 if which == "b" and 1 in students else 0
        source = {k: torch.from_numpy(v.copy()) for k, v in students[index].items()}
    else:
        saved = load_checkpoint(path)
        if not isinstance(saved, dict) or "model" not in saved:
            raise RunError(f"--init {path} is not a student checkpoint (no 'model' entry)")
        source = saved["model"]
    state = model.state_dict()
    missing = [name for name in state if name not in source]
    if missing:
        raise RunError(
            f"--init {path} has no weight {missing[0]!r} for this --student: pass weights of "
            "the same architecture and sizes, or the student's best.pt (an ONNX graph folds "
            "some heads), or drop --init"
        )
    for name, tensor in state.items():
        if tuple(source[name].shape) != tuple(tensor.shape):
            raise RunError(
                f"--init {path}: weight {name!r} is {tuple(source[name].shape)}, this --student "
                f"needs {tuple(tensor.shape)}: pass the same --width/--depth (or drop --init)"
            )
    return {name: source[name].to(tensor.dtype) for name, tensor in state.items()}
