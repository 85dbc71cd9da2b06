"""Atomic file writes: readers see the old file or the new one, never half of one, with the usual permissions; the
lock file that lets concurrent runs share work; and the command-line exit that treats a closed stdout pipe as the
reader's choice."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn


def umask_mode(directory: bool = False) -> int:
    """The mode ``open``/``mkdir`` would give under the current umask; ``mkstemp``/``mkdtemp`` give owner-only
    files, which would hide shared results (cache, history shards, exports) from other users of a cluster."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def write_atomic(path: str | Path, data: bytes) -> None:
    """Writes ``data`` to a temporary sibling of ``path``, then renames it over ``path`` (parents are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def locked(path: Path, wait: bool) -> Iterator[bool]:
    """Holds an exclusive lock on the file ``path`` (created, with its folder) inside and yields True; yields False,
    holding nothing, when another process holds it and ``wait`` is False. The lock goes with its process, so a run
    that was killed leaves nothing held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def exit_with(main: Callable[[], int | None]) -> NoReturn:
    """Runs a command's ``main`` and exits with its status (None: 0). When the reader of stdout leaves first
    (``ptm-train --help | head``), that is no error: exit 0 with no BrokenPipeError traceback."""
    try:
        code = main()
        sys.stdout.flush()  # inside the try: a pipe closed early fails here, not at interpreter exit
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not raise again
        code = 0
    sys.exit(code or 0)
