"""Atomic file writes: a reader never sees a half-written results, metrics, predictions, cache or plot
file, even after a kill -9 or a power cut; and a write that cannot happen (read-only or missing
directory, a file where a directory should be, a full disk) is one OutputError naming the path.

Every write goes to a temporary file in the target's directory, is flushed to disk, and is then
renamed over the target (rename is atomic within a file system); the directory is synced so the
rename itself survives a crash. Directories (model checkpoints) are built under a temporary name and
renamed into place the same way.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class OutputError(OSError):
    """An output that could not be written; the message names the path and the reason."""

    def __str__(self) -> str:
        return str(self.strerror)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _explain(path: Path, err: OSError) -> OutputError:
    reason = err.strerror or str(err)
    if err.errno == errno.ENOSPC:
        reason = "no space left on the device"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = f"not writable ({err.strerror})"
    elif err.errno in (errno.ENOTDIR, errno.EEXIST) and not path.parent.is_dir():
        reason = f"{_first_non_directory(path.parent)} is not a directory"
    return OutputError(err.errno, f"cannot write {path}: {reason}")


def _first_non_directory(path: Path) -> Path:
    for parent in [*reversed(path.parents), path]:
        if parent.exists() and not parent.is_dir():
            return parent
    return path


def _mkdir(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _explain(path, err) from err


def ensure_dir(path: Path) -> Path:
    """`path` as an existing, writable directory, or an OutputError saying why it cannot be one."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.TemporaryFile(dir=path)  # root ignores permission bits, not a read-only mount
        probe.close()
    except OSError as err:
        raise _explain(path / ".", err) from err
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some file systems do not open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` (same suffix, so writers that go by it pick the right format);
    renamed over `path` when the block ends without an error, removed when it fails."""
    path = Path(path)
    _mkdir(path)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
        os.close(fd)
    except OSError as err:
        raise _explain(path, err) from err
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are meant to be shared
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise (err if isinstance(err, OutputError) else _explain(path, err)) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def copy_file_atomic(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A temporary directory beside `path`, put in place of `path` when the block succeeds
    (replace_dir)."""
    path = Path(path)
    _mkdir(path)
    try:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as err:
        raise _explain(path, err) from err
    try:
        yield tmp
        replace_dir(tmp, path)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise (err if isinstance(err, OutputError) else _explain(path, err)) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(tmp: Path, path: Path) -> None:
    """Put the complete directory `tmp` in place of `path` (for directories several processes fill,
    such as a distributed training state; atomic_dir is the one-process form). Replacing an existing
    directory takes two renames; a kill between them leaves `path` missing (and the old copy under a
    `.old` name), never half-written."""
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    _fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if missing) between processes of this machine: one model
    conversion, pretraining or training run at a time; a second process waits, then finds the work done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
