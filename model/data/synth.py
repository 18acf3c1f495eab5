"""Deterministic synthetic faces with exact labels for every task.

Every face is built from its 68 iBUG landmarks (jaw, brows, nose, eyes, lips) and then drawn
*from those points*, so the landmark labels are exactly what was drawn. Identity fixes the face
shape and colours; each image adds pose (yaw, roll), an expression with its action units, age
cues (forehead wrinkles, crow's feet, grey hair) and attributes (glasses, beard, bangs, ...).

Geometry is laid out in face units (origin between the eyes and the mouth, y down, the face
about 1.6 units wide), given a depth for yaw, rolled, then scaled into pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

NUM_LANDMARKS = 68
ATTRIBUTES = ("smiling", "mouth_open", "eyeglasses", "beard", "mustache", "bangs",
              "bushy_eyebrows", "rosy_cheeks", "wearing_hat")
ACTION_UNITS = ("AU1", "AU2", "AU4", "AU6", "AU12", "AU15", "AU26", "AU45")
EXPRESSIONS = ("neutral", "happiness", "sadness", "surprise", "anger", "fear")
# FACS prototypes: which action units make each expression.
PROTOTYPES = {
    "neutral": (), "happiness": ("AU6", "AU12"), "sadness": ("AU1", "AU4", "AU15"),
    "surprise": ("AU1", "AU2", "AU26"), "anger": ("AU4",), "fear": ("AU1", "AU2", "AU4", "AU26"),
}
AGE_RANGE = (16.0, 80.0)
# iBUG 68-point regions (used for per-region NME).
REGIONS = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36),
           "eyes": range(36, 48), "mouth": range(48, 68)}
OUTER_EYE_CORNERS = (36, 45)  # inter-ocular normalisation of NME (300W convention)
_SUPERSAMPLE = 4
_IDENTITY_SEED = 0x1DE


@dataclass(frozen=True)
class Identity:
    """Stable face-shape and colour parameters of one synthetic person."""
    face_w: float
    chin_y: float
    chin_power: float
    eye_sep: float
    eye_w: float
    eye_h: float
    brow_gap: float
    nose_len: float
    nose_w: float
    mouth_w: float
    mouth_y: float
    lip_h: float
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    long_hair: bool


def make_identity(index: int) -> Identity:
    r = np.random.default_rng([_IDENTITY_SEED, index])
    tone = r.uniform(0, 1)
    skin = np.array([255, 224, 196]) * (1 - tone) + np.array([120, 78, 52]) * tone
    hair = np.array([[30, 22, 18], [90, 60, 30], [170, 120, 60], [60, 40, 30], [200, 170, 110]])[r.integers(5)]
    iris = np.array([[60, 40, 20], [40, 90, 140], [60, 110, 60], [90, 70, 40]])[r.integers(4)]
    return Identity(
        face_w=r.uniform(0.72, 0.88), chin_y=r.uniform(0.88, 1.02), chin_power=r.uniform(0.7, 1.4),
        eye_sep=r.uniform(0.29, 0.36), eye_w=r.uniform(0.12, 0.16), eye_h=r.uniform(0.05, 0.075),
        brow_gap=r.uniform(0.13, 0.2), nose_len=r.uniform(0.36, 0.46), nose_w=r.uniform(0.1, 0.15),
        mouth_w=r.uniform(0.2, 0.28), mouth_y=r.uniform(0.5, 0.58), lip_h=r.uniform(0.035, 0.06),
        skin=tuple(skin), hair=tuple(hair.astype(float)), iris=tuple(iris.astype(float)),
        long_hair=bool(r.integers(2)),
    )


@dataclass(frozen=True)
class FaceParams:
    """Everything that decides one image; the labels are read off these."""
    identity: int
    age: float
    expression: int
    aus: tuple[bool, ...]
    attributes: tuple[bool, ...]
    intensity: float
    yaw: float  # degrees, + turns the face to the image right
    roll: float  # degrees, + rotates clockwise on screen
    scale: float
    shift: tuple[float, float]
    background: tuple[tuple[float, ...], tuple[float, ...]]
    clutter: tuple[tuple[float, ...], ...]
    light: tuple[float, float]
    noise_seed: int


def sample_params(rng: np.random.Generator, n_identities: int) -> FaceParams:
    expression = int(rng.integers(len(EXPRESSIONS)))
    proto = set(PROTOTYPES[EXPRESSIONS[expression]])
    # Each AU departs from its prototype with small probability, so AUs are not a pure function
    # of the expression; AU12 (lip corner up) and AU15 (down) stay exclusive.
    aus = [(au in proto) != (rng.random() < 0.08) for au in ACTION_UNITS]
    if aus[ACTION_UNITS.index("AU12")] and aus[ACTION_UNITS.index("AU15")]:
        aus[ACTION_UNITS.index("AU15")] = False
    free = rng.random(len(ATTRIBUTES)) < np.array([0, 0, 0.3, 0.25, 0.25, 0.3, 0.3, 0.3, 0.2])
    attrs = list(free)
    attrs[0] = aus[ACTION_UNITS.index("AU12")]  # smiling
    attrs[1] = aus[ACTION_UNITS.index("AU26")]  # mouth open
    bg = (tuple(rng.uniform(0, 255, 3)), tuple(rng.uniform(0, 255, 3)))
    clutter = tuple(tuple(np.concatenate([rng.uniform(0, 1, 2), rng.uniform(0.05, 0.25, 1), rng.uniform(0, 255, 3)]))
                    for _ in range(int(rng.integers(0, 4))))
    return FaceParams(
        identity=int(rng.integers(n_identities)), age=float(rng.uniform(*AGE_RANGE)),
        expression=expression, aus=tuple(bool(a) for a in aus), attributes=tuple(bool(a) for a in attrs),
        intensity=float(rng.uniform(0.7, 1.0)), yaw=float(rng.uniform(-28, 28)), roll=float(rng.uniform(-14, 14)),
        scale=float(rng.uniform(0.88, 1.08)), shift=tuple(rng.uniform(-0.05, 0.05, 2)),
        background=bg, clutter=clutter, light=(float(rng.uniform(0.8, 1.15)), float(rng.uniform(-0.25, 0.25))),
        noise_seed=int(rng.integers(2**31)),
    )


def canonical_landmarks(ident: Identity, p: FaceParams) -> np.ndarray:
    """The 68 points (x, y, depth) in face units, expression applied. -> (68, 3)"""
    au = dict(zip(ACTION_UNITS, p.aus))
    k = p.intensity
    pts = np.zeros((NUM_LANDMARKS, 3))
    fw, y0 = ident.face_w, -0.12
    open_ = 0.16 * k if au["AU26"] else 0.0  # jaw drop
    # Jaw 0..16: from the image-left ear round the chin to the image-right ear.
    th = np.pi * (1 - np.arange(17) / 16)
    s = np.sin(th) ** ident.chin_power
    pts[0:17, 0] = fw * np.cos(th)
    pts[0:17, 1] = y0 + (ident.chin_y - y0) * s + open_ * s**2
    # Eyes 36..41 (image left) and 42..47: corners, two upper-lid and two lower-lid points.
    ey = -0.22
    for start, cx in ((36, -ident.eye_sep), (42, ident.eye_sep)):
        w, h = ident.eye_w, ident.eye_h
        up = h * (0.12 if au["AU45"] else 1.0)  # blink closes the upper lid
        low = h * 0.8 * (0.45 if au["AU6"] else 1.0)  # cheek raiser lifts the lower lid
        # Order: left corner, upper lid (2), right corner, lower lid (2); 36 is an outer corner, 42 an inner one.
        xs = np.array([-w, -w / 3, w / 3, w, w / 3, -w / 3])
        ys = np.array([0, -up, -up, 0, low, low])
        pts[start:start + 6, 0] = cx + xs
        pts[start:start + 6, 1] = ey + ys
        pts[start:start + 6, 2] = 0.35
    # Brows 17..21 (image left, outer to inner) and 22..26 (inner to outer).
    by = ey - ident.brow_gap
    t = np.linspace(0, 1, 5)
    arch = 0.05 * np.sin(np.pi * t)
    for start, x_from, x_to in ((17, -ident.eye_sep - 0.2, -ident.eye_sep + 0.17),
                                (22, ident.eye_sep - 0.17, ident.eye_sep + 0.2)):
        xs = x_from + (x_to - x_from) * t
        ys = by - arch
        inner_w = t if start == 17 else 1 - t  # 1 at the inner end
        ys = ys - 0.09 * k * au["AU1"] * np.clip(2 * inner_w - 0.6, 0, 1)
        ys = ys - 0.09 * k * au["AU2"] * np.clip(1.4 - 2 * inner_w, 0, 1)
        ys = ys + 0.06 * k * au["AU4"]
        xs = xs - np.sign(xs) * 0.04 * k * au["AU4"] * inner_w
        pts[start:start + 5, 0], pts[start:start + 5, 1], pts[start:start + 5, 2] = xs, ys, 0.4
    # Nose: bridge 27..30 down the midline, base 31..35.
    tip = ey + ident.nose_len
    pts[27:31, 1] = np.linspace(ey - 0.02, tip, 4)
    pts[27:31, 2] = np.linspace(0.5, 0.8, 4)
    pts[31:36, 0] = np.linspace(-ident.nose_w, ident.nose_w, 5)
    pts[31:36, 1] = tip + 0.06 + np.array([-0.02, 0.01, 0.03, 0.01, -0.02])
    pts[31:36, 2] = 0.6
    # Lips: outer 48..59, inner 60..67; smile (AU12) lifts and widens the corners, AU15 drops them.
    mw, my, lh = ident.mouth_w * (1 + 0.15 * k * au["AU12"]), ident.mouth_y, ident.lip_h
    corner = -0.07 * k * au["AU12"] + 0.06 * k * au["AU15"]
    ox = np.array([-1, -0.6, -0.25, 0, 0.25, 0.6, 1, 0.6, 0.25, 0, -0.25, -0.6]) * mw
    oy = np.array([0, -0.8, -1, -0.8, -1, -0.8, 0, 0.9, 1, 1.05, 1, 0.9]) * lh
    oy[[1, 5, 7, 11]] += corner / 2
    oy[[0, 6]] += corner
    oy[7:12] += open_
    ix = np.array([-0.85, -0.3, 0, 0.3, 0.85, 0.3, 0, -0.3]) * mw
    iy = np.array([corner * 0.8, -0.15 * lh, -0.15 * lh, -0.15 * lh, corner * 0.8, 0.15 * lh, 0.15 * lh, 0.15 * lh])
    iy[5:8] += open_
    pts[48:60, 0], pts[48:60, 1] = ox, my + oy
    pts[60:68, 0], pts[60:68, 1] = ix, my + iy
    pts[48:68, 2] = 0.45
    return pts


class _Canvas:
    """Projects face units into the supersampled canvas and draws polygons/lines there."""

    def __init__(self, size: int, p: FaceParams, ident: Identity):
        self.n = size * _SUPERSAMPLE
        self.img = Image.new("RGB", (self.n, self.n))
        self.draw = ImageDraw.Draw(self.img)
        yaw, roll = np.radians(p.yaw), np.radians(p.roll)
        self.cy, self.sy = np.cos(yaw), np.sin(yaw)
        self.rot = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
        self.unit = size * 0.3 * p.scale  # pixels per face unit
        self.center = size * (0.5 + np.array(p.shift)) + np.array([0.0, 0.02 * size])

    def to_pixels(self, xyz: np.ndarray) -> np.ndarray:
        """(N, 3) face units -> (N, 2) pixels in the final image."""
        x = xyz[:, 0] * self.cy + xyz[:, 2] * self.sy
        xy = np.stack([x, xyz[:, 1]], 1) @ self.rot.T
        return self.center + self.unit * xy

    def _canvas(self, xy: np.ndarray, z: float) -> list[tuple[float, float]]:
        xyz = np.column_stack([xy, np.full(len(xy), z)]) if xy.shape[1] == 2 else xy
        return [tuple(q) for q in self.to_pixels(xyz) * _SUPERSAMPLE]

    def polygon(self, pts: np.ndarray, color, z: float = 0.0) -> None:
        self.draw.polygon(self._canvas(pts, z), fill=_rgb(color))

    def line(self, pts: np.ndarray, color, width: float, z: float = 0.0) -> None:
        w = max(1, int(round(width * self.unit * _SUPERSAMPLE)))
        self.draw.line(self._canvas(pts, z), fill=_rgb(color), width=w, joint="curve")

    def width_px(self, units: float) -> float:
        return units * self.unit


def _rgb(c) -> tuple[int, int, int]:
    return tuple(int(np.clip(v, 0, 255)) for v in c)


def _mix(a, b, t: float) -> np.ndarray:
    return np.asarray(a, float) * (1 - t) + np.asarray(b, float) * t


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24, a0: float = 0, a1: float = 2 * np.pi) -> np.ndarray:
    a = np.linspace(a0, a1, n)
    return np.column_stack([cx + rx * np.cos(a), cy + ry * np.sin(a)])


def render(p: FaceParams, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one face. -> image (size, size, 3) uint8, landmarks (68, 2) in pixels."""
    ident = make_identity(p.identity)
    att = dict(zip(ATTRIBUTES, p.attributes))
    pts = canonical_landmarks(ident, p)
    cv = _Canvas(size, p, ident)
    n = cv.n

    # Background: a vertical gradient and a few blobs of clutter.
    top, bottom = np.array(p.background[0]), np.array(p.background[1])
    ramp = np.linspace(0, 1, n)[:, None, None]
    cv.img.paste(Image.fromarray((top * (1 - ramp) + bottom * ramp).repeat(n, 1).astype(np.uint8)))
    for bx, by_, br, *col in p.clutter:
        cv.draw.ellipse([(bx - br) * n, (by_ - br) * n, (bx + br) * n, (by_ + br) * n], fill=_rgb(col))

    grey = float(np.clip((p.age - 35) / 35, 0, 1))
    hair = _mix(ident.hair, (205, 205, 205), grey)
    skin = np.array(ident.skin)
    fw, y0 = ident.face_w, -0.12
    jaw = pts[0:17, :2]
    forehead = _ellipse(0, y0, fw, 0.98, 15, 0, -np.pi)[1:-1]  # over the top, right to left

    if ident.long_hair:
        cv.polygon(np.vstack([_ellipse(0, y0, fw * 1.25, 1.12, 20, 0, -np.pi), [[-fw * 1.2, 0.7], [fw * 1.2, 0.7]]]), hair)
    cv.polygon(np.array([[-0.35, 0.6], [0.35, 0.6], [0.4, 1.6], [-0.4, 1.6]]), skin * 0.8)  # neck
    cv.polygon(np.vstack([jaw, forehead]), skin)

    wrinkle = float(np.clip((p.age - 30) / 40, 0, 1))
    if wrinkle > 0:
        shade = skin * (1 - 0.4 * wrinkle)
        for i in range(1 + int(3 * wrinkle)):
            y = -0.5 - 0.07 * i
            cv.line(np.column_stack([np.linspace(-0.35, 0.35, 7), y - 0.02 * np.sin(np.linspace(0, np.pi, 7))]), shade, 0.012 + 0.01 * wrinkle, z=0.3)
        if p.age > 45:  # crow's feet at the outer eye corners
            for c, sgn in ((pts[36], -1), (pts[45], 1)):
                for dy in (-0.04, 0.0, 0.04):
                    cv.line(np.array([[c[0] + sgn * 0.03, c[1] + dy * 0.3], [c[0] + sgn * 0.12, c[1] + dy * 1.5]]), shade, 0.012, z=0.3)
        if p.age > 40:  # nasolabial folds
            for a, b in ((31, 48), (35, 54)):
                q = np.array([pts[a, :2] + [np.sign(pts[a, 0]) * 0.05, 0], pts[b, :2] + [np.sign(pts[b, 0]) * 0.06, 0.02]])
                cv.line(q, shade, 0.014, z=0.45)
    if att["rosy_cheeks"]:
        for cx in (-ident.eye_sep - 0.03, ident.eye_sep + 0.03):
            cv.polygon(_ellipse(cx, 0.18, 0.14, 0.1), _mix(skin, (225, 70, 80), 0.45), z=0.35)
    if att["beard"]:
        lip_bottom = pts[55:60, 1].max() + 0.05
        inner = np.array([[0.55, 0.05], [ident.mouth_w + 0.08, lip_bottom - 0.05], [0, lip_bottom], [-ident.mouth_w - 0.08, lip_bottom - 0.05], [-0.55, 0.05]])
        cv.polygon(np.vstack([jaw[3:14], inner]), _mix(hair, (0, 0, 0), 0.25), z=0.1)

    # Nose.
    cv.line(pts[27:31], skin * 0.82, 0.025, z=0.6)
    cv.line(pts[31:36], skin * 0.55, 0.025, z=0.6)
    # Eyes: sclera, iris, pupil and lid outline - or a closed lid.
    for s in (slice(36, 42), slice(42, 48)):
        e = pts[s]
        opening = e[4:6, 1].mean() - e[1:3, 1].mean()
        c = e[:, :2].mean(0)
        if opening < 0.04:
            cv.line(e[[0, 5, 4, 3], :2], skin * 0.35, 0.022, z=0.35)
            continue
        cv.polygon(e[:, :2], (238, 236, 230), z=0.35)
        r = 0.45 * opening
        cv.polygon(_ellipse(c[0], c[1] + 0.1 * opening, r, r, 16), ident.iris, z=0.35)
        cv.polygon(_ellipse(c[0], c[1] + 0.1 * opening, r * 0.45, r * 0.45, 10), (15, 10, 10), z=0.35)
        cv.line(np.vstack([e[:, :2], e[:1, :2]]), skin * 0.3, 0.015, z=0.35)
    # Brows.
    brow_w = 0.05 if att["bushy_eyebrows"] else 0.025
    for s in (slice(17, 22), slice(22, 27)):
        cv.line(pts[s, :2], hair * 0.6, brow_w, z=0.4)
    # Mouth: lips, and the dark inside when the jaw drops.
    lip = _mix(skin * 0.8, (180, 40, 60), 0.45)
    cv.polygon(pts[48:60, :2], lip, z=0.45)
    inner = pts[60:68, :2]
    if inner[5:8, 1].mean() - inner[1:4, 1].mean() > 0.04:
        cv.polygon(inner, (55, 15, 25), z=0.45)
    else:
        cv.line(inner[0:5], lip * 0.55, 0.015, z=0.45)
    if att["mustache"]:
        top_lip = pts[49:54, 1].min()
        m = np.array([[-ident.mouth_w - 0.05, top_lip + 0.02], [0, top_lip - 0.035], [ident.mouth_w + 0.05, top_lip + 0.02],
                      [ident.nose_w * 0.8, pts[33, 1] + 0.02], [-ident.nose_w * 0.8, pts[33, 1] + 0.02]])
        cv.polygon(m, _mix(hair, (0, 0, 0), 0.3), z=0.5)
    # Hair cap, down to the brows with bangs; then a hat over it.
    brow_top = pts[17:27, 1].min()
    hairline = brow_top - 0.05 if att["bangs"] else -0.7
    xs = np.linspace(-fw * 1.02, fw * 1.02, 13)  # the arc ends on the left, so the hairline runs back right
    fringe = hairline - (0.025 * (np.arange(13) % 2) if att["bangs"] else 0.12 * (1 - (xs / fw) ** 2))
    cv.polygon(np.vstack([_ellipse(0, y0, fw * 1.05, 1.06, 17, 0, -np.pi), np.column_stack([xs, fringe])]), hair)
    if att["wearing_hat"]:
        hat = np.vstack([_ellipse(0, -0.75, fw * 0.95, 0.45, 15, 0, -np.pi), [[-fw * 1.3, -0.72], [fw * 1.3, -0.72]]])
        hat_col = np.array([[180, 30, 30], [30, 60, 160], [40, 120, 50], [230, 200, 60]])[p.identity % 4]
        cv.polygon(hat, hat_col)
    if att["eyeglasses"]:
        frame = (25, 25, 30)
        for s in (slice(36, 42), slice(42, 48)):
            c = pts[s, :2].mean(0)
            cv.line(_ellipse(c[0], c[1], ident.eye_w * 1.5, ident.eye_w * 1.15, 20), frame, 0.022, z=0.45)
        inner_l = pts[36:42, :2].mean(0) + [ident.eye_w * 1.5, 0]
        inner_r = pts[42:48, :2].mean(0) - [ident.eye_w * 1.5, 0]
        cv.line(np.array([inner_l, inner_r]), frame, 0.022, z=0.5)

    img = np.asarray(cv.img.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    # Lighting: overall gain and a left-right gradient; then sensor noise.
    gain = p.light[0] * (1 + p.light[1] * (np.linspace(-0.5, 0.5, size)[None, :, None]))
    noise = np.random.default_rng(p.noise_seed).normal(0, 3.0, img.shape)
    img = np.clip(img * gain + noise, 0, 255).astype(np.uint8)
    return img, cv.to_pixels(pts).astype(np.float32)
