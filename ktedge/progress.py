"""Terminal output: rich progress bars for long work (quiet where there is no terminal), and the
converters' own chatter kept out of the way in log files."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def _own_stderr() -> Console:
    """A console on its own copy of stderr, so it still reaches the terminal while
    `converter_log` points file descriptors 1 and 2 at a log file."""
    try:
        return Console(file=os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1))
    except (OSError, ValueError, AttributeError):  # no real stderr (e.g. captured by a test runner)
        return Console(stderr=True)


console = _own_stderr()
if not console.is_terminal:  # a log file or CI: wide enough for the result tables, no wrapped cells
    console.width = max(console.width, 140)
_verbose = False


@contextlib.contextmanager
def progress() -> Iterator[Progress]:
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    )
    with bar:
        yield bar


def quiet_library_logs(verbose: bool = False) -> None:
    """torchao warns at import about CUDA kernels a CPU build cannot load, torch about an Enum
    registration of torchao's, and torch.export's internals raise Future/DeprecationWarnings;
    none concerns a user. `verbose` (--debug) keeps them and the converters' output."""
    global _verbose
    _verbose = verbose
    if verbose:
        return
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def is_verbose() -> bool:
    return _verbose


@contextlib.contextmanager
def converter_log(log: Path) -> Iterator[Path]:
    """Send everything printed inside the block, by Python or native code (coremltools, the
    LiteRT converter, ExecuTorch's partitioners), to `log` instead of the terminal. A diagnostic
    file, not an artifact: it is written in place and kept when the block fails."""
    if _verbose:
        yield log
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "w") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield log
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
