"""The layout of ``training/``: imports flow one way (no cycle), and the CLI's argument
checks need no torch."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_imports_have_no_cycle() -> None:
    graph_tools = load_script("import_graph")
    graph = graph_tools.import_graph("training", REPO)
    assert {"config", "train", "run", "distill", "evaluate", "export"} <= set(graph)
    assert graph_tools.find_cycle(graph) is None


def test_cycle_finder_finds_a_cycle() -> None:
    graph_tools = load_script("import_graph")
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert graph_tools.find_cycle(graph) == ["a", "b", "c", "a"]


def test_bottom_modules_import_nothing_above_them() -> None:
    graph = load_script("import_graph").import_graph("training", REPO)
    top = {"distill", "evaluate", "export", "run", "finish", "train"}
    for bottom in ("config", "data", "degradations", "losses", "metrics", "students"):
        assert not graph[bottom] & top, (bottom, graph[bottom])
    assert not graph["train"] & {"run", "finish", "distill", "evaluate", "export"}


def test_cli_modules_load_without_torch() -> None:
    code = (
        "import sys; import training.distill, training.config; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_modes_and_tiers_match_the_runtime() -> None:
    import sharpcam.models
    import training.modes

    assert training.modes.MODES == sharpcam.models.MODE_SCALES
    assert training.modes.TIERS == sharpcam.models.TIERS
