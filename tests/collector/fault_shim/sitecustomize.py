"""A state dir that fails while the agent runs, for the process it starts in (a test's agent).

While the file named by ``EDGELOOP_TEST_FAULT_FILE`` exists, the process's writes under
``EDGELOOP_TEST_FAULT_DIR`` fail with the errno the file names. ``EROFS``: every open for
writing, write, truncate, fallocate, rename, unlink and mkdir fails, as on a filesystem the
kernel remounted read-only after an error. ``ENOSPC``: what needs new blocks fails (creating,
writing, fallocate, mkdir), as on a full disk; truncating, renaming and unlinking still work.
``EIO``: only fsync fails, as when the disk cannot write back what the page cache holds.
Reads always work.
"""

import builtins
import errno
import io
import os

_fault_file = os.environ.get("EDGELOOP_TEST_FAULT_FILE")
_fault_dir = os.path.realpath(os.environ.get("EDGELOOP_TEST_FAULT_DIR", "/nonexistent")) + os.sep


def _fault() -> int | None:
    try:
        with _open(_fault_file, encoding="ascii") as handle:
            return getattr(errno, handle.read().strip() or "EROFS")
    except FileNotFoundError:
        return None


def _inside(path) -> bool:
    try:
        return os.path.realpath(os.fspath(path)).startswith(_fault_dir)
    except TypeError:  # an fd
        return isinstance(path, int) and _fd_inside(path)


def _fd_inside(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith(_fault_dir)
    except OSError:
        return False


def _refuse(code: int, what) -> None:
    raise OSError(code, os.strerror(code), str(what))


def _applies(code, *, fsync: bool, frees: bool) -> bool:
    if code is None or (code == errno.EIO) != fsync:
        return False
    return not (frees and code == errno.ENOSPC)


def _by_path(real, *, fsync=False, frees=False, writing=lambda *args, **kwargs: True):
    def wrapper(path, *args, **kwargs):
        if _applies(_fault(), fsync=fsync, frees=frees) and writing(*args, **kwargs) and _inside(path):
            _refuse(_fault(), path)
        return real(path, *args, **kwargs)

    return wrapper


def _by_fd(real, *, fsync=False, frees=False):
    def wrapper(fd, *args, **kwargs):
        if _applies(_fault(), fsync=fsync, frees=frees) and _fd_inside(fd if isinstance(fd, int) else fd.fileno()):
            _refuse(_fault(), fd)
        return real(fd, *args, **kwargs)

    return wrapper


def _writing_mode(mode="r", *args, **kwargs) -> bool:
    return any(flag in mode for flag in "wax+")


def _writing_flags(flags, *args, **kwargs) -> bool:
    return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))


if _fault_file:
    _open = builtins.open
    builtins.open = io.open = _by_path(builtins.open, writing=_writing_mode)
    os.open = _by_path(os.open, writing=_writing_flags)
    os.mkdir = _by_path(os.mkdir)
    for _name in ("unlink", "remove", "rmdir", "rename", "replace"):
        setattr(os, _name, _by_path(getattr(os, _name), frees=True))
    for _name in ("write", "writev", "posix_fallocate"):
        setattr(os, _name, _by_fd(getattr(os, _name)))
    os.ftruncate = _by_fd(os.ftruncate, frees=True)
    os.fsync = _by_fd(os.fsync, fsync=True)
