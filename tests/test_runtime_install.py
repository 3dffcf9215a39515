"""The runtime install has no torch: importing ``sharpcam`` and running its commands must
never import torch (nor ``training``, which needs it). ``.ci/run`` also checks this in a
venv made by ``scripts/setup.sh`` without flags; here torch is blocked in a subprocess."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_media import make_clip
from helpers_models import unsharp_model

import sharpcam

PACKAGE = Path(sharpcam.__file__).parent
HEAVY = ("torch", "torchvision", "training", "pytorch_msssim", "matplotlib")

BLOCKED_RUN = """
import importlib, sys
for name in {heavy!r}:
    sys.modules[name] = None  # `import name` now fails, as in the runtime install
from sharpcam import cli
code = cli.main(sys.argv[1:])
for module, _ in cli.COMMANDS.values():  # every subcommand's module imports too
    importlib.import_module(module)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r} and sys.modules[m])
print("loaded:", loaded)
sys.exit(code)
"""


def test_no_module_imports_torch_or_training() -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in HEAVY, f"{path.name}:{node.lineno} imports {name}"


@pytest.mark.slow
def test_file_run_with_torch_blocked(tmp_path: Path) -> None:
    clip, out = tmp_path / "call.mp4", tmp_path / "sharp.mp4"
    make_clip(clip, frames=6, width=64, height=48)
    model = unsharp_model(tmp_path / "unsharp.onnx")
    argv = ["--input", clip, "--output", out, "--compare", "--model", model, "--no-progress"]
    done = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN.format(heavy=HEAVY), *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "loaded: []" in done.stdout
    assert out.is_file() and (tmp_path / "sharp.compare.png").is_file()
