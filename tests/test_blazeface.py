"""BlazeFace in PyTorch against MediaPipe's own .tflite, on real photos (skimage.data)."""
import math

import numpy as np
import pytest
import torch
from skimage import data, transform

from ktedge.assets import asset_path
from ktedge.model.align import warp_affine
from ktedge.model.blazeface import (INPUT_SIZE, KEYPOINTS, PEER, BlazeFace, box_iou, decode, detect, detect_tiled,
                                    letterbox_matrix, ssd_anchors, to_input, weighted_nms, blazeface)

TFLITE = asset_path(PEER)
pytestmark = [pytest.mark.skipif(TFLITE is None, reason="face_detection_short_range.tflite not installed (make install)"),
              pytest.mark.usefixtures("one_thread")]

# The astronaut's pupils, marked by hand on the 512 x 512 photo (corner-origin pixels).
ASTRONAUT_RIGHT_PUPIL, ASTRONAUT_LEFT_PUPIL = (204.0, 101.0), (246.0, 104.0)
# Her head: a square around the face, the face about half its side.
HEAD = (132, 35, 186)   # x0, y0, side
# Photos with no human face in them.
NO_FACES = ("coffee", "rocket", "hubble_deep_field", "coins")


@pytest.fixture(scope="module")
def model() -> BlazeFace:
    return blazeface()


@pytest.fixture(scope="module")
def litert():
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(TFLITE), num_threads=1)
    interpreter.allocate_tensors()

    def run(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(1, 3, 128, 128) input -> the .tflite's regressors (1, 896, 16), classificators (1, 896, 1)."""
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.permute(0, 2, 3, 1).numpy().copy())
        interpreter.invoke()
        out = {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
        return out["regressors"], out["classificators"]

    return run


def rgb(name: str) -> np.ndarray:
    image = getattr(data, name)()
    return np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image[..., :3]


def letterboxed(photo: np.ndarray) -> torch.Tensor:
    return to_input([warp_affine(photo, letterbox_matrix(*photo.shape[:2]), (INPUT_SIZE, INPUT_SIZE))])


def real_inputs() -> dict[str, torch.Tensor]:
    """Network inputs from real photos: the astronaut letterboxed, three crops of her, a photo
    without a face."""
    a = data.astronaut()
    x0, y0, side = HEAD
    turn = math.radians(30)   # her head, turned 30 degrees about its centre
    c, s, k = math.cos(turn) * side / INPUT_SIZE, math.sin(turn) * side / INPUT_SIZE, INPUT_SIZE / 2
    rotated = np.array([[c, -s, x0 + side / 2 - c * k + s * k], [s, c, y0 + side / 2 - s * k - c * k]])
    crops = {"astronaut": letterboxed(a),
             "head": letterboxed(a[y0:y0 + side, x0:x0 + side]),
             "suit": letterboxed(a[256:, :300]),
             "head_rotated": to_input([warp_affine(a, rotated, (INPUT_SIZE, INPUT_SIZE))]),
             "coffee": letterboxed(rgb("coffee"))}
    return crops


def test_network_matches_the_tflite_in_litert(model, litert):
    """Same real inputs, same outputs: logits within 1e-3, regressors within 2e-3 input pixels
    (the .tflite holds fp16 weights that LiteRT widens to fp32, as the loader does)."""
    for name, x in real_inputs().items():
        with torch.no_grad():
            regressors, logits = model(x)
        want_regressors, want_logits = litert(x)
        assert regressors.shape == (1, 896, 16) and logits.shape == (1, 896, 1)
        assert np.abs(logits.numpy() - want_logits).max() < 1e-3, name
        assert np.abs(regressors.numpy() - want_regressors).max() < 2e-3, name


def test_anchors_are_mediapipes_short_range_grid():
    """16x16 cells with 2 anchors each, then 8x8 cells with 6, centres at (i + 0.5) / grid."""
    anchors = ssd_anchors()
    assert anchors.shape == (896, 2)
    assert torch.equal(anchors[0], anchors[1]) and torch.allclose(anchors[0], torch.tensor([1 / 32, 1 / 32]))
    assert torch.allclose(anchors[2], torch.tensor([3 / 32, 1 / 32]))
    assert torch.allclose(anchors[511], torch.tensor([31 / 32, 31 / 32]))
    assert torch.allclose(anchors[512:518], torch.tensor([1 / 16, 1 / 16]).expand(6, 2))
    assert torch.allclose(anchors[895], torch.tensor([15 / 16, 15 / 16]))


def test_astronaut_has_one_face_where_her_face_is(model, litert):
    """One face; its box agrees with the .tflite's own outputs decoded (IoU > 0.95) and with an
    independent detector (skimage's LBP cascade, IoU > 0.6); it contains her eyes, and the eye
    keypoints are on her pupils (marked by hand) within 15% of the inter-ocular distance."""
    from skimage.feature import Cascade

    a = data.astronaut()
    faces = detect(model, a)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.9

    regressors, logits = litert(letterboxed(a))
    boxes, _, _ = weighted_nms(*decode(torch.from_numpy(regressors[0]), torch.from_numpy(logits[0]), ssd_anchors()))
    assert len(boxes) == 1
    tflite_box = boxes[0] * a.shape[0]   # square photo: no letterbox offset
    assert float(box_iou(torch.from_numpy(face.box).float(), tflite_box[None])) > 0.95

    (lbp,) = Cascade(data.lbp_frontal_face_cascade_filename()).detect_multi_scale(
        img=a, scale_factor=1.2, step_ratio=1, min_size=(60, 60), max_size=(300, 300))
    lbp_box = torch.tensor([lbp["c"], lbp["r"], lbp["c"] + lbp["width"], lbp["r"] + lbp["height"]], dtype=torch.float32)
    assert float(box_iou(torch.from_numpy(face.box).float(), lbp_box[None])) > 0.6

    right, left = face.keypoint("right_eye"), face.keypoint("left_eye")
    tolerance = 0.15 * math.dist(ASTRONAUT_RIGHT_PUPIL, ASTRONAUT_LEFT_PUPIL)
    assert math.dist(right, ASTRONAUT_RIGHT_PUPIL) < tolerance
    assert math.dist(left, ASTRONAUT_LEFT_PUPIL) < tolerance
    x0, y0, x1, y1 = face.box
    assert all(x0 < x < x1 and y0 < y < y1 for x, y in (right, left))
    # The subject's right eye is on the image's left; the nose between the eyes, the mouth below.
    nose, mouth = face.keypoint("nose_tip"), face.keypoint("mouth")
    assert right[0] < nose[0] < left[0] and nose[1] < mouth[1]
    assert face.keypoint("right_ear_tragion")[0] < right[0] and face.keypoint("left_ear_tragion")[0] > left[0]
    assert len(KEYPOINTS) == len(face.keypoints) == 6


def group_photo(model) -> tuple[np.ndarray, list[np.ndarray]]:
    """A 1000 x 1000 group photo pasted from real faces: the astronaut's head at seven scales (faces
    60 to 280 px wide), some mirrored, on skimage's rocket photo; and each face's expected box (the
    detector's box on her head crop at a size it is reliable at, scaled and moved with the paste)."""
    a = data.astronaut()
    x0, y0, side = HEAD
    head = a[y0:y0 + side, x0:x0 + side]
    (ref,) = detect(model, head)
    canvas = transform.resize(data.rocket(), (1000, 1000), preserve_range=True, anti_aliasing=True).astype(np.uint8)
    boxes = []
    # (face width, x, y, mirrored); a pasted head is twice the face's width.
    for face, x, y, mirror in ((280, 0, 0, False), (180, 600, 0, True), (110, 620, 420, False), (80, 0, 620, True),
                               (60, 300, 700, False), (60, 860, 860, True), (100, 420, 620, True)):
        s = 2 * face
        pasted = transform.resize(head, (s, s), preserve_range=True, anti_aliasing=True).round().astype(np.uint8)
        box = ref.box * s / side
        if mirror:
            pasted, box = pasted[:, ::-1], np.array([s - box[2], box[1], s - box[0], box[3]])
        canvas[y:y + s, x:x + s] = pasted[:1000 - y, :1000 - x]
        boxes.append(box + [x, y, x, y])
    return canvas, boxes


def test_group_photo_every_face_found_down_to_60px_by_tiling(model):
    """All seven faces, each once, with its box (IoU > 0.85 with the expected one); one 128 x 128
    pass over the whole photo finds only the largest few, which is why tiling exists."""
    canvas, expected = group_photo(model)
    faces = detect_tiled(model, canvas)
    assert len(faces) == len(expected)
    found = torch.tensor(np.stack([f.box for f in faces]), dtype=torch.float32)
    for box in expected:
        ious = box_iou(torch.tensor(box, dtype=torch.float32), found)
        assert float(ious.max()) > 0.85, (box, ious)
        assert int((ious > 0.3).sum()) == 1
    assert len(detect(model, canvas)) < len(expected) - 2


@pytest.mark.parametrize("name", NO_FACES)
def test_no_face_found_in_photos_without_faces(model, name):
    photo = rgb(name)
    assert detect(model, photo) == []
    assert detect_tiled(model, photo) == []


def test_network_exports(model):
    """torch.export gives a program with the eager outputs (for ktedge's int8 / export chain)."""
    x = real_inputs()["astronaut"]
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        want = model(x)
    got = program.module()(x)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-5)
