"""Checkpoints are data, never code: a state dict plus the config, loaded with weights_only=True."""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch
from torch import nn

from ktedge.atomic import write_serialized
from ktedge.config import Config, config_from_dict
from ktedge.errors import KtedgeError

FORMAT = "ktedge.kt_model/1"


def save_checkpoint(path: str | Path, model: nn.Module, cfg: Config) -> None:
    """The weights and the config, and the sha256 of each program encoder the model was trained on."""
    from ktedge.model.encoders import pretrained_digest

    state = {"format": FORMAT, "config": cfg.to_dict(), "state_dict": model.state_dict(),
             "pretrained_sha256": pretrained_digest(cfg)}
    write_serialized(path, lambda f: torch.save(state, f))


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict, or a KtedgeError that says what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise KtedgeError(f"{path}: checkpoint not found (run `ktedge train --out DIR` first)")
    if path.stat().st_size == 0:
        raise KtedgeError(f"{path}: checkpoint is empty (0 bytes); re-run `ktedge train`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # The safe unpickler names the global a pickle tried to reach (e.g. posix.system).
        code = re.search(r"GLOBAL (\S+)", str(e))
        if code:
            raise KtedgeError(f"{path}: refused to load: the file references code ({code.group(1)}), not just tensors "
                              "(checkpoints load with weights_only=True; never from untrusted sources)") from None
        raise KtedgeError(f"{path}: truncated or corrupt checkpoint (not a torch.save file); re-run `ktedge train`") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise KtedgeError(f"{path}: truncated or corrupt checkpoint ({str(e).splitlines()[0][:120]}); "
                          "re-run `ktedge train`") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise KtedgeError(f"{path}: not a ktedge KT-model checkpoint (expected format '{FORMAT}')")
    for key in ("config", "state_dict"):
        if not isinstance(state.get(key), dict):
            raise KtedgeError(f"{path}: checkpoint has no '{key}' mapping")
    return state


def load_checkpoint(path: str | Path) -> tuple[nn.Module, Config]:
    """-> the model its stored config describes (a KTModel, or another system's model), eval mode.
    A program encoder it was trained on must be the same file still (its sha256)."""
    from ktedge.model.encoders import pretrained_digest
    from ktedge.model.systems import get

    state = read_checkpoint(path)
    cfg = config_from_dict(state["config"], f"{path} (stored config)")
    recorded = state.get("pretrained_sha256") or {}
    now = pretrained_digest(cfg)
    for prior, sha in recorded.items():
        if now.get(prior) != sha:
            what = "is missing" if prior not in now else "has changed since (its sha256 differs)"
            raise KtedgeError(f"{prior}: the pretrained encoder {path} was trained on {what}; restore the file "
                              f"or re-run `ktedge train`")
    model = get(cfg.model.system).build(cfg, False)
    ours, theirs = model.state_dict(), state["state_dict"]
    missing = sorted(set(ours) - set(theirs))
    unexpected = sorted(set(theirs) - set(ours))
    shapes = [k for k in set(ours) & set(theirs) if tuple(ours[k].shape) != tuple(theirs[k].shape)]
    if missing or unexpected or shapes:
        detail = "; ".join(f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                           for what, keys in (("missing", missing), ("unexpected", unexpected),
                                              ("shape mismatch", sorted(shapes))) if keys)
        raise KtedgeError(f"{path}: weights do not match the architecture in its config ({detail})")
    model.load_state_dict(theirs)
    return model.eval(), cfg
