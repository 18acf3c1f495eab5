"""ktedge's published models: real pre-trained face models ktedge deploys beside a run's own
(`published:` in the config), each a spec here imported through `ktedge import` like a user's."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

SHIPPED = ("mtcnn-onet", "facemesh", "blazeface")


def shipped_spec(name: str) -> Path:
    """The path of a published model's spec inside the installed package."""
    return Path(str(resources.files("ktedge.specs").joinpath(f"{name}.yaml")))
