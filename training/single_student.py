"""One student of a shipped ensemble as a model of its own: the ``balanced`` tier.

``python -m training.single_student --model models/sharpcam.onnx --student a --data PHOTOS
--run RUN --out models/sharpcam-balanced.onnx``

A ``quality`` model is two students averaged (:class:`training.students.Ensemble`); one of
them alone costs half the multiply-adds and keeps most of the gain. This command cuts that
student out of the ONNX graph itself: no checkpoint is needed, and its weights are
exactly the shipped ones.

1. **Cut.** The ensemble's graph ends ``Add(student 0, student 1) -> Div(2) -> Clip``;
   each student's nodes are the ancestors of one ``Add`` input, named by the initializers
   they read (``students.0.*`` is A, ``students.1.*`` B). The new graph clamps the chosen
   student's output; every node and initializer it no longer needs is dropped.
2. **Proof of the cut.** Both students are cut without the clamp and run on ONNX Runtime;
   ``clip((A + B) / 2)`` must equal the ensemble's output (max abs difference ``1e-5``)
   on a random input and on a real test photo. ``onnx.checker`` runs a full check.
3. **Figures.** Mean PSNR and SSIM of the degraded input, the ensemble and the student on
   the run's full TEST photos (``RUN/split.json``), for ``seed`` and, for a model trained on
   the ``call`` mix (its ``sharpcam.degradation``), the low-rate calls. Printed, and stored
   in the metadata (``sharpcam.test``) beside ``sharpcam.tier`` (``balanced``),
   ``sharpcam.macs_per_pixel`` (half the ensemble's), ``sharpcam.students`` 1 and
   ``sharpcam.derived_from``. The file is written atomically.

Which student is a choice to make before measuring (the fast tiers' rule, the larger
validation SSIM gain, needs the run's checkpoints); the figures of both are printed so the
choice can be reported.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from tqdm import tqdm

from sharpcam.atomic import atomic_write_bytes
from sharpcam.contract import INPUT_NAME
from training.data import DataError, Split, read_rgb
from training.metrics import image_scores
from training.quantize import cpu_session, degraded_pair, model_scale, to_input, trained_on_call

STUDENTS = ("a", "b")
#: Largest difference accepted between the ensemble and the mean of its cut students.
CUT_ATOL = 1e-5


class SingleStudentError(RuntimeError):
    """The model cannot be cut or a file is missing; one line naming the problem and fix."""


@dataclass(frozen=True)
class Score:
    """Mean PSNR (dB) and SSIM over the test photos for one degradation."""

    degradation: str
    images: int
    psnr: dict[str, float]  # "input", "ensemble", "a", "b"
    ssim: dict[str, float]

    def line(self, student: str) -> str:
        base, ens, one = (self.psnr[k] for k in ("input", "ensemble", student))
        d_ssim = {k: self.ssim[k] - self.ssim["input"] for k in ("ensemble", student)}
        share = (
            f"{(one - base) / (ens - base):.0%} of the ensemble's gain"
            if ens > base
            else "the ensemble has no gain to share"
        )
        return (
            f"{self.degradation} on {self.images} test photos: degraded input "
            f"{base:.2f} dB SSIM {self.ssim['input']:.4f}; ensemble {ens - base:+.2f} dB "
            f"({d_ssim['ensemble']:+.4f}); student {student.upper()} {one - base:+.2f} dB "
            f"({d_ssim[student]:+.4f}), {share}"
        )


def _producer(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _ancestors(graph: onnx.GraphProto, names: Sequence[str]) -> list[onnx.NodeProto]:
    """The nodes needed to compute ``names``, in the graph's (topological) order."""
    producer, needed, todo = _producer(graph), set(), list(names)
    while todo:
        node = producer.get(todo.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            todo += list(node.input)
    return [n for n in graph.node if id(n) in needed]


def _ensemble_tail(graph: onnx.GraphProto) -> tuple[onnx.NodeProto, dict[int, str]]:
    """The final ``Clip`` and, per student index, the ``Add`` input that is its output."""
    producer = _producer(graph)
    clip = producer.get(graph.output[0].name)
    div = producer.get(clip.input[0]) if clip is not None and clip.op_type == "Clip" else None
    add = producer.get(div.input[0]) if div is not None and div.op_type == "Div" else None
    if add is None or add.op_type != "Add":
        raise SingleStudentError(
            "the graph does not end in Add -> Div -> Clip: pass a two-student ensemble "
            "exported by training.export"
        )
    initializers = {i.name for i in graph.initializer}
    owners: dict[int, str] = {}
    for name in add.input:
        used = {i for n in _ancestors(graph, [name]) for i in n.input if i in initializers}
        index = {int(i.split(".")[1]) for i in used if i.startswith("students.")}
        if len(index) != 1:
            raise SingleStudentError(
                "cannot tell the students apart in the graph (initializers named "
                "students.N.*): pass a two-student ensemble exported by training.export"
            )
        owners[index.pop()] = name
    if sorted(owners) != [0, 1]:
        raise SingleStudentError("the ensemble does not hold students 0 and 1: pass another model")
    return clip, owners


def cut(model: onnx.ModelProto, student: str, *, clamp: bool = True) -> onnx.ModelProto:
    """A copy of ``model`` computing only ``student`` (``"a"`` or ``"b"``), clamped like the
    ensemble (or not, ``clamp=False``). Metadata is copied unchanged."""
    if student not in STUDENTS:
        raise SingleStudentError(f"--student {student}: pass a or b")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    clip, owners = _ensemble_tail(graph)
    output = graph.output[0].name
    source = owners[STUDENTS.index(student)]
    if clamp:
        clip.input[0] = source
        keep = _ancestors(graph, [output])
    else:
        keep = _ancestors(graph, [source])
        for node in keep:  # the student's last node now writes the graph's output
            node.output[:] = [output if o == source else o for o in node.output]
    used = {i for n in keep for i in n.input}
    initializers = [i for i in graph.initializer if i.name in used]
    del graph.node[:]
    graph.node.extend(keep)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    known = {o for n in keep for o in n.output}
    infos = [v for v in graph.value_info if v.name in known]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    return out


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return cpu_session(model.SerializeToString())


def prove_cut(model: onnx.ModelProto, inputs: Sequence[np.ndarray]) -> float:
    """Max abs difference between the ensemble and ``clip((A + B) / 2)`` of its cut students.

    Raises:
        SingleStudentError: above :data:`CUT_ATOL` (the cut is wrong).
    """
    whole = _session(model)
    halves = [_session(cut(model, s, clamp=False)) for s in STUDENTS]
    worst = 0.0
    for x in inputs:
        (ens,) = whole.run(None, {INPUT_NAME: x})
        a, b = (h.run(None, {INPUT_NAME: x})[0] for h in halves)
        worst = max(worst, float(np.abs(np.clip((a + b) / 2, 0, 1) - ens).max()))
    if not worst <= CUT_ATOL:
        raise SingleStudentError(
            f"the cut students do not add up to the ensemble (max abs difference "
            f"{worst:.1e}): this graph is not a plain two-student ensemble"
        )
    return worst


def _pixels(session: ort.InferenceSession, image: np.ndarray) -> np.ndarray:
    (out,) = session.run(None, {INPUT_NAME: to_input(image)})
    return np.clip(out[0].transpose(1, 2, 0) * 255.0, 0, 255).round().astype(np.uint8)


def degradations_of(model: onnx.ModelProto) -> list[str]:
    """``seed``, plus the low-rate calls for a model trained on the ``call`` mix."""
    meta = {p.key: p.value for p in model.metadata_props}
    calls = trained_on_call(meta.get("sharpcam.degradation", "seed"))
    return ["seed"] + (["call-h264-low", "call-vp8-low"] if calls else [])


def score(
    model: onnx.ModelProto, data: Path, names: Sequence[str], degradations: Sequence[str]
) -> list[Score]:
    """PSNR and SSIM of the degraded input, the ensemble and each student on the photos, one
    :class:`Score` per degradation (each photo read once, each model opened once)."""
    scale = model_scale(model)
    sessions = {"ensemble": _session(model), **{s: _session(cut(model, s)) for s in STUDENTS}}
    keys = ("input", *sessions)
    psnr: dict[str, dict[str, list[float]]] = {d: {k: [] for k in keys} for d in degradations}
    ssim: dict[str, dict[str, list[float]]] = {d: {k: [] for k in keys} for d in degradations}
    for name in tqdm(names, desc="score", unit="photo", leave=False):
        image = read_rgb(data / name)
        if image is None:
            raise SingleStudentError(f"test photo {data / name} cannot be read: restore it")
        for d in degradations:
            degraded, baseline, truth = degraded_pair(image, d, scale)
            outputs = {"input": baseline} | {k: _pixels(s, degraded) for k, s in sessions.items()}
            for key, out in outputs.items():
                p, q = image_scores(out, truth)
                psnr[d][key].append(p)
                ssim[d][key].append(q)
    return [
        Score(
            d,
            len(names),
            {k: float(np.mean(v)) for k, v in psnr[d].items()},
            {k: float(np.mean(v)) for k, v in ssim[d].items()},
        )
        for d in degradations
    ]


def derive(
    model_path: Path, student: str, data: Path, run: Path, out: Path, tier: str = "balanced"
) -> list[Score]:
    """Cut, prove, score and write ``out``; returns the scores (both students').

    Raises:
        SingleStudentError, DataError: bad input; nothing is written then.
    """
    if not model_path.is_file():
        raise SingleStudentError(
            f"model {model_path} does not exist: pass --model with an ONNX file"
        )
    split_path = run / "split.json"
    if not split_path.is_file():
        raise SingleStudentError(
            f"{split_path} does not exist: pass --run with a training run folder"
        )
    raw = model_path.read_bytes()
    try:
        model = onnx.load_from_string(raw)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise SingleStudentError(
            f"{model_path} is not an ONNX model ({exc}): pass another file"
        ) from exc
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("sharpcam.students", "2") != "2":
        raise SingleStudentError(
            f"{model_path} holds {meta['sharpcam.students']} student(s), not 2: pass an ensemble"
        )
    if student not in STUDENTS:
        raise SingleStudentError(f"--student {student}: pass a or b")
    split = Split.load(split_path)
    split.verify(data)
    first = read_rgb(data / split.test[0])
    if first is None:
        raise SingleStudentError(f"test photo {data / split.test[0]} cannot be read: restore it")
    crop = degraded_pair(first[:256, :384], "seed", model_scale(model))[0]
    rng = np.random.default_rng(0)
    prove_cut(model, [rng.random((1, 3, 64, 96), dtype=np.float32), to_input(crop)])
    scores = score(model, data, split.test, degradations_of(model))

    single = cut(model, student)
    seed_score = scores[0]
    base, one = seed_score.psnr["input"], seed_score.psnr[student]
    macs = meta.get("sharpcam.macs_per_pixel")
    updates = {
        "sharpcam.tier": tier,
        "sharpcam.students": "1",
        "sharpcam.derived_from": (
            f"student {student.upper()} of {model_path.name} (sha256 "
            f"{hashlib.sha256(raw).hexdigest()[:12]}), cut by training.single_student"
        ),
        "sharpcam.test": (
            f"degraded input PSNR {base:.2f} dB SSIM {seed_score.ssim['input']:.4f}; student "
            f"{student.upper()} PSNR {one:.2f} dB ({one - base:+.2f}) SSIM "
            f"{seed_score.ssim[student]:.4f} "
            f"({seed_score.ssim[student] - seed_score.ssim['input']:+.4f}) on "
            f"{seed_score.images} full test images (seed degradation)"
        ),
    }
    if macs is not None:
        updates["sharpcam.macs_per_pixel"] = f"{float(macs) / 2:.0f}"
    kept = [p for p in single.metadata_props if p.key not in updates]
    del single.metadata_props[:]
    single.metadata_props.extend(kept)
    for key, value in updates.items():
        entry = single.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        onnx.checker.check_model(single, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise SingleStudentError(f"onnx.checker rejected the cut graph: {exc}") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, single.SerializeToString())
    return scores


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m training.single_student``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m training.single_student", description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="two-student ONNX ensemble")
    parser.add_argument("--student", default="a", choices=STUDENTS, help="which one (default a)")
    parser.add_argument("--data", type=Path, required=True, help="folder of the run's photos")
    parser.add_argument("--run", type=Path, required=True, help="run folder (split.json)")
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--tier", default="balanced", choices=("balanced", "fast"))
    args = parser.parse_args(argv)
    try:
        scores = derive(args.model, args.student, args.data, args.run, args.out, args.tier)
    except (SingleStudentError, DataError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for s in scores:
        for student in STUDENTS:
            print(s.line(student))
    print(f"wrote {args.out} (student {args.student.upper()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
