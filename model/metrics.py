"""Task metrics on held-out faces (numpy in, float out)."""
from __future__ import annotations

import numpy as np

from ktedge.model.data.synth import OUTER_EYE_CORNERS, REGIONS


def nme(pred: np.ndarray, gt: np.ndarray, points: range | None = None,
        eye_corners: tuple[int, int] = OUTER_EYE_CORNERS) -> float:
    """Mean point error / inter-ocular distance (the outer eye corners), in percent. (N, K, 2) each."""
    a, b = eye_corners
    iod = np.linalg.norm(gt[:, a] - gt[:, b], axis=-1)  # (N,)
    err = np.linalg.norm(pred - gt, axis=-1)  # (N, K)
    if points is not None:
        err = err[:, list(points)]
    return float(100 * np.mean(err.mean(1) / iod))


def nme_mesh(pred: np.ndarray, gt: np.ndarray) -> float:
    """FaceMesh's 468 points: mean x, y error / the outer eye corners' distance, in percent.
    pred (N, 1404) or (N, 468, 3) (x, y, z), gt (N, 468, 2)."""
    from ktedge.model.align import points_of
    from ktedge.model.facemesh import LEFT_EYE_CORNERS, RIGHT_EYE_CORNERS

    return nme(points_of("points_xyz", pred), gt, eye_corners=(RIGHT_EYE_CORNERS[0], LEFT_EYE_CORNERS[0]))


def recall_iou50(pred: np.ndarray, gt: np.ndarray) -> float:
    """Of the reference faces, the percentage a detector finds: a face after its threshold and
    weighted NMS overlapping the reference box by IoU >= 0.5. pred (N, 896, 17) decoded anchors
    (model/blazeface.py), gt (N, F, 4) reference boxes, NaN-padded."""
    import torch

    from ktedge.model.blazeface import box_iou, faces_in

    found = total = 0
    for p, boxes in zip(pred, gt):
        ref = torch.from_numpy(boxes[~np.isnan(boxes).any(axis=1)])
        total += len(ref)
        got = faces_in(p)[0]
        if len(ref) and len(got):
            found += sum(bool(box_iou(r, got).max() >= 0.5) for r in ref)
    return float(100 * found / max(total, 1))


def nme_by_region(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    return {name: nme(pred, gt, idx) for name, idx in REGIONS.items()}


def mae(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - gt)))


def mean_accuracy(logits: np.ndarray, gt: np.ndarray) -> float:
    """Mean over binary labels of the accuracy of logit > 0, in percent."""
    return float(100 * np.mean(((logits > 0) == (gt > 0.5)).mean(0)))


def mean_f1(logits: np.ndarray, gt: np.ndarray) -> float:
    """Mean over labels of F1 (percent); a label with no positives and none predicted scores 100."""
    p, g = logits > 0, gt > 0.5
    tp = (p & g).sum(0)
    denom = p.sum(0) + g.sum(0)
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)
    return float(100 * f1.mean())


def accuracy(logits: np.ndarray, gt: np.ndarray) -> float:
    return float(100 * np.mean(logits.argmax(-1) == gt))


def verification_accuracy(emb: np.ndarray, ids: np.ndarray) -> float:
    """Best-threshold balanced accuracy of same/different decisions over all pairs, in percent."""
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    iu = np.triu_indices(len(e), 1)
    sim = (e @ e.T)[iu]
    same = (ids[:, None] == ids[None, :])[iu]
    if same.all() or not same.any():
        raise ValueError("verification needs both same-identity and different-identity pairs")
    order = np.argsort(-sim)
    tpr = np.cumsum(same[order]) / same.sum()  # accept the top-k most similar pairs
    tnr = 1 - np.cumsum(~same[order]) / (~same).sum()
    return float(100 * np.max((tpr + tnr) / 2))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (probability a positive outscores a negative; ties count half)."""
    pos, neg = scores[labels > 0.5], scores[labels <= 0.5]
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)
