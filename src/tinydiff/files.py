"""Every file TinyDiff writes goes through here: written whole or not at all.

A file is written to a temporary sibling and renamed into place; a folder is filled
as a temporary sibling, fsynced and renamed. Either way a crash, a full disk or a
Ctrl-C leaves the old content or nothing, never half of a file. Temporary files
get the permissions a plain ``open`` would give them (the umask applied).

Names that count steps (``step-000010/`` checkpoints, ``step-000010.png``
snapshots) are made and parsed here too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

_STEP_NAME = re.compile(r"^step-(\d+)$")


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: never a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_bytes(data: Any) -> bytes:
    """The one way TinyDiff writes a JSON file: indented, UTF-8, with a final newline."""
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def write_json(path: str | Path, data: Any) -> None:
    """:func:`json_bytes`, written atomically."""
    write_atomic(path, json_bytes(data))


def write_folder_atomic(target: Path, files: dict[str, bytes]) -> None:
    """Fill a temporary sibling folder, fsync it, then rename it to ``target`` (replacing one already there)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; others may read a model folder
        if target.exists():
            old = target.with_name(f".old-{target.name}-{os.getpid()}")
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_files_atomic(folder: Path, files: dict[str, bytes]) -> None:
    """Add files to an existing folder all together: each is written to a temporary name first, and
    only when every one is written are they renamed into place (on any failure none appears)."""
    written: list[tuple[str, Path]] = []
    try:
        for name, data in files.items():
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
            written.append((name, Path(tmp)))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~current_umask())
    except BaseException:
        for _, tmp in written:
            tmp.unlink(missing_ok=True)
        raise
    for name, tmp in written:
        os.replace(tmp, folder / name)


def step_name(step: int) -> str:
    """``step-000010``: the name of a checkpoint folder, and of a snapshot without its ``.png``."""
    return f"step-{step:06d}"


def parse_step_name(name: str) -> int | None:
    """The step of a ``step-NNNNNN`` name, None for any other name."""
    m = _STEP_NAME.match(name)
    return int(m.group(1)) if m else None
