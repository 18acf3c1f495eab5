"""The task gate's arithmetic (quantize/gate.py) on small cases worked out by hand; the gate on
real runtimes' outputs is checked by the pipeline tests (test_export, test_systems)."""
import numpy as np
import pytest

from ktedge.quantize.gate import NOISE_CAP, gate_tasks, resolution_rel

N, CLASSES, GATE = 300, 6, 0.05


def _near_chance(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labels and a classifier's decisions: 80 of 300 right (26.7 %, near the 1/6 chance)."""
    y = rng.integers(0, CLASSES, N)
    decisions = np.where(np.arange(N) < 80, y, (y + rng.integers(1, CLASSES, N)) % CLASSES)
    return y, decisions


def _logits(decisions: np.ndarray) -> np.ndarray:
    return np.eye(CLASSES)[decisions]


def test_the_resolution_is_two_paired_standard_errors_of_the_metric():
    rng = np.random.default_rng(0)
    y, ref = _near_chance(rng)
    pred = ref.copy()
    pred[:12] = (y[:12] + 1) % CLASSES  # 12 right answers lost, 6 wrong ones put right: 18 faces differ
    pred[100:106] = y[100:106]
    d = (pred == y).astype(float) - (ref == y)
    by_hand = 2 * d.std() / np.sqrt(N) / (ref == y).mean()  # 2 x 0.0141 / 0.267 = 10.6 %
    assert resolution_rel("expression", _logits(pred), _logits(ref), y) == pytest.approx(by_hand, rel=0.15)
    assert resolution_rel("expression", _logits(ref), _logits(ref), y) == 0.0


def test_a_near_chance_classifier_passes_on_noise_but_not_when_it_collapses():
    rng = np.random.default_rng(0)
    y, ref = _near_chance(rng)
    noisy = ref.copy()
    noisy[:12] = (y[:12] + 1) % CLASSES
    noisy[100:106] = y[100:106]
    collapsed = np.full(N, np.bincount(y).argmax())
    gates = {name: gate_tasks(["expression"], [_logits(p)], [_logits(ref)], {"expression": y}, GATE)["expression"]
             for name, p in (("same", ref), ("noisy", noisy), ("collapsed", collapsed))}
    assert gates["same"]["gate_rel"] == GATE and gates["same"]["passed"] and gates["same"]["decisions_agree"] == 1.0
    # 6 faces net of 80 right: 7.5 % drift, over the 5 % gate but under what 300 faces resolve (~10.6 %).
    noisy = gates["noisy"]
    assert noisy["drift_rel"] == pytest.approx(6 / 80) and noisy["resolution_rel"] > noisy["drift_rel"] > GATE
    assert noisy["gate_rel"] == min(noisy["resolution_rel"], NOISE_CAP * GATE) and noisy["passed"]
    assert noisy["decisions_agree"] == pytest.approx(1 - 18 / N)
    # The majority answer moves the metric as much as the faces' noise, but the cap still fails it.
    collapsed = gates["collapsed"]
    assert collapsed["resolution_rel"] > collapsed["gate_rel"] == NOISE_CAP * GATE
    assert collapsed["drift_rel"] > collapsed["gate_rel"] and not collapsed["passed"]


def test_a_consistent_change_is_held_to_the_configured_gate():
    """Every face's error grown by 7 %: the drift is real however small the faces' noise, so the
    gate does not widen and the task fails."""
    rng = np.random.default_rng(0)
    age = rng.uniform(18, 70, N)
    ref = age + rng.normal(0, 6, N)
    row = gate_tasks(["age"], [age + 1.07 * (ref - age)], [ref], {"age": age}, GATE)["age"]
    assert row["drift_rel"] == pytest.approx(0.07) and row["resolution_rel"] < 0.01
    assert row["gate_rel"] == GATE and not row["passed"] and "decisions_agree" not in row
