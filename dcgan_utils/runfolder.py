"""The run folder: files written atomically, one trainer at a time, and a previous run moved aside, never deleted.

A write goes to a fresh, exclusively created temporary file in the same folder and is renamed over the target,
so a crash, a full disk or a signal leaves either the old file or the new one, never half of one, and no write
follows a symlink someone planted in the run folder. Files get the permissions any other tool would give them
(0o666 minus the umask), so a run can be shared.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import time
import weakref
from pathlib import Path
from typing import IO, Callable

try:
    import fcntl
except ImportError:  # Windows: run folders are not locked there
    fcntl = None

LOCK_NAME = ".lock"
MAX_TEMP_PREFIX = 60  # characters of the target's name in a temporary file's name (a long name must still fit)


class WriteError(OSError):
    """A file could not be written; the message names it and says what to do, and the previous file is intact."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno N]"
        return self.strerror or super().__str__()


class DiskFullError(WriteError):
    """A write ran out of disk space; the previous file (if any) is intact."""


class RunFolderError(ValueError):
    """A run folder cannot be used (a file, not writable, or in use by another trainer); the message says why."""


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it, else by setting it back at once."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_error(err: OSError, path: Path) -> WriteError:
    """``err`` from writing ``path``, in plain words naming ``path`` (not a temporary file) and the fix."""
    path = Path(path)
    reasons = {
        errno.EISDIR: f"{path} is a folder; move or rename it, or write somewhere else (--out)",
        errno.ENOTDIR: f"{path.parent} (or a folder above it) is a file, not a folder; write somewhere else (--out)",
        errno.ENAMETOOLONG: f"the name is too long for the file system ({len(path.name)} characters); choose a "
                            "shorter one",
        errno.ENOENT: f"its folder {path.parent} does not exist (any more); create it or write somewhere else (--out)",
        errno.EACCES: f"{path.parent} is not writable; make it writable or write somewhere else (--out)",
        errno.EPERM: f"{path.parent} is not writable; make it writable or write somewhere else (--out)",
        errno.EROFS: f"{path.parent} is on a read-only file system; write somewhere else (--out)",
    }
    reason = reasons.get(err.errno, f"{err.strerror or err}; write somewhere else (--out)")
    return WriteError(err.errno, f"Cannot write {path}: {reason}; {_what_is_kept(path)}")


def _what_is_kept(path: Path) -> str:
    try:
        return f"the previous {path.name} is intact" if path.is_file() else "nothing was written"
    except OSError:  # a path the file system refuses (a name too long): nothing can be there
        return "nothing was written"


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(file)`` on a new temporary file next to ``path``, fsync it and rename it over ``path``.

    The temporary file has a unique name and is created exclusively (``O_EXCL``), so two writers never share
    one and a symlink in its place is never followed; the rename replaces a symlink at ``path`` instead of
    writing through it. On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    try:  # a short prefix: a name that fits the file system must not fail for its temporary file's longer name
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:MAX_TEMP_PREFIX]}.", suffix=".tmp")
    except OSError as err:
        raise (_disk_full(err, path) or write_error(err, path)) from err
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # mkstemp creates 0o600; other tools' files get 0o666 minus the umask
                os.fchmod(f.fileno(), 0o666 & ~_umask())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError) and not isinstance(err, WriteError):
            raise (_disk_full(err, path) or write_error(err, path)) from err
        raise
    return path


def _disk_full(err: OSError, path: Path) -> DiskFullError | None:
    if err.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    return DiskFullError(err.errno, f"No space left to write {path}: {_what_is_kept(path)}; free some disk space "
                                    "(or use another --out) and run again")


def prepare_run_folder(folder: str | Path) -> Path:
    """Create ``folder`` if needed and check that files can be written in it (before any training), with a
    one-line :class:`RunFolderError` if it is a file or is not writable."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder} is a file, not a folder: choose another output folder (--out)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise RunFolderError(f"Cannot write in the output folder {folder} ({err.strerror or err}): make it writable "
                             "or choose another output folder (--out)") from err
    return folder


def move_aside(folder: str | Path, keep: tuple[str, ...] = (LOCK_NAME,)) -> Path | None:
    """Move everything in ``folder`` (but ``keep``) into a new sibling ``FOLDER.old-YYYYmmdd-HHMMSS``; return
    it, or None if there was nothing to move. Starting a run over never deletes the old one."""
    folder = Path(folder)
    entries = [p for p in folder.iterdir() if p.name not in keep] if folder.is_dir() else []
    if not entries:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    old = folder.with_name(f"{folder.name}.old-{stamp}")
    for n in range(2, 1000):
        try:
            old.mkdir()
            break
        except FileExistsError:
            old = folder.with_name(f"{folder.name}.old-{stamp}-{n}")
    try:
        for entry in entries:
            os.rename(entry, old / entry.name)
    except OSError as err:
        raise RunFolderError(f"Could not move the previous run in {folder} aside to {old} ({err.strerror or err}); "
                             "move or delete it yourself, or choose another output folder (--out)") from err
    return old


class RunLock:
    """One trainer per run folder: an exclusive ``fcntl.flock`` on ``FOLDER/.lock``.

    The OS releases the lock when the process ends however it ends, so a crash never leaves a stale lock. A
    second process asking for a held folder gets a one-line :class:`RunFolderError`. In one process (a notebook
    re-running a cell, a test), a new lock takes the folder over from a lock whose owner is idle (``busy``
    False, i.e. not inside ``fit()``); the owner that lost it re-acquires it when it needs it again. Without
    ``fcntl`` (Windows) nothing is locked.
    """

    _in_process: dict[tuple[int, int], "weakref.ref[RunLock]"] = {}  # (st_dev, st_ino) of .lock -> its holder

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.busy = False
        self._fd: int | None = None
        self._key: tuple[int, int] | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        if fcntl is None or self._fd is not None:
            return self
        path = self.folder / LOCK_NAME
        try:
            if path.is_symlink():  # never open a planted link: replace it with our own file
                path.unlink()
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                         0o644)
        except OSError as err:
            raise RunFolderError(f"Cannot lock the output folder {self.folder} ({err.strerror or err}): make it "
                                 "writable or choose another output folder (--out)") from err
        stat = os.fstat(fd)
        key = (stat.st_dev, stat.st_ino)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = self._in_process.get(key)
            holder = holder() if holder is not None else None
            if holder is None or holder.busy or not holder.held:
                os.close(fd)
                raise RunFolderError(self._in_use_message(path)) from None
            holder.release()  # an idle trainer of this process: take the folder over
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise RunFolderError(self._in_use_message(path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd, self._key = fd, key
        self._in_process[key] = weakref.ref(self)
        return self

    def _in_use_message(self, path: Path) -> str:
        with contextlib.suppress(OSError, ValueError):
            pid = int(path.read_text().strip() or 0)
            if pid and pid != os.getpid():
                return (f"{self.folder} is in use by another trainer (process {pid}): wait for it to finish, stop "
                        "it, or choose another output folder (--out)")
        return (f"{self.folder} is in use by another trainer: wait for it to finish, stop it, or choose another "
                "output folder (--out)")

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self._key is not None and (ref := self._in_process.get(self._key)) is not None and ref() is self:
            del self._in_process[self._key]
        with contextlib.suppress(OSError):
            os.close(fd)  # closing the descriptor releases the flock

    def __del__(self):
        self.release()


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What identifies one version of a file (inode, mtime, size), or None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class RunFolder:
    """One trainer's run folder: locked from ``open()`` to the end of each ``fit()``, written atomically.

    Under torchrun only rank 0 (``is_main``) touches the folder; the other ranks' calls do nothing.
    """

    def __init__(self, folder: str | Path, is_main: bool = True, data_dir: str | Path | None = None):
        self.folder, self.is_main, self.data_dir = Path(folder), is_main, data_dir
        self.lock = RunLock(self.folder)
        self._checkpoint_stamp: tuple[int, int, int] | None = None

    def open(self, start_over: bool = False) -> None:
        """Create and lock the folder (refused in one line if it cannot be written or is in use); with
        ``start_over``, move a previous run aside."""
        if not self.is_main:
            return
        prepare_run_folder(self.folder)
        self.lock.acquire()
        if start_over and (old := move_aside(self.folder)) is not None:
            print(f"Starting over: the previous run in {self.folder} was moved to {old}")

    def remember_checkpoint(self, name: str = "checkpoint.pt") -> None:
        """Note which version of the checkpoint this trainer loaded (or that there was none)."""
        self._checkpoint_stamp = _file_stamp(self.folder / name)

    def take(self, checkpoint: Path) -> None:
        """Lock the folder again for a fit(); refused if another trainer wrote the checkpoint since."""
        if not self.is_main:
            return
        self.lock.acquire()
        stamp = _file_stamp(checkpoint)
        if stamp is not None and stamp != self._checkpoint_stamp:
            self.lock.release()
            raise RunFolderError(f"{checkpoint} was written by another trainer after this one loaded it: create a "
                                 "new Trainer to continue from it (this one would overwrite it)")
        self.lock.busy = True

    def release(self) -> None:
        self.lock.busy = False
        self.lock.release()

    def save_checkpoint(self, state: dict, history: dict, name: str = "checkpoint.pt") -> None:
        """The checkpoint, then history.json (a copy of the history for other tools), each atomically."""
        import json

        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.folder / name, lambda f: torch.save(state, f))
        atomic_write(self.folder / "history.json", lambda f: f.write(json.dumps(history).encode()))
        self.remember_checkpoint(name)
