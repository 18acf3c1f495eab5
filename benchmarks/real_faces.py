"""How far a 68-point landmark artifact's points are from a real face's: on real photos, its eye
centres and mouth corners against MediaPipe's FaceMesh (another model's output, not a human label:
model/facemesh.py, held equal to MediaPipe's own file in LiteRT), in percent of FaceMesh's
inter-ocular distance. Only the points both models define without ambiguity are compared (the eye
centres as the mean of each eye's contour, the two mouth corners): no published 468 -> 68 mapping
agrees on the jaw and nose.

    python -m ktedge.benchmarks.real_faces --out runs/default [--artifact tflite-int8 ...]

Photos: scikit-image's astronaut (one real face, 512 px), mirrored and turned +-20 degrees: one
identity, the only real face photo available offline at that size. Writes
DIR/bench/real_faces.json and prints the table."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ktedge.atomic import write_json
from ktedge.benchmarks.report import refresh_report
from ktedge.errors import KtedgeError
from ktedge.export.predict import aligned_input, find_faces
from ktedge.export.preprocess import decode
from ktedge.export.runtimes import open_runner
from ktedge.model.facemesh import LEFT_EYE, MOUTH_CORNERS, RIGHT_EYE, face_mesh, facemesh
from ktedge.model.tasks import TASKS

IBUG_MOUTH_CORNERS = (48, 54)  # subject's right, left


def photos() -> dict[str, np.ndarray]:
    from skimage import data, transform

    a = data.astronaut()
    turn = {f"turned {d:+d} deg": transform.rotate(a, d, preserve_range=True).round().astype(np.uint8)
            for d in (-20, 20)}
    return {"astronaut": a, "mirrored": a[:, ::-1].copy(), **turn}


def key_points(points68: np.ndarray) -> np.ndarray:
    """(68, 2) iBUG points -> (4, 2): right eye centre, left eye centre, mouth corners."""
    right, left = (points68[list(e)].mean(axis=0) for e in TASKS["landmarks"].eye_centres)
    return np.stack([right, left, *points68[list(IBUG_MOUTH_CORNERS)]])


def mesh_points(mesh: np.ndarray) -> np.ndarray:
    """(468, 3) FaceMesh points -> the same (4, 2)."""
    return np.stack([mesh[list(RIGHT_EYE), :2].mean(axis=0), mesh[list(LEFT_EYE), :2].mean(axis=0),
                     *mesh[list(MOUTH_CORNERS), :2]])


def measure(out: Path, artifacts: list[str]) -> dict:
    mesh_model = facemesh()
    runners = {name: open_runner(out / "export" / name) for name in artifacts}
    rows: dict[str, list[dict]] = {a: [] for a in artifacts}
    for photo_name, photo in photos().items():
        for det in find_faces(photo, 48):
            mesh, presence = face_mesh(mesh_model, photo, det)
            ref = mesh_points(mesh)
            iod = float(np.linalg.norm(ref[1] - ref[0]))
            for name, runner in runners.items():
                manifest = runner.manifest
                x, m = aligned_input(photo, manifest["preprocessing"]["alignment"], det.keypoint("right_eye"),
                                     det.keypoint("left_eye"))
                answers = decode(runner(x), manifest, m)
                pts = next(np.asarray(answers[o["name"]]) for o in manifest["outputs"] if o.get("task") == "landmarks")
                err = np.linalg.norm(key_points(pts) - ref, axis=1) / iod * 100
                rows[name].append({"photo": photo_name, "face_px": float(det.box[2] - det.box[0]),
                                   "facemesh_presence": presence, "inter_ocular_px": iod,
                                   "error_pct": {"right_eye": err[0], "left_eye": err[1],
                                                 "mouth_right": err[2], "mouth_left": err[3]},
                                   "mean_pct": float(err.mean())})
    return {"reference": "MediaPipe FaceMesh (model/facemesh.py; another model's output, not human labels)",
            "points": "eye centres (mean of each eye's contour) and mouth corners, % of FaceMesh's inter-ocular "
                      "distance",
            "photos": list(photos()), "artifacts": {
                name: {"faces": len(r), "mean_pct": float(np.mean([x["mean_pct"] for x in r])) if r else None,
                       "faces_detail": r} for name, r in rows.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="a landmark artifact's points against FaceMesh's on real photos")
    p.add_argument("--out", type=Path, required=True, help="a run directory with export/")
    p.add_argument("--artifact", action="append", help="artifact name under export/ (default: tflite-fp32, "
                                                        "tflite-int8)")
    args = p.parse_args(argv)
    try:
        result = measure(args.out, args.artifact or ["tflite-fp32", "tflite-int8"])
    except KtedgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_json(args.out / "bench" / "real_faces.json", result)
    refresh_report(args.out)
    for name, r in result["artifacts"].items():
        print(f"{name}: {r['faces']} real faces, mean error {r['mean_pct']:.1f} % of the inter-ocular distance")
        for f in r["faces_detail"]:
            e = f["error_pct"]
            print(f"  {f['photo']:<16} face {f['face_px']:.0f} px: eyes {e['right_eye']:.1f} / {e['left_eye']:.1f}, "
                  f"mouth corners {e['mouth_right']:.1f} / {e['mouth_left']:.1f}")
    print(f"-> {args.out / 'bench' / 'real_faces.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
