import numpy as np
import pytest

from ktedge.errors import KtedgeError
from ktedge.model.data.parsers import parse_utkface_name, read_celeba_attributes, read_label_csv, read_pts


def write(path, text):
    path.write_text(text)
    return path


def test_pts_reads_points(tmp_path):
    pts = np.arange(136, dtype=np.float32).reshape(68, 2) / 3
    body = "\n".join(f"{x:.6f} {y:.6f}" for x, y in pts)
    f = write(tmp_path / "a.pts", f"version: 1\nn_points:  68\n{{\n{body}\n}}\n")
    np.testing.assert_allclose(read_pts(f), pts, atol=1e-5)


@pytest.mark.parametrize("text, where", [
    ("version: 1\nn_points: 2\n{\n1 2\n3 x\n}\n", ":5:"),
    ("version: 1\nn_points: 2\n{\n1 2\n}\n", ":5:"),
    ("version: 1\nn_points: 2\n1 2\n", ":3:"),
    ("hello\n", ":1:"),
    ("version: 1\nn_points: 1\n{\n1 2\n", ":5: unexpected end of file, expected '}'"),
])
def test_pts_rejects_broken_files_naming_the_line(tmp_path, text, where):
    f = write(tmp_path / "bad.pts", text)
    with pytest.raises(KtedgeError) as e:
        read_pts(f)
    assert str(f) + where in str(e.value)


def test_utkface_names():
    lab = parse_utkface_name("/data/UTKFace/26_1_0_20170116174525125.jpg.chip.jpg")
    assert (lab.age, lab.gender, lab.race) == (26, 1, 0)
    for bad in ("26_1_0.jpg", "abc_1_0_20170116174525125.jpg", "200_0_0_20170116174525125.jpg", "26_3_0_20170116174525125.jpg"):
        with pytest.raises(KtedgeError, match="UTKFace|116"):
            parse_utkface_name(bad)


def test_celeba_attribute_list(tmp_path):
    f = write(tmp_path / "list_attr_celeba.txt",
              "2\nSmiling Eyeglasses Bangs\n000001.jpg  1 -1 -1\n000002.jpg -1  1  1\n")
    att = read_celeba_attributes(f)
    assert att.names == ["Smiling", "Eyeglasses", "Bangs"] and att.files == ["000001.jpg", "000002.jpg"]
    np.testing.assert_array_equal(att.values, [[1, 0, 0], [0, 1, 1]])
    bad = write(tmp_path / "bad.txt", "2\nSmiling Bangs\n000001.jpg 1 -1\n000002.jpg 1 0\n")
    with pytest.raises(KtedgeError, match=r"bad.txt:4: attribute values must be 1 or -1"):
        read_celeba_attributes(bad)
    short = write(tmp_path / "short.txt", "3\nSmiling\n000001.jpg 1\n")
    with pytest.raises(KtedgeError, match=r"short.txt:1: header says 3 images"):
        read_celeba_attributes(short)


def test_label_csv(tmp_path):
    f = write(tmp_path / "labels.csv", "path,age,smiling\nimg/a.png,31,1\nimg/b.png,64.5,0\n")
    table = read_label_csv(f)
    assert table.columns == ["age", "smiling"]
    assert table.paths == [tmp_path / "img/a.png", tmp_path / "img/b.png"]
    np.testing.assert_allclose(table.labels, [[31, 1], [64.5, 0]])
    bad = write(tmp_path / "bad.csv", "path,age\na.png,31\nb.png,old\n")
    with pytest.raises(KtedgeError, match=r"bad.csv:3: column 'age' must be a number"):
        read_label_csv(bad)
    with pytest.raises(KtedgeError, match=r"nopath.csv:1: no 'path' column"):
        read_label_csv(write(tmp_path / "nopath.csv", "file,age\na.png,3\n"))
    with pytest.raises(KtedgeError, match="file not found"):
        read_label_csv(tmp_path / "missing.csv")
