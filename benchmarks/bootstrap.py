"""Paired bootstrap interval of a metric difference between two trained models on the same faces.

Each arm is a (seeds, faces) matrix of per-face metric values (NME, absolute age error, fraction
of attributes right), so the metric of one seed is a row mean and the table's figure is the mean
over seeds. Why faces *and* seeds are resampled: the question is whether training a KT-Adapter
(with any seed) beats the alternative, not whether one lucky seed does; averaging predictions
over seeds instead would measure a seed ensemble that nobody deploys. Faces are resampled paired
(the same faces for both arms, which removes the faces' own difficulty from the difference);
seeds are resampled within each arm, independently (the arms' seeds are not the same models).
An arm with one model (the run's canonical decoder) contributes face noise only.
"""
from __future__ import annotations

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95


def paired_interval(a: np.ndarray, b: np.ndarray, lower_is_better: bool, names: tuple[str, str],
                    resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Interval of mean(a) - mean(b), a and b (seeds, faces) per-face values on the same faces.

    `significant` only where the 95 % interval excludes 0; `favours` names the better arm then."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired arms need the same faces: {a.shape[1]} vs {b.shape[1]}")
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    faces = rng.multinomial(n, np.full(n, 1 / n), size=resamples) / n  # (R, N) face weights

    def arm(x: np.ndarray) -> np.ndarray:
        s = x.shape[0]
        seeds = rng.multinomial(s, np.full(s, 1 / s), size=resamples) / s  # (R, S) seed weights
        return ((seeds @ x) * faces).sum(1)  # (R,)

    diffs = arm(a) - arm(b)
    lo, hi = np.quantile(diffs, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    estimate = float(a.mean() - b.mean())
    significant = bool(lo > 0 or hi < 0)
    first_better = (estimate < 0) == lower_is_better
    return {"difference": f"{names[0]} - {names[1]}", "mean": estimate, "lo": float(lo), "hi": float(hi),
            "level": LEVEL, "significant": significant, "better": "lower" if lower_is_better else "higher",
            "favours": (names[0] if first_better else names[1]) if significant else None,
            "faces": n, "seeds": [a.shape[0], b.shape[0]], "resamples": resamples}
