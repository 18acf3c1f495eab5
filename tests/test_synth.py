import numpy as np
import pytest

from ktedge.model.data.faces import generate_faces
from ktedge.model.data.synth import (ACTION_UNITS, ATTRIBUTES, EXPRESSIONS, NUM_LANDMARKS, PROTOTYPES,
                                     make_identity, render, sample_params)


def test_generator_is_deterministic_and_seeded():
    a, b = generate_faces(6, seed=3), generate_faces(6, seed=3)
    for name in ("images", "landmarks", "age", "attributes", "action_units", "expression", "identity"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = generate_faces(6, seed=4)
    assert not np.array_equal(a.images, c.images)
    # Face i depends only on (seed, i): a longer set starts with the same faces.
    np.testing.assert_array_equal(generate_faces(3, seed=3).images, a.images[:3])


def test_labels_cover_every_task():
    fs = generate_faces(300, seed=0, n_identities=64)
    assert fs.images.shape == (300, 64, 64, 3) and fs.images.dtype == np.uint8
    assert fs.landmarks.shape == (300, NUM_LANDMARKS, 2)
    assert len(ATTRIBUTES) >= 8 and len(ACTION_UNITS) >= 6
    assert len(np.unique(fs.identity)) >= 50
    assert set(np.unique(fs.expression)) == set(range(len(EXPRESSIONS)))
    # Every binary label occurs both ways, ages span the range.
    assert (fs.attributes.mean(0) > 0.05).all() and (fs.attributes.mean(0) < 0.95).all()
    assert (fs.action_units.mean(0) > 0.03).all()
    assert fs.age.min() < 25 and fs.age.max() > 70
    # Derived labels agree with the action units that drew them.
    au = {n: fs.action_units[:, i] for i, n in enumerate(ACTION_UNITS)}
    np.testing.assert_array_equal(fs.attributes[:, ATTRIBUTES.index("smiling")], au["AU12"])
    np.testing.assert_array_equal(fs.attributes[:, ATTRIBUTES.index("mouth_open")], au["AU26"])
    assert set(PROTOTYPES) == set(EXPRESSIONS)


def test_identity_is_stable_across_images_and_splits():
    assert make_identity(7) == make_identity(7)
    assert make_identity(7) != make_identity(8)


def test_mouth_opening_follows_jaw_drop():
    fs = generate_faces(200, seed=1)
    opening = fs.landmarks[:, 65:68, 1].mean(1) - fs.landmarks[:, 61:64, 1].mean(1)
    open_ = fs.action_units[:, ACTION_UNITS.index("AU26")] > 0
    assert opening[open_].min() > opening[~open_].max()


def _plain_face(seed: int):
    """A face with nothing drawn over the jaw line (no beard, glasses, hat, long hair)."""
    rng = np.random.default_rng(seed)
    while True:
        p = sample_params(rng, 64)
        att = dict(zip(ATTRIBUTES, p.attributes))
        if not (att["beard"] or att["eyeglasses"] or att["wearing_hat"] or make_identity(p.identity).long_hair):
            return p


@pytest.mark.parametrize("offset", [0.0, 3.0])
def test_landmarks_sit_on_what_was_drawn(offset):
    """The jaw landmarks lie on the drawn face outline: colour changes across them, not beside them.
    Shifting the labels by 3 px outward must break this (the test can fail)."""
    across, along = [], []
    for seed in range(12):
        p = _plain_face(seed)
        img, lm = render(p, 64)
        img = img.astype(float)
        centre = lm.mean(0)
        for k in list(range(2, 6)) + list(range(11, 15)):
            n = (lm[k] - centre) / np.linalg.norm(lm[k] - centre)
            q = lm[k] + offset * n
            px = lambda z: img[int(np.clip(z[1], 0, 63)), int(np.clip(z[0], 0, 63))]  # noqa: E731
            across.append(np.abs(px(q + 1.5 * n) - px(q - 1.5 * n)).sum())
            along.append(np.abs(px(q - 1.5 * n) - px(q - 3.5 * n)).sum())
    contrast = np.median(across) / (np.median(along) + 1.0)
    if offset == 0.0:
        assert contrast > 4, contrast
    else:
        assert contrast < 2, contrast


def test_eye_landmarks_enclose_the_drawn_eye():
    p = _plain_face(5)
    img, lm = render(p, 64)
    img = img.astype(float)
    for eye in (slice(36, 42), slice(42, 48)):
        c = lm[eye].mean(0)
        centre = img[int(c[1]), int(c[0])]
        cheek = img[int(c[1] + 5), int(c[0])]
        assert np.abs(centre - cheek).sum() > 60
