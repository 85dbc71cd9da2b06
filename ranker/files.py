"""Atomic file writes: readers see the old file or the new one, never half of one, with the usual permissions."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
