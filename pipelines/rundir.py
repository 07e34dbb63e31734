"""The run directory (DESIGN §7): atomic JSON writes, file hashes, stage folder names, and the
lock that keeps a second process out while one writes."""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipelines.errors import PrivcompError

LOCK = ".lock"


def write_atomic(path: Path, text: str) -> None:
    """Write a temp file in the same folder, then rename: a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Standard JSON (what jq and JSON.parse read): a non-finite float, e.g. an RDP curve
    unbounded at an order, is written as null."""
    text = json.dumps(_finite(data), indent=2, default=_jsonable, allow_nan=False)
    write_atomic(path, text + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PrivcompError(f"{path} is damaged (not JSON: {exc}); restore it") from exc


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def sha256_of(path: Path) -> str:
    """Hash of a file, or of every file under a folder (names included), in a stable order."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def stage_dir_name(position: int, stage: str) -> str:
    return f"{position:02d}-{stage}"


@contextmanager
def locked(run_dir: Path, *, option: str | None = "--run-dir") -> Iterator[None]:
    """Hold the run dir's lock: an exclusive flock on its file .lock, released when the process
    ends, even on kill -9 (two processes writing one run would both release the members and race
    on the ledger and the release log). The file names the holder's pid while it is held.
    `option`: the command-line option that names the folder, for the refusal's hint (None: the
    folder is the command's argument, and only waiting helps)."""
    lock = run_dir / LOCK
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = lock.open("a+")  # never truncated before the lock is ours: it names the holder
    except OSError as exc:
        raise PrivcompError(f"cannot write to {run_dir}: {exc.strerror}") from exc
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            pid = f"pid {holder}, " if holder.isdigit() else ""
            raise PrivcompError(
                f"{run_dir} is in use by another privcomp process ({pid}lock file {lock}); "
                "wait for it to finish" + (f" or pass another {option}" if option else "")
            ) from None
        try:
            handle.truncate(0)
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)
