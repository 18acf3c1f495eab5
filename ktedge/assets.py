"""Third-party files ktedge uses but does not ship, extracted at install into the venv with their
sha256 checked; nothing is downloaded at run time.

- MediaPipe's face models (Apache-2.0): the detector `ktedge predict` finds faces with and the
  FaceMesh network (their weights, read by model/blazeface.py and model/facemesh.py), and the
  bench's peer rows (run in the same LiteRT interpreter as ours). They ship inside the
  mediapipe==0.10.21 wheel, which needs numpy<2 and so is never installed.
- The MTCNN O-Net's weights (MIT), read by model/onet.py: they ship inside the
  facenet-pytorch==2.6.0 wheel, whose metadata pins numpy<2 and torch<2.3, so it is never installed.
- Real photos from the insightface 2.1 source archive (MIT): a 6-person group photo and a
  portrait, for the real-photo checks (model/data/photos.py).

`make install` downloads the three archives and runs `python -m ktedge.assets ARCHIVE...`."""
from __future__ import annotations

import hashlib
import sys
import tarfile
import zipfile
from pathlib import Path

from ktedge.atomic import write_bytes
from ktedge.errors import KtedgeError

# name -> (member of its archive, sha256, what it is)
PEERS = {
    "mediapipe-face_landmark": ("mediapipe/modules/face_landmark/face_landmark.tflite",
                                "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814", "468 3-D landmarks"),
    "mediapipe-face_detection_short_range": (
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8", "BlazeFace short-range detector"),
}
PHOTOS = {
    "insightface-t1": ("insightface-2.1/insightface/data/images/t1.jpg",
                       "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489", "6-person group photo"),
    "insightface-tom_hanks": ("insightface-2.1/insightface/data/images/Tom_Hanks_54745.png",
                              "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083", "portrait"),
}
WEIGHTS = {
    "facenet-onet": ("facenet_pytorch/data/onet.pt",
                     "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d", "MTCNN O-Net weights"),
}
FILES = {**PEERS, **PHOTOS, **WEIGHTS}


def assets_dir() -> Path:
    return Path(sys.prefix) / "share" / "ktedge" / "assets"


def asset_path(name: str) -> Path | None:
    """The extracted file of `name` (a key of FILES), or None where it is not installed."""
    path = assets_dir() / Path(FILES[name][0]).name
    return path if path.is_file() else None


def installed(name: str) -> Path:
    """The extracted file of `name`, or a KtedgeError saying how to get it."""
    if name not in FILES:
        raise KtedgeError(f"'{name}' is not a file ktedge installs (one of {', '.join(FILES)})")
    path = asset_path(name)
    if path is None:
        member, _, what = FILES[name]
        raise KtedgeError(f"{Path(member).name} ({what}, {name.split('-')[0]}) is not installed: run `make install`")
    return path


def _members(archive: Path) -> dict[str, bytes]:
    """The archive's members that ktedge uses, by member name."""
    wanted = {member for member, _, _ in FILES.values()}
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            return {m: z.read(m) for m in z.namelist() if m in wanted}
    with tarfile.open(archive) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers() if m.name in wanted and m.isfile()}


def install(archive: str | Path) -> list[Path]:
    """Extract the files ktedge uses from `archive`, refusing one whose sha256 is not the pinned file's."""
    archive = Path(archive)
    found = _members(archive)
    if not found:
        raise KtedgeError(f"{archive}: holds none of the files ktedge uses")
    out = []
    for member, sha, _ in FILES.values():
        if member not in found:
            continue
        if hashlib.sha256(found[member]).hexdigest() != sha:
            raise KtedgeError(f"{archive}: {member} has an unexpected sha256 (not the pinned release's file)")
        dest = assets_dir() / Path(member).name
        write_bytes(dest, found[member])
        out.append(dest)
    return out


if __name__ == "__main__":
    for a in sys.argv[1:]:
        for p in install(a):
            print(f"{Path(a).name} -> {p}")
