"""FaceMesh in PyTorch against MediaPipe's own face_landmark.tflite, on real photos (skimage.data)."""
import math

import numpy as np
import pytest
import torch
from skimage import data

from ktedge.assets import asset_path
from ktedge.model import blazeface as bf
from ktedge.model.align import invert_affine, map_points, warp_affine
from ktedge.model.facemesh import (INPUT_SIZE, LEFT_EYE, LEFT_EYE_CORNERS, MOUTH_CORNERS, PEER, PRESENCE_THRESHOLD,
                                   RIGHT_EYE, RIGHT_EYE_CORNERS, FaceMesh, face_mesh, facemesh, landmarks_to_photo,
                                   roi_matrix, to_input)

TFLITE = asset_path(PEER)
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(TFLITE is None, reason="face_landmark.tflite not installed (make install)"),
              pytest.mark.skipif(asset_path(bf.PEER) is None,
                                 reason="face_detection_short_range.tflite not installed (make install)")]

# The astronaut's pupils, marked by hand on the 512 x 512 photo (as in test_blazeface.py).
ASTRONAUT_RIGHT_PUPIL, ASTRONAUT_LEFT_PUPIL = (204.0, 101.0), (246.0, 104.0)
IOD = math.dist(ASTRONAUT_RIGHT_PUPIL, ASTRONAUT_LEFT_PUPIL)


@pytest.fixture(scope="module")
def model() -> FaceMesh:
    return facemesh()


@pytest.fixture(scope="module")
def detection() -> bf.Detection:
    (face,) = bf.detect(bf.blazeface(), data.astronaut())
    return face


@pytest.fixture(scope="module")
def litert():
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(TFLITE), num_threads=1)
    interpreter.allocate_tensors()

    def run(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(1, 3, 192, 192) input -> the .tflite's landmarks (1, 1404) and presence logit (1, 1)."""
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.permute(0, 2, 3, 1).numpy().copy())
        interpreter.invoke()
        landmarks, logit = (interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details())
        return landmarks.reshape(1, -1), logit.reshape(1, -1)

    return run


def crop(photo: np.ndarray, m: np.ndarray) -> torch.Tensor:
    return to_input([warp_affine(photo, m, (INPUT_SIZE, INPUT_SIZE))])


def turned(m: np.ndarray, degrees: float) -> np.ndarray:
    """The crop -> photo matrix `m` turned by `degrees` about the crop's centre."""
    t, k = math.radians(degrees), INPUT_SIZE / 2
    r = np.array([[math.cos(t), -math.sin(t), k - k * math.cos(t) + k * math.sin(t)],
                  [math.sin(t), math.cos(t), k - k * math.sin(t) - k * math.cos(t)], [0, 0, 1]])
    return m @ r


def whole(photo: np.ndarray) -> np.ndarray:
    return bf.letterbox_matrix(*photo.shape[:2], size=INPUT_SIZE)


def real_inputs(detection: bf.Detection) -> dict[str, torch.Tensor]:
    """The astronaut's face cropped MediaPipe's way from BlazeFace's detection, the same crop
    turned 30 degrees, and photos without a face."""
    a, m = data.astronaut(), roi_matrix(detection)
    return {"face": crop(a, m), "face_turned_30": crop(a, turned(m, 30)),
            "coffee": crop(data.coffee(), whole(data.coffee())), "rocket": crop(data.rocket(), whole(data.rocket()))}


def test_network_matches_the_tflite_in_litert(model, litert, detection):
    """Same real inputs, same outputs: landmarks within 1e-3 crop pixels (measured at most 1.6e-4),
    logit within 1e-4 (measured at most 1.4e-5). LiteRT widens the fp16 weights to fp32, as the
    loader does."""
    for name, x in real_inputs(detection).items():
        with torch.no_grad():
            landmarks, logit = model(x)
        want_landmarks, want_logit = litert(x)
        assert landmarks.shape == (1, 1404) and logit.shape == (1, 1)
        assert np.abs(landmarks.numpy() - want_landmarks).max() < 1e-3, name
        assert np.abs(logit.numpy() - want_logit).max() < 1e-4, name


def test_mesh_lands_on_the_astronauts_face(model, detection):
    """Eye and mouth corners inside the detector's box, in anatomical order; the mesh's eye
    centres (mean of each eye contour) within 0.15 inter-ocular distances (6.5 px; measured 1.5
    and 4.9) of the detector's eye keypoints and within 3 px (measured 0.4, 1.3) of her pupils."""
    points, score = face_mesh(model, data.astronaut(), detection)
    assert points.shape == (468, 3) and score > 0.99
    x0, y0, x1, y1 = detection.box
    corners = points[[*RIGHT_EYE_CORNERS, *LEFT_EYE_CORNERS, *MOUTH_CORNERS], :2]
    assert ((corners > [x0, y0]) & (corners < [x1, y1])).all()
    r_outer, r_inner, l_outer, l_inner, m_right, m_left = corners
    assert r_outer[0] < r_inner[0] < l_inner[0] < l_outer[0] and m_right[0] < m_left[0]
    assert max(r_outer[1], l_outer[1]) < min(m_right[1], m_left[1])
    right, left = points[list(RIGHT_EYE), :2].mean(0), points[list(LEFT_EYE), :2].mean(0)
    assert math.dist(right, detection.keypoint("right_eye")) < 0.15 * IOD
    assert math.dist(left, detection.keypoint("left_eye")) < 0.15 * IOD
    assert math.dist(right, ASTRONAUT_RIGHT_PUPIL) < 3 and math.dist(left, ASTRONAUT_LEFT_PUPIL) < 3


def test_roi_levels_the_eyes_of_a_turned_face(model):
    """The photo turned 25 degrees: BlazeFace's eye line sets the crop's angle, so the eyes come
    out level in the crop (within 8 degrees, measured 3: the detector's eye keypoints are a few px
    off the eye centres), and the mesh mapped back to the turned photo and turned back lands
    within 3 px (measured 1.35) of the mesh found on the upright photo."""
    a, blaze = data.astronaut(), bf.blazeface()
    t, c = math.radians(25), a.shape[0] / 2
    turn = np.array([[math.cos(t), -math.sin(t), c - c * math.cos(t) + c * math.sin(t)],
                     [math.sin(t), math.cos(t), c - c * math.sin(t) - c * math.cos(t)]])   # turned -> upright
    photo = warp_affine(a, turn, a.shape[:2])
    (upright,), (face,) = bf.detect(blaze, a), bf.detect(blaze, photo)
    m = roi_matrix(face)
    with torch.no_grad():
        landmarks, _ = model(crop(photo, m))
    in_crop = landmarks[0].reshape(468, 3).numpy()
    eyes = in_crop[list(RIGHT_EYE), :2].mean(0), in_crop[list(LEFT_EYE), :2].mean(0)
    assert abs(math.degrees(math.atan2(eyes[1][1] - eyes[0][1], eyes[1][0] - eyes[0][0]))) < 8
    back = map_points(turn, landmarks_to_photo(landmarks[0], m)[:, :2])
    want, _ = face_mesh(model, a, upright)
    assert np.abs(back - want[:, :2]).max() < 3


def test_presence_high_on_a_face_low_without(model, detection):
    """sigmoid(logit) > 0.99 on the face crops (measured 1.0, logits 26.6 and 18.2), < 0.05 on
    photos without a face (measured 0.023 on coffee, 0.0002 on rocket)."""
    for name, x in real_inputs(detection).items():
        with torch.no_grad():
            p = float(torch.sigmoid(model(x)[1]))
        assert (p > 0.99) if name.startswith("face") else (p < 0.05), (name, p)
        assert (p > PRESENCE_THRESHOLD) == name.startswith("face")


def test_landmarks_to_photo_inverts_the_crop(detection):
    """Crop points mapped to the photo and back by the inverse matrix; z scaled by the crop's scale."""
    m = roi_matrix(detection)
    pts = np.random.default_rng(0).uniform(0, INPUT_SIZE, (468, 3))
    photo = landmarks_to_photo(pts, m)
    assert np.allclose(map_points(invert_affine(m), photo[:, :2]), pts[:, :2])
    x0, y0, x1, y1 = detection.box
    assert np.allclose(photo[:, 2], pts[:, 2] * 1.5 * max(x1 - x0, y1 - y0) / INPUT_SIZE)


def test_network_exports(model, detection):
    """torch.export gives a program with the eager outputs (for ktedge's int8 / export chain)."""
    x = real_inputs(detection)["face"]
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        want = model(x)
    got = program.module()(x)
    assert [tuple(g.shape) for g in got] == [(1, 1404), (1, 1)]
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-4)
