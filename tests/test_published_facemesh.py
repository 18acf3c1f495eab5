"""FaceMesh as ktedge's published deployable: imported from its shipped spec with MediaPipe's own
weights, int8-quantized, exported, and held in LiteRT and ExecuTorch to MediaPipe's original file
on real photos (model/data/photos.py); then `ktedge predict` on the group photo."""
import json
import math

import numpy as np
import pytest

from ktedge.assets import asset_path
from ktedge.model.facemesh import LEFT_EYE_CORNERS, PEER, RIGHT_EYE_CORNERS
from tests.conftest import deploy_published, ktedge

pytestmark = pytest.mark.skipif(asset_path(PEER) is None or asset_path("insightface-t1") is None,
                                reason="MediaPipe's models / insightface's photos not installed (make install)")

ARTIFACTS = ["tflite-fp32", "tflite-int8", "tflite-int8-int8io", "executorch-int8"]
BOUND = 2.0  # ktedge/specs/facemesh.yaml: points within 2 % of the eye-corner distance of the original's


@pytest.fixture(scope="module")
def facemesh_run(tmp_path_factory):
    return deploy_published("facemesh", tmp_path_factory.mktemp("facemesh"), ARTIFACTS)


def test_the_port_is_the_original_and_int8_stays_within_its_bound_on_real_faces(facemesh_run):
    out, record, validation = facemesh_run
    deployable = json.loads((out / "fuse" / "deployable.json").read_text())
    assert record["passed"] and deployable["name"] == "facemesh"
    (task,) = [o["task"] for o in deployable["outputs"] if o["task"]]
    assert task == {"name": "mesh", "metric": "nme_mesh", "lower_is_better": True, "bound": BOUND}
    assert "real faces" in validation["faces_source"] and validation["faces"] == 60
    # The float program against MediaPipe's file in LiteRT: the same network (fp16 weights read exactly).
    assert validation["tasks_fp32_torch"]["mesh"]["value"] < 0.01
    rows = validation["artifacts"]
    assert sorted(rows) == sorted(ARTIFACTS)
    for name, row in rows.items():
        mesh = row["tasks"]["mesh"]
        assert row["validated"] and row["passed"], (name, mesh)
        assert (mesh["bound"], mesh["bound_is"], mesh["drift_rel"]) == (BOUND, "max", None)
        # int8 moves the points, but by less than the bound; fp32 does not move them.
        assert (0.1 < mesh["value"] < BOUND) if "int8" in name else mesh["value"] < 0.01, (name, mesh["value"])


def test_the_int8_file_runs_whole_in_xnnpack_its_convolutions_int8_and_says_what_its_io_is(facemesh_run):
    out = facemesh_run[0]
    for name in ("tflite-int8", "tflite-int8-int8io"):
        placement = json.loads((out / "export" / name / "manifest.json").read_text())["placement"]
        assert placement["delegate"] == "XNNPACK" and placement["partitions"] == 1 and not placement["outside"]
        # Every convolution is int8; the float ops it names are elementwise (the PReLU's pieces and the
        # residual adds between them, which litert-torch's quantizer leaves float on an imported graph).
        assert placement["float_ops"] and not {"CONV_2D", "DEPTHWISE_CONV_2D"} & set(placement["float_ops"])
    assert json.loads((out / "export" / "tflite-int8-int8io" / "manifest.json").read_text())["input"]["dtype"] == "int8"


def test_predict_finds_each_face_of_the_group_photo_and_answers_468_points_on_each(facemesh_run, tmp_path):
    """The whole chain on a real group photo: BlazeFace finds the six faces, each is aligned by
    the rule the deployable measured, and the int8 FaceMesh's points land on the face: its eye
    corners within the face's box, the eyes level with each other to within the face's tilt."""
    out = facemesh_run[0]
    photo, result = asset_path("insightface-t1"), tmp_path / "t1.json"
    r = ktedge("predict", str(out / "export" / "tflite-int8"), str(photo), "--json", str(result))
    assert r.returncode == 0, r.stderr
    faces = json.loads(result.read_text())["faces"]
    assert len(faces) == 6
    for face in faces:
        points = np.asarray(face["answers"]["landmarks"])
        assert points.shape == (468, 2)
        x0, y0, x1, y1 = face["box"]
        right, left = points[RIGHT_EYE_CORNERS[0]], points[LEFT_EYE_CORNERS[0]]
        for x, y in (right, left):
            assert x0 <= x <= x1 and y0 <= y <= y1, (face["box"], right, left)
        assert right[0] < left[0]  # the subject's right eye is on the photo's left
        assert math.dist(right, left) > 0.3 * (x1 - x0)
