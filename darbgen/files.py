"""Files a user hands us, and the files we write for them (numpy only, never torch).

Every file a user names is hostile until read: it may be a FIFO that never ends,
``/dev/zero``, a terabyte, or the very file the command is about to write. So

* inputs are opened without blocking and read only when they are regular files,
  and never past a size limit (:func:`open_input`, :func:`read_input`);
* an output is checked before any work (:func:`check_output`): it must be a
  regular file or not exist yet, in an existing directory we can write, and must
  not be one of the command's inputs;
* an output is written atomically (:func:`atomic_write`) into an unnamed file
  (``O_TMPFILE``) that gets its name only when complete: a failure, even
  ``kill -9``, never leaves a half-written output or a stray temporary file.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

__all__ = ["MAX_INPUT_BYTES", "open_input", "read_input", "check_output", "atomic_write"]

#: Largest file (artifact, ``.npy`` matrix or input vectors) any command reads.
MAX_INPUT_BYTES = 256 << 20


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_input(path, *, max_bytes: int = MAX_INPUT_BYTES, what: str = "a file"):
    """Open ``path`` for reading when it is a regular file of at most ``max_bytes``.

    The file is opened with ``O_NONBLOCK`` and checked on the open descriptor, so a
    FIFO cannot hang the open and a file swapped after a check is still caught.

    Returns
    -------
    file object
        Binary, positioned at the start; the caller closes it.

    Raises
    ------
    ValueError
        No such file, not a regular file, unreadable, or too large; the message names
        the path.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not {what}") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path}: is {_kind(st.st_mode)}, not {what}")
        if st.st_size > max_bytes:
            raise ValueError(f"{path}: is {st.st_size} bytes, more than the {max_bytes} "
                             f"{what} may have")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_input(path, *, max_bytes: int = MAX_INPUT_BYTES, what: str = "a file") -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (see :func:`open_input`)."""
    with open_input(path, max_bytes=max_bytes, what=what) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:          # grew after the check
        raise ValueError(f"{path}: is more than the {max_bytes} bytes {what} may have")
    return data


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _refuse_special(path: Path) -> None:
    """Raise ``ValueError`` when ``path`` exists and is not a regular file (a rename
    would replace a device node, a FIFO or a socket)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ValueError(f"{path}: cannot be an output file ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path}: is {_kind(st.st_mode)}, not an output file")


def check_output(path, inputs=()) -> None:
    """Fail before any work when ``path`` cannot safely become an output file.

    Parameters
    ----------
    path : path-like
        The output file.
    inputs : iterable of path-like
        The command's input files: the output must not replace any of them.

    Raises
    ------
    ValueError
        ``path`` is a directory or a special file (device, FIFO, socket), is one of
        ``inputs``, or its directory is missing or not writable.
    """
    path = Path(path)
    _refuse_special(path)
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise ValueError(f"{path}: is the command's input {source}; write the output "
                             "to another file")
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(f"{parent}: no such directory for the output")
    try:                               # what access() cannot tell as root: try it
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise ValueError(f"{parent}: cannot write the output there ({e.strerror})") from None


def _unnamed_file(parent: Path):
    """An unnamed file in ``parent`` (``O_TMPFILE``), or ``None`` where the system or
    file system has none."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:
        return None
    try:
        return os.open(parent, flag | os.O_RDWR, 0o666)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            return None
        raise


_AT_FDCWD, _AT_EMPTY_PATH = -100, 0x1000


def _give_name(fd: int, name: Path) -> bool:
    """Link the unnamed file ``fd`` to ``name``: ``linkat(fd, "", ..., AT_EMPTY_PATH)``
    (Linux; os.link cannot pass an empty path), else through ``/proc/self/fd``."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.linkat(fd, b"", _AT_FDCWD, os.fsencode(name), _AT_EMPTY_PATH) == 0:
            return True
    except (OSError, AttributeError):
        pass
    try:
        os.link(f"/proc/self/fd/{fd}", name, follow_symlinks=True)
        return True
    except OSError:
        return False


def _named_copy(fd: int, parent: Path, name: str) -> Path:
    """A hidden named copy of the unnamed file ``fd``."""
    out_fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{name}.", suffix=".tmp")
    try:
        os.fchmod(out_fd, os.fstat(fd).st_mode & 0o777)
        with os.fdopen(out_fd, "wb") as out, os.fdopen(os.dup(fd), "rb") as src:
            src.seek(0)
            shutil.copyfileobj(src, out)
    except BaseException:              # a failed copy leaves no hidden file either
        os.unlink(tmp)
        raise
    return Path(tmp)


def atomic_write(path, write) -> None:
    """Call ``write(file)`` on a new file next to ``path``, then put it in place.

    The data goes into an unnamed file where the system has them, so a killed process
    leaves nothing behind; elsewhere into a hidden temporary file. Only a complete file
    is renamed over ``path``, and never over a directory or a special file.

    Raises
    ------
    ValueError
        ``path`` exists and is not a regular file.
    """
    path = Path(path)
    parent = path.parent
    fd, tmp = _unnamed_file(parent), None
    if fd is None:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(tmp)
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)          # mkstemp makes 0600; give the usual mode
        if tmp is None:                        # name it only now that it is complete
            name = parent / f".{path.name}.{os.urandom(6).hex()}.tmp"
            if _give_name(fd, name):
                tmp = name
            else:                              # no way to name it here: copy it
                tmp = _named_copy(fd, parent, path.name)
        _refuse_special(path)                  # again: it may have changed since the check
        os.replace(tmp, path)
        tmp = None
    finally:
        os.close(fd)
        if tmp is not None:
            os.unlink(tmp)
