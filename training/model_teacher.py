"""A sharpcam model as the frozen teacher: an exported ONNX file or a student checkpoint.

``python -m training.distill --teacher-model FILE`` distils from a sharpcam model instead
of Restormer (for example the ``quality`` ensemble teaching a ``fast`` student). ``FILE``
is an exported ``.onnx`` (run by ONNX Runtime, checked against the runtime's contract) or
a student checkpoint such as ``RUN/student_a/best.pt`` (run by PyTorch). The teacher is
frozen and its outputs go through the same disk cache as Restormer's
(:class:`training.teacher.TeacherCache`), under ``sharpcam-<sha256 of FILE>``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sharpcam.contract import INPUT_NAME, MULTIPLE, OUTPUT_NAME, contract_problem
from training.checkpoints import load_student
from training.config import RunError
from training.modes import model_scale
from training.weights import file_sha256

#: ``frames (N,3,H,W) float32 in [0,1], H and W multiples of 8`` -> ``(N,3,sH,sW)``.
Runner = Callable[[torch.Tensor], torch.Tensor]

_FIX = "pass an exported sharpcam .onnx or a student's best.pt"


class ModelTeacher:
    """A frozen sharpcam model run for targets, with :class:`training.teacher.Teacher`'s
    interface (``checkpoint_hash``, ``scale``, ``__call__``, ``enhance_uint8``).

    Args:
        run: the model on padded frames (see :data:`Runner`).
        scale: its output/input size ratio.
        checkpoint_hash: hex SHA-256 of the file, part of every cache path.
        path: the file, for messages.
        device: where inputs are put for ``run``.
    """

    kind = "sharpcam"

    def __init__(
        self, run: Runner, *, scale: int, checkpoint_hash: str, path: Path, device: torch.device
    ) -> None:
        self._run = run
        self.scale = scale
        self.path = path
        self.device = device
        self._hash = checkpoint_hash

    @property
    def checkpoint_hash(self) -> str:
        return self._hash

    def describe(self) -> str:
        """One line for reports and model metadata."""
        return f"sharpcam model {self.path.name} (x{self.scale}, sha256 {self._hash[:12]}...)"

    def __call__(self, frames: torch.Tensor, *, tile: int | None = None) -> torch.Tensor:
        """``(N,3,H,W)`` float in ``[0,1]``, any H and W -> ``(N,3,sH,sW)`` clamped, on the
        device of ``frames``. ``tile`` is accepted for :class:`Teacher`'s interface and
        ignored: a sharpcam model is small enough for whole images."""
        del tile
        h, w = frames.shape[-2:]
        x = frames.to(self.device, torch.float32)
        ph, pw = -h % MULTIPLE, -w % MULTIPLE
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        with torch.inference_mode():
            out = self._run(x)[..., : h * self.scale, : w * self.scale].clamp(0.0, 1.0)
        out = out.to(frames.device)
        return out.clone() if out.is_inference() else out

    def enhance_uint8(self, patches: np.ndarray) -> np.ndarray:
        """``NxHxWx3 uint8`` -> ``NxsHxsWx3 float32`` in ``[0, 1]`` (CPU)."""
        # cached call frames are read-only memory maps: torch wants a writable array
        frames = torch.from_numpy(np.require(patches, requirements=["C", "W"])).permute(0, 3, 1, 2)
        out = self(frames.float().div_(255.0))
        return out.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def onnx_runner(path: Path, device: torch.device) -> Runner:
    """ONNX Runtime on ``path`` (CUDA when ``device`` is a GPU and the provider exists)."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # ORT raises its own exception types for bad files
        raise RunError(f"teacher model {path} is not a readable ONNX file ({exc}); {_FIX}") from exc
    problem = contract_problem(session.get_inputs(), session.get_outputs())
    if problem is not None:
        raise RunError(f"teacher model {path} is not a sharpcam model: {problem}; {_FIX}")

    def run(x: torch.Tensor) -> torch.Tensor:
        out = session.run([OUTPUT_NAME], {INPUT_NAME: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(out)

    return run


def torch_runner(path: Path, device: torch.device) -> tuple[Runner, int]:
    """A student checkpoint run by PyTorch, and its scale."""
    try:
        model = load_student(path)
    except (KeyError, TypeError) as exc:
        raise RunError(f"teacher model {path} is not a student checkpoint ({exc}); {_FIX}") from exc
    model = model.to(device).requires_grad_(False)
    return model, model_scale(model)


def load_model_teacher(path: str | Path, device: torch.device) -> ModelTeacher:
    """The sharpcam model in ``path`` as a frozen teacher.

    Raises:
        RunError: one line: the file is missing, unreadable, or not a sharpcam model.
    """
    file = Path(path)
    if not file.is_file():
        raise RunError(f"teacher model {file} does not exist; {_FIX}")
    if file.suffix.lower() == ".onnx":
        run = onnx_runner(file, device)
        with torch.inference_mode():
            probe = run(torch.zeros(1, 3, MULTIPLE, MULTIPLE))
        scale = probe.shape[-1] // MULTIPLE
    else:
        run, scale = torch_runner(file, device)
    if scale not in (1, 2):
        raise RunError(f"teacher model {file} has scale {scale}; only 1 and 2 are supported")
    digest = file_sha256(file)
    return ModelTeacher(run, scale=scale, checkpoint_hash=digest, path=file, device=device)
