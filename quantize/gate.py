"""The task gate an int8 (or any exported) program must pass against the fp32 deploy graph.

A task passes when its metric's relative drift from fp32 is within `quantize.max_drift_rel`,
widened to what the held-out faces can resolve: two standard errors of the paired difference
(same faces, bootstrap over faces), at most NOISE_CAP times the configured gate. Why: a
near-chance classifier moves by a face or two with any change (Faceptor's expression, 26.7 % on
300 faces: one face is 1.25 % relative, and int8 flips ~20 near-tied decisions both ways), so a
fixed 5 % gate flips on noise and the float fallback chases it. The cap keeps a head that
collapsed failing: that expression head answering the majority class drifts 20 %.

A task whose labels are another model's outputs (a port held to its original: FaceMesh against
MediaPipe's file) is gated on the metric itself, `bound` (e.g. points within 2 % of the eye
distance): its fp32 value is near zero, so a relative drift means nothing and is not reported.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ktedge.model.tasks import TASKS, drift_rel

BOOTSTRAP = 200
NOISE_CAP = 2.0

# The decision a classification output stands for, to count how often int8 changes it.
DECISIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "expression": lambda y: y.argmax(-1),
    "face": lambda y: y.argmax(-1),
    "attributes": lambda y: y > 0,
    "action_units": lambda y: y > 0,
}


def resolution_rel(task: str, pred: np.ndarray, ref: np.ndarray, target: np.ndarray, seed: int = 0) -> float:
    """Two standard errors of metric(pred) - metric(ref) over faces drawn with replacement,
    relative to the fp32 metric: the smallest drift these faces can tell from noise."""
    metric = TASKS[task].metric
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, len(target), len(target))
        diffs.append(metric(pred[i], target[i]) - metric(ref[i], target[i]))
    return float(2 * np.std(diffs) / abs(metric(ref, target)))


def gate_tasks(tasks: list[str], outputs: list[np.ndarray], ref_outputs: list[np.ndarray],
               targets: dict[str, np.ndarray], max_drift_rel: float | dict[str, float],
               bounds: dict[str, float] | None = None) -> dict[str, dict]:
    """Per task: its metric for the program and for fp32, the drift, the resolution, the gate
    this drift is held to (`max_drift_rel`, or its value for that task) and whether it passes, or
    for a task in `bounds` the bound its metric is held to (at most; at least where higher is
    better); for a classification task, how often the program's decisions agree with fp32's."""
    rows = {}
    for task, pred, ref in zip(tasks, outputs, ref_outputs):
        metric, target = TASKS[task].metric, targets[task]
        pred, ref = as_labelled(pred, target), as_labelled(ref, target)
        fp32, value = metric(ref, target), metric(pred, target)
        if bounds and task in bounds:
            bound, at_most = bounds[task], TASKS[task].lower_is_better
            rows[task] = {"metric": TASKS[task].metric_name, "fp32": fp32, "value": value, "drift_rel": None,
                          "bound": bound, "bound_is": "max" if at_most else "min",
                          "passed": bool(value <= bound if at_most else value >= bound)}
            continue
        noise = resolution_rel(task, pred, ref, target)
        base = max_drift_rel[task] if isinstance(max_drift_rel, dict) else max_drift_rel
        gate = min(max(base, noise), NOISE_CAP * base)
        drift = drift_rel(value, fp32)
        rows[task] = {"metric": TASKS[task].metric_name, "fp32": fp32, "value": value, "drift_rel": drift,
                      "resolution_rel": noise, "gate_rel": gate, "passed": drift <= gate}
        if task in DECISIONS:
            rows[task]["decisions_agree"] = float(np.mean(DECISIONS[task](pred) == DECISIONS[task](ref)))
    return rows


def as_labelled(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """An output in its labels' shape where they hold as many values per face (points (N, 136) as
    (N, 68, 2), an age (N, 1) as (N,)); class scores stay per class against a class index."""
    per_face = int(np.prod(target.shape[1:]))
    return pred.reshape(target.shape) if pred[0].size == per_face else pred


def all_passed(rows: dict[str, dict]) -> bool:
    """A program passes when every task passes its gate."""
    return all(r["passed"] for r in rows.values())


def worst_drift(rows: dict[str, dict]) -> float | None:
    """The drift a multi-task program reports in one number: the task that drifted most (None
    where every task is held to a bound instead)."""
    drifts = [r["drift_rel"] for r in rows.values() if r["drift_rel"] is not None]
    return max(drifts) if drifts else None


def bound_text(row: dict) -> str:
    return f"bound {'<=' if row['bound_is'] == 'max' else '>='} {row['bound']:.2f}"


def gate_text(row: dict) -> str:
    """A task's gate row for a person: `7.04 (0.9% of 5.0%)`, or `1.31 (bound <= 2.00)`."""
    if row.get("bound") is not None:
        return f"{row['value']:.2f} ({bound_text(row)})"
    return f"{row['value']:.2f} ({100 * row['drift_rel']:.1f}% of {100 * row['gate_rel']:.1f}%)"
