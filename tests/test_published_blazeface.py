"""BlazeFace as ktedge's published deployable: MediaPipe's short-range face detector imported from
its shipped spec with MediaPipe's own weights, int8-quantized, exported, and held in LiteRT and
ExecuTorch to MediaPipe's original file on real frames and photos without a face
(model/data/photos.py face_frames); then `ktedge predict` with the detector artifact itself, and as
the detector of a model deployed in the same run."""
import json

import numpy as np
import pytest
import torch

from ktedge.assets import asset_path
from ktedge.model import blazeface as bf
from tests.conftest import BLAZEFACE_ARTIFACTS as ARTIFACTS
from tests.conftest import ONET, ktedge

pytestmark = pytest.mark.skipif(asset_path(bf.PEER) is None or asset_path("insightface-t1") is None,
                                reason="MediaPipe's models / insightface's photos not installed (make install)")

RECALL = 98.0  # ktedge/specs/blazeface.yaml: int8 finds at least 98 % of the original's faces at IoU >= 0.5


def test_the_detector_finds_what_the_original_finds_in_every_runtime_and_nothing_in_empty_photos(blazeface_run):
    """Recall of the original's faces (IoU >= 0.5) on real frames, fp32 and int8, in each runtime,
    and no face in the whole photos without one."""
    from ktedge.export.runtimes import open_runner
    from ktedge.model.data.photos import NO_FACE_PHOTOS, PHOTOS, detector_frames

    out, record, validation = blazeface_run
    assert record["passed"] and "without a face" in validation["faces_source"]
    # The port with its deployed form (logits floored, activations capped) is the original.
    assert validation["tasks_fp32_torch"]["detection"]["value"] == 100.0
    assert sorted(validation["artifacts"]) == sorted(ARTIFACTS)
    for name, row in validation["artifacts"].items():
        det = row["tasks"]["detection"]
        assert row["validated"] and row["passed"] and (det["bound"], det["bound_is"]) == (RECALL, "min"), (name, det)
        assert det["value"] >= (RECALL if "int8" in name else 100.0), (name, det["value"])
    # The frames open with each photo whole: the face photos', then the no-face photos', in which
    # the original finds no face either.
    frames = detector_frames("val", bf.INPUT_SIZE)
    empty = slice(len(PHOTOS), len(PHOTOS) + len(NO_FACE_PHOTOS))
    assert np.isnan(frames.detection[empty]).all()
    x = frames.images[empty].transpose(0, 3, 1, 2).astype(np.float32)
    for name in ARTIFACTS:
        runner = open_runner(out / "export" / name)
        assert all(len(bf.faces_in(runner(e[None])[0])[0]) == 0 for e in x), name


def test_predict_with_the_int8_detector_artifact_answers_the_faces_in_photo_pixels(blazeface_run, tmp_path):
    """The detector artifact on its own: the photo letterboxed whole is its input, its faces the
    answer. A window of the group photo around two faces (each ~25 % of its side) gives both, in the
    window's pixels, each eye inside its box; a photo with no face answers no face."""
    from PIL import Image
    from skimage import data

    out = blazeface_run[0]
    window, none = tmp_path / "two.png", tmp_path / "coffee.png"
    Image.open(asset_path("insightface-t1")).crop((700, 60, 1130, 490)).save(window)
    Image.fromarray(data.coffee()).save(none)
    result = tmp_path / "two.json"
    r = ktedge("predict", str(out / "export" / "tflite-int8"), str(window), "--json", str(result))
    assert r.returncode == 0, r.stderr
    faces = json.loads(result.read_text())["faces"]
    assert len(faces) == 2 and all(f["score"] >= 0.5 for f in faces)
    for face in faces:
        x0, y0, x1, y1 = face["box"]
        assert 0 <= x0 < x1 <= 430 and 0 <= y0 < y1 <= 430 and 60 < x1 - x0 < 200, face["box"]
        assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in face["eyes"]), face
        assert len(face["answers"]["detections"][0]["keypoints"]) == 6
    r = ktedge("predict", str(out / "export" / "tflite-int8"), str(none), "--json", str(result))
    assert r.returncode == 0 and json.loads(result.read_text())["faces"] == [], r.stderr


def test_predict_finds_the_faces_with_the_runs_own_int8_detector_artifact(blazeface_run, exported, tmp_path):
    """A run deploying the O-Net and BlazeFace beside each other (their real artifacts, laid out as
    `ktedge run` lays them): `ktedge predict` on the O-Net, with no other flag, finds the faces of
    the 7-face group photo with the run's int8 detector artifact in LiteRT, each found once, each
    answered as a face by the O-Net; the same faces as the PyTorch detector's (boxes IoU > 0.8)."""
    import shutil

    from PIL import Image

    from ktedge.model.blazeface import blazeface
    from tests.test_blazeface import group_photo

    run = tmp_path / "run"
    shutil.copytree(exported[0] / ONET / "export" / "tflite-int8-int8io", run / ONET / "export" / "tflite-int8-int8io")
    shutil.copytree(blazeface_run[0] / "export" / "tflite-int8", run / "published/blazeface/export/tflite-int8")
    canvas, expected = group_photo(blazeface())
    Image.fromarray(canvas).save(tmp_path / "group.png")
    shutil.copytree(run / ONET, tmp_path / "alone" / ONET)  # the same model in a run with no detector
    results = {}
    for how, root in (("artifact", run), ("torch", tmp_path / "alone")):
        r = ktedge("predict", str(root / ONET / "export" / "tflite-int8-int8io"), str(tmp_path / "group.png"),
                   "--json", str(tmp_path / f"{how}.json"))
        assert r.returncode == 0, r.stderr
        results[how] = json.loads((tmp_path / f"{how}.json").read_text())
    detector = results["artifact"]["detector"]
    assert detector["artifact"] == str(run / "published/blazeface/export/tflite-int8"), detector
    assert results["torch"]["detector"]["artifact"] is None
    faces = results["artifact"]["faces"]
    assert len(faces) == len(expected) == len(results["torch"]["faces"])
    assert all(f["answers"]["face_prob"]["face"] > 0.5 for f in faces)
    for face in results["torch"]["faces"]:
        ious = bf.box_iou(*(torch.tensor(b, dtype=torch.float64) for b in (face["box"], [f["box"] for f in faces])))
        assert ious.max() > 0.8, (face["box"], ious)
