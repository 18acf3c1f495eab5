"""MediaPipe's own face models: the detector ktedge predict finds faces with (its weights, in
model/blazeface.py) and the bench's peer rows (run in the same LiteRT interpreter as ours). They
ship inside the mediapipe==0.10.21 wheel (Apache-2.0), which needs numpy<2 and so is never
installed: `make install` downloads the wheel and this module extracts the two files into the
venv (`python -m ktedge.mediapipe_files WHEEL`), checking their sha256. Nothing is downloaded at
run time."""
from __future__ import annotations

import hashlib
import sys
import zipfile
from pathlib import Path

from ktedge.atomic import write_bytes
from ktedge.errors import KtedgeError

PEERS = {
    "mediapipe-face_landmark": ("mediapipe/modules/face_landmark/face_landmark.tflite",
                                "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814", "468 3-D landmarks"),
    "mediapipe-face_detection_short_range": (
        "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8", "BlazeFace short-range detector"),
}


def peers_dir() -> Path:
    return Path(sys.prefix) / "share" / "ktedge" / "peers"


def peer_path(name: str) -> Path | None:
    path = peers_dir() / Path(PEERS[name][0]).name
    return path if path.is_file() else None


def installed(name: str) -> Path:
    """The extracted file of `name`, or a KtedgeError saying how to get it."""
    path = peer_path(name)
    if path is None:
        raise KtedgeError(f"{Path(PEERS[name][0]).name} (MediaPipe's {PEERS[name][2]}) is not installed: "
                          f"run `make install`")
    return path


def install(wheel: str | Path) -> list[Path]:
    out = []
    with zipfile.ZipFile(wheel) as z:
        for name, (member, sha, _) in PEERS.items():
            data = z.read(member)
            if hashlib.sha256(data).hexdigest() != sha:
                raise KtedgeError(f"{wheel}: {member} has an unexpected sha256 (not the mediapipe 0.10.21 file)")
            dest = peers_dir() / Path(member).name
            write_bytes(dest, data)
            out.append(dest)
    return out


if __name__ == "__main__":
    for p in install(sys.argv[1]):
        print(f"MediaPipe model -> {p}")
