"""Dataset folders in the real formats (data.format): synthetic faces written as 300W, UTKFace,
CelebA and CSV folders are read back to the same pixels and labels, split, and refused with an
error naming the file when broken. Training and deploying from such folders: test_systems."""
import numpy as np
import pytest
from PIL import Image

from ktedge.config import load_config
from ktedge.errors import KtedgeError
from ktedge.model.data.datasets import split_faces
from ktedge.model.data.faces import generate_faces
from ktedge.model.data.parsers import parse_utkface_name
from tests.conftest import ktedge
from tests.dataset_folders import (write_celeba_folder, write_csv_folder, write_pts_folder, write_utkface_folder)

SIZE = 64


@pytest.fixture(scope="module")
def faces():
    return generate_faces(30, seed=7, size=SIZE)


def _cfg(fmt, train_dir, val_dir="", **data):
    return load_config(overrides=[{"data": {"format": fmt, "train_dir": str(train_dir), "val_dir": str(val_dir), **data}}])


def _read_all(fmt, folder, n):
    """Every face of the folder: its own folder as both splits."""
    return split_faces(_cfg(fmt, folder, folder), "val", n=n)


def _unlabelled(fs, tasks):
    for t in tasks:
        v = getattr(fs, t)
        assert (np.isnan(v).all() if v.dtype.kind == "f" else (v == -1).all()), t


def test_a_300w_folder_reads_back_its_landmarks_and_pixels(faces, tmp_path):
    fs = _read_all("pts", write_pts_folder(faces, tmp_path / "300w"), len(faces))
    assert fs.labelled == ("landmarks",)
    np.testing.assert_array_equal(fs.images, faces.images)  # PNG is lossless and the crop is the whole image
    np.testing.assert_allclose(fs.landmarks, faces.landmarks, atol=1e-4)
    _unlabelled(fs, ("age", "attributes", "action_units", "expression", "identity"))


def test_a_utkface_folder_reads_ages_from_the_file_names(faces, tmp_path):
    folder = write_utkface_folder(faces, tmp_path / "utk")
    fs = _read_all("utkface", folder, len(faces))
    assert fs.labelled == ("age",)
    # Files sort by age; the name's date field says which face each one is.
    files = sorted(folder.iterdir())
    order = [int(parse_utkface_name(p.name).date) - 20170116000000000 for p in files]
    np.testing.assert_array_equal(fs.age, np.round(faces.age[order]))
    np.testing.assert_array_equal(fs.images, [np.asarray(Image.open(p)) for p in files])  # the JPEGs' own pixels
    _unlabelled(fs, ("landmarks", "attributes", "action_units"))


def test_a_celeba_folder_reads_its_attributes_by_name(faces, tmp_path):
    fs = _read_all("celeba", write_celeba_folder(faces, tmp_path / "celeba"), len(faces))
    assert fs.labelled == ("attributes",)
    # The extra columns (Male, Young) are skipped and No_Beard is turned back into beard.
    np.testing.assert_array_equal(fs.attributes, faces.attributes)
    np.testing.assert_array_equal(fs.images, faces.images)


def test_a_csv_folder_reads_every_task_it_has_columns_for(faces, tmp_path):
    tasks = ("landmarks", "age", "attributes", "action_units", "expression", "identity")
    fs = _read_all("csv", write_csv_folder(faces, tmp_path / "all", tasks), len(faces))
    assert fs.labelled == tasks
    np.testing.assert_allclose(fs.landmarks, faces.landmarks, atol=1e-4)
    np.testing.assert_allclose(fs.age, faces.age, rtol=1e-5)
    for t in ("attributes", "action_units", "expression", "identity"):
        np.testing.assert_array_equal(getattr(fs, t), getattr(faces, t), err_msg=t)
    some = _read_all("csv", write_csv_folder(faces, tmp_path / "some", ("action_units", "landmarks")), 5)
    assert some.labelled == ("landmarks", "action_units") and len(some) == 5
    _unlabelled(some, ("age", "attributes", "expression", "identity"))


def test_without_a_val_folder_one_face_in_six_is_held_out_by_the_seed(faces, tmp_path):
    folder = write_csv_folder(faces, tmp_path / "csv", ("age",))
    cfg = _cfg("csv", folder)
    train, val = split_faces(cfg, "train"), split_faces(cfg, "val")
    assert (len(train), len(val)) == (25, 5)
    as_set = lambda fs: {round(float(a), 2) for a in fs.age}  # noqa: E731  (the ages are distinct)
    assert as_set(train).isdisjoint(as_set(val)) and as_set(train) | as_set(val) == as_set(faces)
    assert as_set(split_faces(cfg, "val")) == as_set(val)  # the same split every time
    assert as_set(split_faces(cfg, "test")) == as_set(val)  # the int8 gate reads the held-out faces
    other = split_faces(load_config(overrides=[{"seed": 1, "data": cfg.to_dict()["data"]}]), "val")
    assert as_set(other) != as_set(val)


def test_a_run_needing_labels_the_format_lacks_is_refused_naming_them(faces, tmp_path):
    folder = write_pts_folder(faces, tmp_path / "300w")
    cfg = load_config(overrides=[{"data": {"format": "pts", "train_dir": str(folder)},
                                  "model": {"system": "mzts", "canonical": {"task": "attributes", "backbone": "vit"}}}])
    with pytest.raises(KtedgeError, match=r"300w: this run trains or checks attributes, but a data.format pts set "
                                          r"labels only landmarks \(missing: attributes\)"):
        split_faces(cfg, "train", ["attributes"])


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "face0003.pts").unlink(), r"face0003.png: no face0003.pts beside it"),
    (lambda d: (d / "face0004.pts").write_text("version: 1\nn_points: 2\n{\n1 2\n3 4\n}\n"),
     r"face0004.pts: 2 points; the landmark head predicts the 68-point iBUG layout"),
    (lambda d: (d / "face0005.png").write_bytes(b"not a png"), r"face0005.png: not a readable image"),
])
def test_a_broken_300w_folder_is_refused_naming_the_file(faces, tmp_path, damage, message):
    folder = write_pts_folder(faces, tmp_path / "300w")
    damage(folder)
    with pytest.raises(KtedgeError, match=message):
        _read_all("pts", folder, None)


def test_broken_csv_celeba_and_utkface_folders_are_refused_naming_what_is_wrong(faces, tmp_path):
    csv = write_csv_folder(faces, tmp_path / "csv", ("landmarks", "expression"))
    text = (csv / "labels.csv").read_text()
    (csv / "labels.csv").write_text(text.replace(",y67,", ",y67_,", 1))
    with pytest.raises(KtedgeError, match=r"labels.csv:1: has x0 but not y67: landmarks needs all of its 136 columns"):
        _read_all("csv", csv, None)
    lines = text.splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",7"
    (csv / "labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(KtedgeError, match=r"labels.csv: data row 3: expression must be a class index 0..5"):
        _read_all("csv", csv, None)
    celeba = write_celeba_folder(faces, tmp_path / "celeba")
    (celeba / "img_align_celeba" / "000002.png").unlink()
    with pytest.raises(KtedgeError, match=r"list_attr_celeba.txt: lists 000002.png, which is not in .*img_align_celeba"):
        _read_all("celeba", celeba, None)
    utk = write_utkface_folder(faces.subset(slice(0, 3)), tmp_path / "utk")
    (utk / "face.jpg").write_bytes((utk / next(utk.iterdir()).name).read_bytes())
    with pytest.raises(KtedgeError, match=r"face.jpg: not a UTKFace name"):
        _read_all("utkface", utk, None)


def test_the_config_names_a_missing_dataset_folder(tmp_path):
    with pytest.raises(KtedgeError, match=r"data.format csv reads a dataset folder: set data.train_dir"):
        load_config(overrides=[{"data": {"format": "csv"}}])
    with pytest.raises(KtedgeError, match=r"data.format 'coco' is not one of synthetic, pts, utkface, celeba, csv"):
        load_config(overrides=[{"data": {"format": "coco"}}])
    with pytest.raises(KtedgeError, match=r"nowhere: data.train_dir is not a folder"):
        split_faces(_cfg("csv", tmp_path / "nowhere"), "train")


def test_ktedge_run_on_a_folder_without_the_runs_labels_stops_before_training_in_one_line(faces, tmp_path):
    folder = write_pts_folder(faces, tmp_path / "300w")
    out = tmp_path / "run"
    r = ktedge("run", "--out", str(out), "--set", "data.format=pts", "--set", f"data.train_dir={folder}")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    # The default KT run trains age and attribute priors; a 300W folder labels landmarks only.
    assert "this run trains or checks age, attributes, landmarks, but a data.format pts set labels only " \
           "landmarks (missing: age, attributes)" in r.stderr, r.stderr
    assert not (out / "train").exists()
