"""Output files that never destroy input: checked before any work, written through a temporary file.

`check_output` refuses, before a command does anything, an output that would overwrite one of its
inputs (the dataset, a calibration, a model folder), a folder, something that is not a regular file
(a device, a FIFO, a socket: a rename would put a file where it was), a path under a file, and a
folder that does not exist. `atomic_output` writes next to the target and renames into place, so a
crash or a full disk leaves the old file (or nothing) behind, never half a file; it checks again
just before the rename and never renames over anything but a regular file.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError


def _absolute(path: str | Path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser()))


def _same_file(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _special(path: Path) -> str | None:
    """What `path` is when it exists and is neither a regular file nor a folder (a symbolic link is
    followed; one that leads nowhere counts too), else None."""
    if not os.path.lexists(path):
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "a broken symbolic link"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _refuse_special(path: Path, what: str, given) -> None:
    kind = _special(path)
    if kind is not None:
        raise InputError(f"{what} {given} is {kind}, not a regular file: writing there would replace it; "
                         "name a regular file")


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(folder))
    except ValueError:
        return False
    return True


def check_output(path: str | Path, inputs: Iterable[str | Path | None] = (), what: str = "the output",
                 create_folder: bool = False) -> Path:
    """The output `path`, made absolute, or an InputError saying why it cannot be written.

    Refused: an existing folder, a path under a file, a folder that does not exist (unless
    `create_folder`), and any path equal to an input file or inside an input folder (`inputs`:
    the files and folders the command reads; None entries are ignored).
    """
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise InputError(f"{what} needs a file name, not {path!r}")
    out = _absolute(path)
    _refuse_special(out, what, path)
    if out.is_dir():
        raise InputError(f"{what} {path} is a folder: name a file inside it")
    for given in inputs:
        if given is None or not str(given).strip():
            continue
        source = _absolute(given)
        if source.is_dir() and _inside(out, source):
            raise InputError(f"{what} {path} is inside the input folder {given}: write it somewhere else")
        if _same_file(out, source):
            raise InputError(f"{what} {path} is the input file {given}: writing it would destroy the input; "
                             "choose another name")
    parent = out.parent
    ancestor = parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{what} {path} is under {ancestor}, which is a file, not a folder")
    if not parent.is_dir() and not create_folder:
        raise InputError(f"{what} {path}: the folder {parent} does not exist; create it first")
    writable = os.access(out, os.W_OK) if out.exists() else not parent.is_dir() or os.access(parent, os.W_OK)
    if not writable:
        raise InputError(f"{what} {path} cannot be written (no permission)")
    return out


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` when the block ends without an
    error, removed otherwise. The folder is created if missing. A symbolic link to a regular file is
    followed (the link stays); anything that is not a regular file is refused (InputError), before
    and again just before the rename."""
    target = Path(os.path.realpath(Path(path).expanduser()))
    _refuse_special(target, "the output", path)
    if target.is_dir():
        raise InputError(f"the output {path} is a folder: name a file inside it")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        _refuse_special(target, "the output", path)  # it may have changed while we wrote
        if target.is_dir():
            raise InputError(f"the output {path} is a folder: name a file inside it")
        if target.exists():  # keep the permissions a user gave the old file
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask is process-wide, not for threads to toggle


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through a temporary file renamed into place."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
