"""FaceMesh, MediaPipe's 468-point face landmark model, as a PyTorch reference implementation.

The network is read op by op from MediaPipe's own `face_landmark.tflite` (the mediapipe 0.10.21
wheel, Apache-2.0; `make install` extracts it, `ktedge.assets` finds it) and its fp16 weights are
loaded from that file's flatbuffer with `model/blazeface.py`'s reader. The crop follows MediaPipe's
face_detection_front_detection_to_roi.pbtxt (DetectionsToRectsCalculator with the eye keypoints as
rotation vector, RectTransformationCalculator scale 1.5 and square_long) and the input range its
face_landmark_cpu.pbtxt (ImageToTensorCalculator, float range [0, 1]).

Layout of the work:
  `FaceMesh`            (B, 3, 192, 192) RGB in [0, 1] -> landmarks (B, 1404), presence logit
                        (B, 1): a plain module, to be torch.export'ed and quantized like any other.
  `roi_matrix`          a BlazeFace `Detection` -> the (2, 3) crop -> photo similarity.
  `landmarks_to_photo`  the network's 468 (x, y, z) in crop pixels -> photo pixels.
  `face_mesh`           the three together on an (H, W, 3) uint8 photo.

Landmarks are (x, y, z) triples, x and y in 192-px crop pixels (corner origin, as model/align.py),
z in the same units relative to the face's centre (smaller is nearer the camera). MediaPipe's
"left" and "right" are the subject's: the subject's right eye is on a frontal image's left.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ktedge.errors import KtedgeError
from ktedge.model.align import map_points, warp_affine
from ktedge.model.blazeface import BlazeBlock, Detection, SameConv2d, tflite_tensors

INPUT_SIZE = 192
NUM_LANDMARKS = 468
PEER = "mediapipe-face_landmark"
# face_detection_front_detection_to_roi.pbtxt: RectTransformationCalculatorOptions.
ROI_SCALE = 1.5
# face_landmark_cpu.pbtxt: the presence score is sigmoid(logit), a face when above this.
PRESENCE_THRESHOLD = 0.5

# Contours of the mesh (MediaPipe's face_mesh_connections.py, FACEMESH_RIGHT_EYE / LEFT_EYE), the
# subject's right eye first; corners (outer, inner) and mouth corners (subject's right, left).
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS = (33, 133), (263, 362)
MOUTH_CORNERS = (61, 291)


# ----------------------------------------------------------------------------------- network

def Block(cin: int, cout: int, stride: int = 1) -> BlazeBlock:
    """FaceMesh's residual block: BlazeFace's, ending in PReLU (TFLite SAME padding)."""
    return BlazeBlock(cin, cout, stride, nn.PReLU(cout))


class Head(nn.Module):
    """One output branch off the shared 6x6 map: a strided block and `extra_blocks` more at 3x3
    with 128 channels, a 1x1 reduction to 32 + PReLU, one 32-channel block, then a 3x3 VALID conv
    over the whole 3x3 map. (B, 128, 6, 6) -> (B, out)."""

    def __init__(self, out: int, extra_blocks: int):
        super().__init__()
        self.blocks = nn.Sequential(Block(128, 128, 2), *(Block(128, 128) for _ in range(extra_blocks)))
        self.reduce, self.reduce_act = nn.Conv2d(128, 32, 1), nn.PReLU(32)
        self.refine = Block(32, 32)
        self.out = nn.Conv2d(32, out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.refine(self.reduce_act(self.reduce(self.blocks(x))))   # (B, 32, 3, 3)
        return self.out(y).flatten(1)                                   # (B, out)


# (cin, cout, stride) of the 14 shared blocks, read off the .tflite graph: 96 -> 6 px, widening
# 16 -> 128 channels at each of the first three strided blocks.
BACKBONE = ((16, 16, 1), (16, 16, 1),
            (16, 32, 2), (32, 32, 1), (32, 32, 1),
            (32, 64, 2), (64, 64, 1), (64, 64, 1),
            (64, 128, 2), (128, 128, 1), (128, 128, 1),
            (128, 128, 2), (128, 128, 1), (128, 128, 1))


class FaceMesh(nn.Module):
    """(B, 3, 192, 192) RGB in [0, 1] -> landmarks (B, 1404), face-presence logit (B, 1), in the
    .tflite's output order. Landmarks are 468 (x, y, z) in 192-px input units, point-major."""

    def __init__(self):
        super().__init__()
        self.stem, self.stem_act = SameConv2d(3, 16, 3, stride=2), nn.PReLU(16)   # (B, 16, 96, 96)
        self.backbone = nn.Sequential(*(Block(*b) for b in BACKBONE))            # (B, 128, 6, 6)
        self.landmarks = Head(NUM_LANDMARKS * 3, extra_blocks=2)
        self.presence = Head(1, extra_blocks=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.backbone(self.stem_act(self.stem(x)))              # (B, 128, 6, 6)
        return self.landmarks(f), self.presence(f)                  # (B, 1404), (B, 1)


# ------------------------------------------------------------------------------ .tflite weights

def _tflite_names(model: FaceMesh) -> list[tuple[nn.Module, str]]:
    """(module, TFLite layer name) for every conv and PReLU. Shared block i (1-based) is
    `depthwise_conv2d_i`, `conv2d_{i+1}`, `p_re_lu_{i+1}`; the landmark branch continues that
    numbering, the presence branch was numbered after it."""
    names: list[tuple[nn.Module, str]] = [(model.stem, "conv2d_1"), (model.stem_act, "p_re_lu_1")]

    def block(b: BlazeBlock, dw: int, pw: int, act: int) -> None:
        names.extend([(b.depthwise, f"depthwise_conv2d_{dw}"), (b.pointwise, f"conv2d_{pw}"), (b.act, f"p_re_lu_{act}")])

    for i, b in enumerate([*model.backbone, *model.landmarks.blocks], 1):
        block(b, i, i + 1, i + 1)
    lm, pr = model.landmarks, model.presence
    names += [(lm.reduce, "conv2d_19"), (lm.reduce_act, "p_re_lu_19"), (lm.out, "conv2d_21")]
    block(lm.refine, 18, 20, 20)
    block(pr.blocks[0], 23, 28, 26)
    names += [(pr.reduce, "conv2d_29"), (pr.reduce_act, "p_re_lu_27"), (pr.out, "conv2d_31")]
    block(pr.refine, 24, 30, 28)
    return names


def load_tflite_weights(model: FaceMesh, path: str | Path) -> FaceMesh:
    """Copy the .tflite's weights into `model`. TFLite kernels are OHWI (conv) and 1HWC
    (depthwise), PReLU slopes (1, 1, C); PyTorch's are OIHW, C1HW and (C,)."""
    tensors = tflite_tensors(path)
    names = _tflite_names(model)
    expected = sum(1 if isinstance(m, nn.PReLU) else 2 for m, _ in names)
    if expected != len(tensors):
        raise KtedgeError(f"{path}: {len(tensors)} weight tensors, expected {expected} (not face_landmark.tflite?)")
    with torch.no_grad():
        for module, name in names:
            if isinstance(module, nn.PReLU):
                pairs = [(module.weight, tensors[f"{name}/Alpha"].reshape(-1))]
            else:
                kernel = tensors[f"{name}/Kernel"]
                kernel = kernel.transpose(3, 0, 1, 2) if module.groups > 1 else kernel.transpose(0, 3, 1, 2)
                pairs = [(module.weight, kernel), (module.bias, tensors[f"{name}/Bias"])]
            for param, value in pairs:
                if value.shape != tuple(param.shape):
                    raise KtedgeError(f"{path}: {name} is {value.shape}, expected {tuple(param.shape)}")
                param.copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return model


def facemesh(path: str | Path | None = None) -> FaceMesh:
    """FaceMesh with MediaPipe's weights (from `path`, default the installed peer file), eval mode."""
    if path is None:
        from ktedge.assets import installed

        path = installed(PEER)
    return load_tflite_weights(FaceMesh(), path).eval()


class Deployed(nn.Module):
    """FaceMesh as ktedge deploys it (ktedge/specs/facemesh.yaml): points as fractions of the crop,
    as every ktedge points output. (B, 3, 192, 192) RGB in [0, 1] -> landmarks (B, 468, 3),
    presence logit (B, 1)."""

    def __init__(self, net: FaceMesh):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        landmarks, presence = self.net(x)                                   # (B, 1404), (B, 1)
        return (landmarks / INPUT_SIZE).reshape(-1, NUM_LANDMARKS, 3), presence


def deployed() -> Deployed:
    """The published model's factory: FaceMesh with MediaPipe's weights, in its deployed form."""
    return Deployed(facemesh()).eval()


# ------------------------------------------------------------------------------ photo front-end

def roi_matrix(detection: Detection, scale: float = ROI_SCALE, size: int = INPUT_SIZE) -> np.ndarray:
    """The (2, 3) crop -> photo matrix of the `size` x `size` crop FaceMesh expects from a
    BlazeFace detection, MediaPipe's rule: a square of side `scale` * the box's longer side,
    centred on the box centre, rotated by the angle of the line from the subject's right eye to
    the left eye (so the eyes come out level). A similarity:
        photo = centre + (side / size) * R(angle) @ (crop - size / 2)."""
    x0, y0, x1, y1 = detection.box
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    d = detection.keypoint("left_eye") - detection.keypoint("right_eye")
    angle = math.atan2(d[1], d[0])
    s = scale * max(x1 - x0, y1 - y0) / size                        # photo pixels per crop pixel
    linear = s * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return np.hstack([linear, (centre - linear @ np.full(2, size / 2))[:, None]])


def to_input(crops: list[np.ndarray]) -> torch.Tensor:
    """(192, 192, 3) uint8 RGB crops -> the network's (B, 3, 192, 192) float input in [0, 1]."""
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255


def landmarks_to_photo(landmarks: np.ndarray | torch.Tensor, matrix: np.ndarray) -> np.ndarray:
    """One face's network output (1404,) or (468, 3) in crop pixels -> (468, 3) float64 in photo
    pixels through the crop -> photo similarity `matrix`: x, y mapped, z scaled by its scale (as
    MediaPipe's LandmarkProjectionCalculator does)."""
    points = np.asarray(landmarks, np.float64).reshape(NUM_LANDMARKS, 3)
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    return np.hstack([map_points(matrix, points[:, :2]), points[:, 2:] * scale])


def face_mesh(model: FaceMesh, photo: np.ndarray, detection: Detection) -> tuple[np.ndarray, float]:
    """The 468 landmarks (468, 3) in photo pixels of the face `detection` found in an (H, W, 3)
    uint8 RGB photo, and the face-presence probability. The crop is sampled by `warp_affine`
    (zero border; MediaPipe's ImageToTensorCalculator replicates it by default, which differs only
    for crops reaching outside the photo)."""
    m = roi_matrix(detection)
    with torch.no_grad():
        landmarks, logit = model(to_input([warp_affine(photo, m, (INPUT_SIZE, INPUT_SIZE))]))
    return landmarks_to_photo(landmarks[0], m), float(torch.sigmoid(logit[0, 0]))
