"""BlazeFace short-range, MediaPipe's face detector, as a PyTorch reference implementation.

The network is read op by op from MediaPipe's own `face_detection_short_range.tflite` (the
mediapipe 0.10.21 wheel, Apache-2.0; `make install` extracts it, `ktedge.assets` finds it) and its
fp16 weights are loaded from that file's flatbuffer. Anchors, decoding and weighted NMS follow
MediaPipe's SsdAnchorsCalculator, TensorsToDetectionsCalculator and NonMaxSuppressionCalculator
with the options of `face_detection_short_range.pbtxt`.

Layout of the work:
  `BlazeFace`           (B, 3, 128, 128) RGB in [-1, 1] -> (B, 896, 16) regressors, (B, 896, 1)
                        logits: a plain module, to be torch.export'ed and quantized like any other.
  `Deployed`            the same with the per-anchor decoding in the graph, (B, 896, 17): what
                        ktedge deploys (ktedge/specs/blazeface.yaml); an app thresholds and suppresses.
  `ssd_anchors`, `decode_anchors`, `select`, `weighted_nms`   post-processing on tensors of
                        relative coordinates.
  `detect`, `detect_tiled`                  the front-end on a whole (H, W, 3) uint8 photo:
                        letterbox to 128, run, decode, NMS, map to photo pixels; with the
                        PyTorch network or any `FrameDetector` (a deployed artifact).

Keypoint order (MediaPipe's, checked on `astronaut` in the tests): the subject's right eye, left
eye, nose tip, mouth centre, right ear tragion, left ear tragion. "Right" is the subject's: on a
frontal face it is on the image's left.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ktedge.errors import KtedgeError
from ktedge.model.align import warp_affine

INPUT_SIZE = 128
NUM_ANCHORS = 896
NUM_KEYPOINTS = 6
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear_tragion", "left_ear_tragion")
PEER = "mediapipe-face_detection_short_range"

# face_detection_short_range.pbtxt: SsdAnchorsCalculatorOptions.
ANCHOR_STRIDES = (8, 16, 16, 16)
ANCHOR_OFFSET = 0.5
# TensorsToDetectionsCalculatorOptions.
COORD_SCALE = 128.0       # x_scale = y_scale = w_scale = h_scale
SCORE_CLIPPING = 100.0
COORD_RANGE = (-0.5, 1.5)  # ours: decoded coordinates are kept within (decode_anchors)
# Ours, for int8 (`Deployed`): the deployed form's logits stop at -LOGIT_FLOOR (FlooredHead) and
# its block activations at ACTIVATION_CAP. On the real frames every fp32 face stays found with the
# cap anywhere from 6 to 64 (4 loses one in 25); at 6 it is ReLU6, which the converters fuse into
# the op before it (at 16 LiteRT's int8 file kept the caps as float MINIMUMs: 7 faces of 126 lost).
LOGIT_FLOOR = 16.0
ACTIVATION_CAP = 6.0
MIN_SCORE = 0.5
# NonMaxSuppressionCalculatorOptions (algorithm WEIGHTED, overlap INTERSECTION_OVER_UNION).
NMS_IOU = 0.3
# Tiled detection (ours, not MediaPipe's): below about a fifth of the input's side the model still
# fires on a face but boxes it at about that size, so each pyramid level keeps only boxes at least
# this wide; and a stricter score threshold for the many windows of a tiled pass.
MIN_FACE_FRACTION = 0.2
TILED_MIN_SCORE = 0.75


# ----------------------------------------------------------------------------------- network

def tf_same_padding(kernel: int, stride: int) -> tuple[int, int]:
    """TFLite SAME padding (before, after) along one axis whose size is a multiple of `stride`:
    total = kernel - stride, the extra pixel after. Stride 2 is asymmetric: 3x3 pads (0, 1),
    5x5 pads (1, 2); PyTorch's symmetric `padding=` cannot express it, hence an explicit F.pad."""
    total = max(kernel - stride, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """nn.Conv2d with TFLite SAME padding (zeros), for inputs whose size divides by the stride.
    Symmetric (stride 1) it is the conv's own padding; asymmetric, an explicit F.pad first. A PAD
    op beside a residual add is also what litert-torch's int8 layout pass cannot convert."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        before, after = tf_same_padding(kernel, stride)
        super().__init__(cin, cout, kernel, stride=stride, groups=groups, padding=before if before == after else 0)
        self.pads = None if before == after else (before, after, before, after)  # F.pad: left, right, top, bottom

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x if self.pads is None else F.pad(x, self.pads))


class BlazeBlock(nn.Module):
    """One residual block: depthwise 3x3 (stride 1 or 2) -> pointwise 1x1, added to the input
    (2x2 max-pooled when strided, zero-padded on the channel axis when it widens), then `act`
    (ReLU here; FaceMesh's blocks are the same with PReLU).
    (B, cin, H, W) -> (B, cout, H/stride, W/stride)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, act: nn.Module | None = None):
        super().__init__()
        self.depthwise = SameConv2d(cin, cin, 3, stride, groups=cin)
        self.pointwise = nn.Conv2d(cin, cout, 1)
        self.pool = nn.MaxPool2d(2, 2) if stride == 2 else nn.Identity()
        self.extra_channels = cout - cin
        self.act = act or nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pointwise(self.depthwise(x))                       # (B, cout, H', W')
        skip = self.pool(x)                                         # (B, cin, H', W')
        if self.extra_channels:
            skip = F.pad(skip, (0, 0, 0, 0, 0, self.extra_channels))  # zeros after the last channel
        return self.act(h + skip)


class DetectionHead(nn.Module):
    """A 1x1 conv predicting `per_cell` anchors per grid cell, flattened in TFLite's NHWC order
    (anchor index = (row * W + col) * per_cell + k): (B, C, H, W) -> (B, H*W*per_cell, values)."""

    def __init__(self, cin: int, per_cell: int, values: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, per_cell * values, 1)
        self.values = values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).permute(0, 2, 3, 1)                        # (B, H, W, per_cell*values)
        return y.reshape(y.shape[0], -1, self.values)


# (cin, cout, stride) of the 16 BlazeBlocks, read off the .tflite graph: 11 at 64..16 px ending
# in the 16x16x88 map (2 anchors per cell), 5 more ending in the 8x8x96 map (6 per cell).
BLOCKS_16 = ((24, 24, 1), (24, 28, 1), (28, 32, 2), (32, 36, 1), (36, 42, 1), (42, 48, 2),
             (48, 56, 1), (56, 64, 1), (64, 72, 1), (72, 80, 1), (80, 88, 1))
BLOCKS_8 = ((88, 96, 2), (96, 96, 1), (96, 96, 1), (96, 96, 1), (96, 96, 1))


class BlazeFace(nn.Module):
    """(B, 3, 128, 128) RGB in [-1, 1] -> regressors (B, 896, 16), logits (B, 896, 1).

    Regressors per anchor, in 128-px input units relative to the anchor: x_centre, y_centre, w, h,
    then (x, y) of the 6 keypoints. Anchors 0..511 are the 16x16 grid, 512..895 the 8x8 grid."""

    def __init__(self):
        super().__init__()
        self.stem = SameConv2d(3, 24, 5, stride=2)                  # (B, 24, 64, 64)
        self.backbone16 = nn.Sequential(*(BlazeBlock(*b) for b in BLOCKS_16))  # (B, 88, 16, 16)
        self.backbone8 = nn.Sequential(*(BlazeBlock(*b) for b in BLOCKS_8))    # (B, 96, 8, 8)
        self.classifier16, self.regressor16 = DetectionHead(88, 2, 1), DetectionHead(88, 2, 16)
        self.classifier8, self.regressor8 = DetectionHead(96, 6, 1), DetectionHead(96, 6, 16)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f16 = self.backbone16(F.relu(self.stem(x)))                 # (B, 88, 16, 16)
        f8 = self.backbone8(f16)                                    # (B, 96, 8, 8)
        regressors = torch.cat([self.regressor16(f16), self.regressor8(f8)], dim=1)   # (B, 896, 16)
        logits = torch.cat([self.classifier16(f16), self.classifier8(f8)], dim=1)      # (B, 896, 1)
        return regressors, logits


# ------------------------------------------------------------------------------ .tflite weights

def tflite_tensors(path: str | Path) -> dict[str, np.ndarray]:
    """Every constant float tensor of a .tflite file by name, as float32 (fp16 ones widened)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(Path(path).read_bytes(), 0)
    dtypes = {schema.TensorType.FLOAT16: np.float16, schema.TensorType.FLOAT32: np.float32}
    out = {}
    for t in model.subgraphs[0].tensors:
        data = model.buffers[t.buffer].data
        if data is not None and len(data) and t.type in dtypes:
            out[t.name.decode()] = np.frombuffer(np.asarray(data, np.uint8).tobytes(),
                                                 dtypes[t.type]).reshape(t.shape).astype(np.float32)
    return out


def _tflite_names(model: BlazeFace) -> list[tuple[nn.Conv2d, str, str]]:
    """(module, TFLite layer name, kind) for every conv, in the file's naming: the stem is
    `conv2d`, block i's depthwise `depthwise_conv2d[_i-1]` and pointwise `conv2d_i`."""
    blocks = [*model.backbone16, *model.backbone8]
    names = [(model.stem, "conv2d", "conv")]
    for i, block in enumerate(blocks, 1):
        names.append((block.depthwise, "depthwise_conv2d" + (f"_{i - 1}" if i > 1 else ""), "depthwise"))
        names.append((block.pointwise, f"conv2d_{i}", "conv"))
    names += [(model.classifier16.conv, "classificator_8", "conv"), (model.regressor16.conv, "regressor_8", "conv"),
              (model.classifier8.conv, "classificator_16", "conv"), (model.regressor8.conv, "regressor_16", "conv")]
    return names


def load_tflite_weights(model: BlazeFace, path: str | Path) -> BlazeFace:
    """Copy the .tflite's weights into `model`. TFLite kernels are OHWI (conv) and 1HWC
    (depthwise); PyTorch's are OIHW and C1HW."""
    tensors = tflite_tensors(path)
    names = _tflite_names(model)
    if len(names) * 2 != len(tensors):
        raise KtedgeError(f"{path}: {len(tensors)} weight tensors, expected {len(names) * 2} (not BlazeFace short-range?)")
    with torch.no_grad():
        for module, name, kind in names:
            kernel = tensors[f"{name}/Kernel"]
            kernel = kernel.transpose(3, 0, 1, 2) if kind == "depthwise" else kernel.transpose(0, 3, 1, 2)
            if kernel.shape != tuple(module.weight.shape):
                raise KtedgeError(f"{path}: {name} is {kernel.shape}, expected {tuple(module.weight.shape)}")
            module.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
            module.bias.copy_(torch.from_numpy(tensors[f"{name}/Bias"]))
    return model


def blazeface(path: str | Path | None = None) -> BlazeFace:
    """BlazeFace with MediaPipe's weights (from `path`, default the installed peer file), eval mode."""
    if path is None:
        from ktedge.assets import installed

        path = installed(PEER)
    return load_tflite_weights(BlazeFace(), path).eval()


# ------------------------------------------------------------------------------ post-processing

def ssd_anchors(input_size: int = INPUT_SIZE, strides: tuple[int, ...] = ANCHOR_STRIDES,
                offset: float = ANCHOR_OFFSET) -> torch.Tensor:
    """(896, 2) anchor centres (x, y) relative to the input, as SsdAnchorsCalculator makes them
    for the short-range model: consecutive layers with one stride share a grid, each layer adds 2
    anchors per cell (aspect ratio 1 and the interpolated scale), `fixed_anchor_size` makes every
    anchor 1 x 1 (so only the centres matter), cells in row-major order, a cell's anchors adjacent."""
    out, layer = [], 0
    while layer < len(strides):
        stride, same = strides[layer], 0
        while layer + same < len(strides) and strides[layer + same] == stride:
            same += 1
        grid = math.ceil(input_size / stride)
        centres = (torch.arange(grid, dtype=torch.float32) + offset) / grid
        ys, xs = torch.meshgrid(centres, centres, indexing="ij")
        cells = torch.stack([xs, ys], dim=-1).reshape(-1, 1, 2)          # (grid*grid, 1, 2)
        out.append(cells.expand(-1, 2 * same, 2).reshape(-1, 2))
        layer += same
    return torch.cat(out)


def decode_anchors(regressors: torch.Tensor, logits: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Raw outputs (B, 896, 16), (B, 896, 1) -> every anchor decoded, (B, 896, 17): box xmin,
    ymin, xmax, ymax, the 6 keypoints' (x, y), relative to the input, then the score
    sigmoid(clip(logit, +-100)). Offsets are in input pixels, divided by 128; anchor w = h = 1.

    Coordinates are kept to a frame and a half around the input (COORD_RANGE), which leaves every
    face as it is: an empty anchor's box can decode far outside, and in int8, where the output
    has one scale, that range left the scores within a step of 0. Each piece is bounded before
    the concat (a hardtanh, observed within its bound: quantize/quantizers.py), so the concat's
    one scale is COORD_RANGE's."""
    raw = regressors / COORD_SCALE
    centre, half = raw[..., 0:2] + anchors, raw[..., 2:4] / 2
    # Broadcast over the keypoints by shape: a repeated anchor table became a BROADCAST_TO that
    # XNNPACK leaves outside its partition.
    keypoints = (raw[..., 4:].unflatten(-1, (NUM_KEYPOINTS, 2)) + anchors[:, None]).flatten(-2)
    score = torch.sigmoid(logits.clamp(-SCORE_CLIPPING, SCORE_CLIPPING))
    bound = lambda t: F.hardtanh(t, *COORD_RANGE)  # noqa: E731
    return torch.cat([bound(centre - half), bound(centre + half), bound(keypoints), score], dim=-1)


def select(detections: torch.Tensor, min_score: float = MIN_SCORE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's decoded anchors (896, 17) -> those scoring >= `min_score`: boxes (N, 4),
    keypoints (N, 6, 2), scores (N,)."""
    keep = detections[:, -1] >= min_score
    d = detections[keep]
    return d[:, :4], d[:, 4:-1].reshape(-1, NUM_KEYPOINTS, 2), d[:, -1]


def decode(regressors: torch.Tensor, logits: torch.Tensor, anchors: torch.Tensor,
           min_score: float = MIN_SCORE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's raw outputs (896, 16), (896, 1) -> the anchors scoring >= `min_score`: boxes
    (N, 4) as relative xmin, ymin, xmax, ymax; keypoints (N, 6, 2) relative x, y; scores (N,)."""
    return select(decode_anchors(regressors[None], logits[None], anchors)[0], min_score)


def box_iou(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """IoU of one (4,) xmin, ymin, xmax, ymax box with (N, 4) boxes; 0 where the union is empty."""
    lo, hi = torch.maximum(box[:2], boxes[:, :2]), torch.minimum(box[2:], boxes[:, 2:])
    inter = (hi - lo).clamp(min=0).prod(dim=1)
    union = (box[2:] - box[:2]).prod() + (boxes[:, 2:] - boxes[:, :2]).prod(dim=1) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def weighted_nms(boxes: torch.Tensor, keypoints: torch.Tensor, scores: torch.Tensor,
                 iou: float = NMS_IOU) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MediaPipe's WEIGHTED non-max suppression: take the best remaining detection, gather every
    remaining one overlapping it by IoU > `iou` (itself included), and output their score-weighted
    mean box and keypoints with the best one's score; repeat on the rest. Stops, as MediaPipe
    does, when a round suppresses nothing (only possible for an empty box)."""
    order = torch.argsort(scores, descending=True, stable=True)
    out_boxes, out_keypoints, out_scores = [], [], []
    while len(order):
        overlap = box_iou(boxes[order[0]], boxes[order]) > iou
        members = order[overlap]
        if not len(members):
            break
        w = scores[members]
        out_boxes.append((boxes[members] * w[:, None]).sum(0) / w.sum())
        out_keypoints.append((keypoints[members] * w[:, None, None]).sum(0) / w.sum())
        out_scores.append(scores[order[0]])
        order = order[~overlap]
    if not out_scores:
        return boxes[:0], keypoints[:0], scores[:0]
    return torch.stack(out_boxes), torch.stack(out_keypoints), torch.stack(out_scores)


class FlooredHead(nn.Module):
    """A classifier head whose logits stop at -`floor`, in a form int8 keeps: the floor folded
    into the conv's bias and a ReLU after it (a conv + ReLU is one int8 pattern, its range observed
    after the ReLU), the floor taken off again. Empty anchors' logits reach -176 while a face's
    are near 0: one per-tensor int8 scale over that range (0.70) put a face's score on a step or
    two, and int8 recall fell to 0. sigmoid(-16) = 1e-7, so no score a threshold reads moves.
    (B, C, H, W) -> (B, H*W*per_cell, 1)."""

    def __init__(self, head: DetectionHead, floor: float):
        super().__init__()
        self.conv, self.values, self.floor = copy.deepcopy(head.conv), head.values, floor
        with torch.no_grad():
            self.conv.bias += floor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x)).permute(0, 2, 3, 1)               # (B, H, W, per_cell), >= 0
        return y.reshape(y.shape[0], -1, self.values) - self.floor


class Deployed(nn.Module):
    """BlazeFace as ktedge deploys it (ktedge/specs/blazeface.yaml): the per-anchor decoding in
    the graph, so an app (and the int8 gate) reads boxes and scores, not raw regressors.
    (B, 3, 128, 128) RGB in [-1, 1] -> detections (B, 896, 17) (`decode_anchors`), with the
    logits floored at -LOGIT_FLOOR and the block activations capped at ACTIVATION_CAP."""

    def __init__(self, net: BlazeFace):
        super().__init__()
        self.net = copy.deepcopy(net)
        self.net.classifier16 = FlooredHead(net.classifier16, LOGIT_FLOOR)
        self.net.classifier8 = FlooredHead(net.classifier8, LOGIT_FLOOR)
        # MediaPipe's network makes one content-independent spike at 16 x 16 cell (14, 14): the
        # blocks from the ninth on carry it at 50..300 while every other activation of every frame
        # stays under ~10. One per-tensor int8 scale over that range left nothing of the faces
        # (int8 recall 0 with the heads in float). Capped, the blocks are observed within the cap
        # (quantize/quantizers.py annotate_bounded).
        for block in [*self.net.backbone16, *self.net.backbone8]:
            block.act = nn.Hardtanh(0.0, ACTIVATION_CAP)
        self.register_buffer("anchors", ssd_anchors())             # (896, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return decode_anchors(*self.net(x), self.anchors)           # (B, 896, 17)


def deployed() -> Deployed:
    """The published model's factory: BlazeFace with MediaPipe's weights, decoding in the graph."""
    return Deployed(blazeface()).eval()


def faces_in(detections: torch.Tensor | np.ndarray, min_score: float = MIN_SCORE
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One frame's deployed output (896, 17) -> its faces after MediaPipe's threshold and
    weighted NMS: boxes (N, 4), keypoints (N, 6, 2), scores (N,), relative to the input."""
    return weighted_nms(*select(torch.as_tensor(np.asarray(detections, np.float32)).reshape(NUM_ANCHORS, -1),
                                min_score))


# ------------------------------------------------------------------------------ photo front-end

@dataclass(frozen=True)
class Detection:
    """One face in photo pixels (corner-origin coordinates, see model/align.py): box (4,) as
    xmin, ymin, xmax, ymax; keypoints (6, 2) x, y in KEYPOINTS order; score in [0, 1]."""
    box: np.ndarray
    keypoints: np.ndarray
    score: float

    def keypoint(self, name: str) -> np.ndarray:
        return self.keypoints[KEYPOINTS.index(name)]


def letterbox_matrix(height: int, width: int, x0: float = 0.0, y0: float = 0.0,
                     side: float | None = None, size: int = INPUT_SIZE) -> np.ndarray:
    """(2, 3) matrix from `size` x `size` network-input pixels to photo pixels for the region
    (x0, y0, width, height), padded to a centred square of `side` (default its longer edge) with
    the aspect kept, as MediaPipe's ImageToTensorCalculator with keep_aspect_ratio does."""
    side = float(max(height, width)) if side is None else side
    s = side / size
    return np.array([[s, 0.0, x0 + (width - side) / 2], [0.0, s, y0 + (height - side) / 2]])


def to_input(crops: list[np.ndarray]) -> torch.Tensor:
    """(128, 128, 3) uint8 RGB images -> the network's (B, 3, 128, 128) float input in [-1, 1]."""
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()
    return x * (2 / 255) - 1


# A detector as the front-end calls it: (B, 128, 128, 3) uint8 RGB letterboxed frames -> their
# decoded anchors (B, 896, 17) (`decode_anchors`): the PyTorch port, or a deployed artifact in its
# runtime (export/predict.py).
FrameDetector = Callable[[np.ndarray], np.ndarray]


def torch_detector(model: BlazeFace) -> FrameDetector:
    """The PyTorch network as a FrameDetector: one batch per call."""
    anchors = ssd_anchors()

    def frames(crops: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return decode_anchors(*model(to_input(list(crops))), anchors).numpy()
    return frames


def _run(model: BlazeFace | FrameDetector, photo: np.ndarray, matrices: list[np.ndarray],
         min_score: float) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Letterbox `photo` by each matrix, run the detector once on the batch, and return per matrix
    the NMS'd detections in photo pixels (boxes (N, 4), keypoints (N, 6, 2), scores (N,))."""
    detector = torch_detector(model) if isinstance(model, BlazeFace) else model
    crops = np.stack([warp_affine(photo, m, (INPUT_SIZE, INPUT_SIZE)) for m in matrices])
    out = []
    for m, detections in zip(matrices, detector(crops)):
        boxes, keypoints, scores = faces_in(detections, min_score)
        m = torch.from_numpy(m * [[INPUT_SIZE, INPUT_SIZE, 1]]).float()   # relative input -> photo
        corners = boxes.reshape(-1, 2, 2) @ m[:, :2].T + m[:, 2]             # (N, 2 corners, 2)
        out.append((corners.reshape(-1, 4), keypoints @ m[:, :2].T + m[:, 2], scores))
    return out


def _detections(boxes: torch.Tensor, keypoints: torch.Tensor, scores: torch.Tensor) -> list[Detection]:
    return [Detection(b.double().numpy(), k.double().numpy(), float(s)) for b, k, s in zip(boxes, keypoints, scores)]


def detect(model: BlazeFace | FrameDetector, photo: np.ndarray, min_score: float = MIN_SCORE) -> list[Detection]:
    """Faces in an (H, W, 3) uint8 RGB photo from one letterboxed 128 x 128 pass, MediaPipe's way.
    The short-range model finds faces from about 1/5 to the whole of the photo's longer edge."""
    h, w = photo.shape[:2]
    return _detections(*_run(model, photo, [letterbox_matrix(h, w)], min_score)[0])


def tile_grid(height: int, width: int, min_face: int) -> list[tuple[int, int, int]]:
    """(x0, y0, side) square tiles covering a photo at every pyramid level: the whole photo, then
    tiles of half the previous side at half-side stride (50% overlap, so any face no larger than
    half a tile lies wholly inside one), down to the first level whose smallest reliable face
    (MIN_FACE_FRACTION of its side) is no wider than `min_face` pixels."""
    if min_face < 1:
        raise ValueError(f"min_face must be at least 1 px, got {min_face}")
    side = max(height, width)
    tiles = [(0, 0, side)]
    while side * MIN_FACE_FRACTION > min_face:
        side //= 2
        step, x_last, y_last = side // 2, max(width - side, 0), max(height - side, 0)
        xs = sorted({*range(0, x_last, step), x_last})
        ys = sorted({*range(0, y_last, step), y_last})
        tiles += [(x, y, side) for y in ys for x in xs]
    return tiles


def detect_tiled(model: BlazeFace | FrameDetector, photo: np.ndarray, min_face: int = 50, min_score: float = TILED_MIN_SCORE,
                 edge_margin: float = 0.02) -> list[Detection]:
    """Faces of any size down to `min_face` pixels wide in a large photo: the detector runs on the
    whole photo and on the overlapping tiles of `tile_grid`, and the detections are merged by
    weighted NMS. Each level keeps only the faces it sees at a size the model is reliable at:
    box width >= MIN_FACE_FRACTION of its side (smaller faces get a box of about that size
    whatever their true size) and, in a tile, <= half its side (larger faces belong to the
    coarser level). A tile's detection reaching within `edge_margin` * side of an edge of the tile
    inside the photo is dropped as possibly cut (it is whole in a neighbour tile). The score
    threshold is above MediaPipe's 0.5 because a tiled pass looks at tens of windows: at 0.5 it
    admits non-faces (0.5-0.67 on skimage's coins, rocket, hubble_deep_field)."""
    h, w = photo.shape[:2]
    tiles = tile_grid(h, w, min_face)
    matrices = [letterbox_matrix(min(s, h - y), min(s, w - x), x, y, side=s) for x, y, s in tiles]
    found = []
    for (x, y, s), (boxes, keypoints, scores) in zip(tiles, _run(model, photo, matrices, min_score)):
        width = boxes[:, 2] - boxes[:, 0]
        keep = width >= MIN_FACE_FRACTION * s
        if s < max(h, w):
            m = s * edge_margin
            keep &= width <= s / 2
            if x > 0:
                keep &= boxes[:, 0] >= x + m
            if y > 0:
                keep &= boxes[:, 1] >= y + m
            if x + s < w:
                keep &= boxes[:, 2] <= x + s - m
            if y + s < h:
                keep &= boxes[:, 3] <= y + s - m
        found.append((boxes[keep], keypoints[keep], scores[keep]))
    boxes, keypoints, scores = (torch.cat(parts) for parts in zip(*found))
    return _detections(*weighted_nms(boxes, keypoints, scores))
