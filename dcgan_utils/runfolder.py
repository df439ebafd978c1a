"""The run folder: files written atomically, one trainer at a time, and a previous run moved aside, never deleted.

A write goes to a fresh, exclusively created temporary file in the same folder and is renamed over the target,
so a crash, a full disk or a signal leaves either the old file or the new one, never half of one, and no write
follows a symlink someone planted in the run folder. Files get the permissions any other tool would give them
(0o666 minus the umask), so a run can be shared.

The course writes only in folders that are its own: a new or empty folder, or a run folder it wrote before
(marked by a small ``.dcgan-run`` file). A folder holding anything else (the user's photos, their home folder) is
refused before anything is created, moved or written in it; ``--no-resume`` sets aside only a run folder, never
the data folder, a folder inside it or holding it, nor the current folder or one holding it.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
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
MARKER_NAME = ".dcgan-run"  # written in every run folder: what makes it safe to resume in or to set aside
MARKER_TEXT = ("A run folder of dcgan_utils (python -m dcgan_utils train --out ...). Training with --no-resume "
               "moves its files aside to FOLDER.old-YYYYmmdd-HHMMSS/; nothing here is deleted.\n")
RUN_FILES = ("checkpoint.pt", "history.json", "losses.png", "d_outputs.png", "samples.png", "training.gif")
FRAMES_NAME = "frames"
RUN_NAMES = frozenset({*RUN_FILES, FRAMES_NAME, LOCK_NAME, MARKER_NAME})  # all a run ever writes at its top level
IMAGE_FOLDER_DATASETS = ("folder", "celeba")  # datasets read from every image under data_dir (data.py)
MAX_TEMP_PREFIX = 60  # characters of the target's name in a temporary file's name (a long name must still fit)
# atomic_write's temporary files (".NAME.XXXXXXXX.tmp", tempfile's 8 random characters) for the names a run writes:
# what a killed trainer can leave behind, removed when the folder is next opened
_STALE_TEMP = re.compile(r"\.(%s|write-test)\.[a-z0-9_]{8}\.tmp" % "|".join(map(re.escape, (*RUN_FILES, MARKER_NAME))))
_STALE_FRAME_TEMP = re.compile(r"\.step_\d{7}\.png\.[a-z0-9_]{8}\.tmp")


class WriteError(OSError):
    """A file could not be written; the message names it and says what to do, and the previous file is intact."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno N]"
        return self.strerror or super().__str__()


class DiskFullError(WriteError):
    """A write ran out of disk space; the previous file (if any) is intact."""


class RunFolderError(ValueError):
    """A run folder cannot be used (a file, not writable, someone else's files, or in use by another trainer);
    the message says why and what to do."""


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
    one-line :class:`RunFolderError` if it is a file, a link to nowhere or is not writable."""
    folder = Path(folder)
    try:
        if folder.is_symlink() and not folder.exists():
            raise RunFolderError(f"{folder} is a link to {os.readlink(folder)}, which does not exist: create that "
                                 "folder or choose another output folder (--out)")
        if folder.exists() and not folder.is_dir():
            raise RunFolderError(f"{folder} is a file, not a folder: choose another output folder (--out)")
        folder.mkdir(parents=True, exist_ok=True)
        _probe_write(folder)
    except OSError as err:
        fix = ("choose a shorter name (--out)" if err.errno == errno.ENAMETOOLONG
               else "make it writable or choose another output folder (--out)")
        raise RunFolderError(f"Cannot write in the output folder {folder} ({err.strerror or err}): {fix}") from err
    return folder


def _probe_write(folder: Path) -> None:
    fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test.", suffix=".tmp")
    os.close(fd)
    os.unlink(probe)


def _is_stale_temp(entry: Path) -> bool:
    return _STALE_TEMP.fullmatch(entry.name) is not None and entry.is_file() and not entry.is_symlink()


def _holds_history(path: Path) -> bool:
    """True if ``path`` is a run's history.json (runs of earlier versions have no marker, but this)."""
    from .history import check_history

    try:
        return path.is_file() and check_history(json.loads(path.read_text())) is None
    except (OSError, ValueError):
        return False


def folder_kind(folder: str | Path) -> str:
    """``"empty"``, ``"run"`` (a run folder this course wrote) or ``"foreign"`` (it holds anything else).

    A run folder holds the marker file. One written before the marker existed (or a checkpoint copied into a
    new folder) holds nothing but the names a run writes, among them its lock, checkpoint or history; or a
    history.json of the course's shape. Temporary files a killed run left do not count.
    """
    folder = Path(folder)
    names = {p.name for p in folder.iterdir() if not _is_stale_temp(p)} if folder.is_dir() else set()
    if not names - {LOCK_NAME}:
        return "empty"
    if MARKER_NAME in names or (names <= RUN_NAMES and names & {LOCK_NAME, "checkpoint.pt", "history.json"}):
        return "run"
    return "run" if _holds_history(folder / "history.json") else "foreign"


def remove_stale_temporary_files(folder: str | Path) -> list[Path]:
    """Remove the temporary files of atomic_write that a killed trainer left in a run folder (SIGKILL, power
    loss): only those named after the files a run writes, and only with the folder's lock held (no trainer is
    writing them). Returns what was removed."""
    folder = Path(folder)
    stale = [p for p in folder.iterdir() if _is_stale_temp(p)]
    frames = folder / FRAMES_NAME
    if frames.is_dir() and not frames.is_symlink():
        stale += [p for p in frames.iterdir()
                  if _STALE_FRAME_TEMP.fullmatch(p.name) and p.is_file() and not p.is_symlink()]
    for path in stale:
        with contextlib.suppress(OSError):
            path.unlink()
    return stale


def check_outputs(folder: str | Path) -> None:
    """Refuse, before any training, a run folder where the run's files cannot be written: a folder where one
    of its files goes, or a file where its frames/ folder goes (a link there is replaced, not followed)."""
    folder = Path(folder)
    frames = folder / FRAMES_NAME
    targets = [folder / name for name in (*RUN_FILES, MARKER_NAME)]
    if frames.is_dir() and not frames.is_symlink():
        targets += sorted(frames.glob("step_*.png"))
    for path in targets:
        if path.is_dir() and not path.is_symlink():
            raise RunFolderError(f"{path} is a folder where the run writes a file: move or rename that folder, or "
                                 "choose another output folder (--out)")
    if frames.exists() and not frames.is_symlink() and not frames.is_dir():
        raise RunFolderError(f"{frames} is a file where the run writes its frames/ folder: move or rename that file, "
                             "or choose another output folder (--out)")
    if frames.is_dir() and not frames.is_symlink():
        try:
            _probe_write(frames)
        except OSError as err:
            raise RunFolderError(f"Cannot write in {frames} ({err.strerror or err}): make it writable or choose "
                                 "another output folder (--out)") from err


def real_folder(path: str | Path) -> Path:
    """``path`` as a folder of its own, created if needed: a symlink there is replaced by a new folder, never
    written through (the files it points to are left alone)."""
    path = Path(path)
    if path.is_symlink():
        path.unlink()
    try:
        path.mkdir(exist_ok=True)
    except FileExistsError:
        raise RunFolderError(f"{path} is a file where the run writes a folder: move or rename that file, or choose "
                             "another output folder (--out)") from None
    return path


def move_aside(folder: str | Path, keep: tuple[str, ...] = (LOCK_NAME,)) -> Path | None:
    """Move everything in ``folder`` (but ``keep``) into a new sibling ``FOLDER.old-YYYYmmdd-HHMMSS``; return
    it, or None if there was nothing to move. Starting a run over never deletes the old one.

    The sibling is named after the folder's real path (``--out ..`` or a link name the real folder); if any
    entry cannot be moved, those already moved are put back, so the run is never split in two. Whether the
    folder may be moved at all is :class:`RunFolder`'s decision.
    """
    folder = Path(folder).resolve()
    entries = sorted(p for p in folder.iterdir() if p.name not in keep) if folder.is_dir() else []
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
        except OSError as err:
            raise RunFolderError(f"Could not create {old} to set the previous run in {folder} aside "
                                 f"({err.strerror or err}); move it yourself, or choose another output folder "
                                 "(--out)") from err
    moved: list[Path] = []
    try:
        if os.stat(old).st_dev != os.stat(folder).st_dev:  # a mount point: renames would fail half way
            raise OSError(errno.EXDEV, f"{folder} is on another file system than its parent")
        for entry in entries:
            os.rename(entry, old / entry.name)
            moved.append(entry)
    except OSError as err:
        for entry in reversed(moved):
            with contextlib.suppress(OSError):
                os.rename(old / entry.name, entry)
        with contextlib.suppress(OSError):
            old.rmdir()
        raise RunFolderError(f"Could not move the previous run in {folder} aside to {old} ({err.strerror or err}); "
                             "nothing was moved: move it yourself, or choose another output folder (--out)") from err
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


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


class RunFolder:
    """One trainer's run folder: locked from ``open()`` to the end of each ``fit()``, written atomically.

    Under torchrun only rank 0 (``is_main``) touches the folder; the other ranks' calls do nothing.
    """

    def __init__(self, folder: str | Path, is_main: bool = True, data_dir: str | Path | None = None,
                 dataset: str | None = None):
        self.folder, self.is_main, self.data_dir = Path(folder), is_main, data_dir
        self.lock = RunLock(self.folder)
        self._checkpoint_stamp: tuple[int, int, int] | None = None
        self._asked_data = (dataset, data_dir)

    def open(self, start_over: bool = False) -> None:
        """Create and lock the folder; with ``start_over``, move a previous run aside. Refused in one line, before
        anything is created, moved or written, if the folder is someone else's (it holds files that are not a
        run's), lies in the image folder, cannot be written, is in use, or (to start over) is or holds the data
        folder or the current folder."""
        if not self.is_main:
            return
        self.check_data_dir(*self._asked_data)
        if start_over:
            self._check_may_move()
        prepare_run_folder(self.folder)
        if folder_kind(self.folder) == "foreign":
            names = sorted(p.name for p in self.folder.iterdir() if p.name not in RUN_NAMES and not _is_stale_temp(p))
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise RunFolderError(f"{self.folder} holds files that are not a run of this course ({shown}): nothing "
                                 "was changed; choose a new or empty output folder (--out)")
        self.lock.acquire()
        remove_stale_temporary_files(self.folder)
        if start_over and (old := move_aside(self.folder)) is not None:
            print(f"Starting over: the previous run in {self.folder} was moved to {old}")
        check_outputs(self.folder)
        if not (self.folder / MARKER_NAME).is_file():
            atomic_write(self.folder / MARKER_NAME, lambda f: f.write(MARKER_TEXT.encode()))

    def check_data_dir(self, dataset: str | None, data_dir: str | Path | None) -> None:
        """Refuse a run folder that is, or lies inside, the folder of images it trains on (a resumed run would
        read its own plots and frames as training images)."""
        if not self.is_main or dataset not in IMAGE_FOLDER_DATASETS or data_dir is None:
            return
        folder, images = self.folder.resolve(), Path(data_dir).expanduser().resolve()
        if folder == images or images in folder.parents:
            where = "is" if folder == images else "is inside"
            raise RunFolderError(f"The output folder {self.folder} {where} the image folder {data_dir}: the run's "
                                 "plots and frames would become training images; choose an output folder outside "
                                 "it (--out)")

    def _check_may_move(self) -> None:
        """Starting over moves the folder's files: never the data folder's (the folder is, holds or lies in it),
        nor the current folder's (it is or holds it)."""
        folder, here = self.folder.resolve(), Path.cwd().resolve()
        if folder == here:
            raise RunFolderError(f"--no-resume would move the files of {self.folder}, the current folder: run it from "
                                 f"the folder above (cd ..) with --out {folder.name}, or choose another output folder "
                                 "(--out)")
        if folder in here.parents:
            raise RunFolderError(f"--no-resume would move the files of {self.folder}, which holds the current folder "
                                 f"{here}: run it from another folder (cd), or choose another output folder (--out)")
        data_dir = self._asked_data[1]
        if data_dir is not None and _overlaps(folder, Path(data_dir).expanduser().resolve()):
            raise RunFolderError(f"--no-resume would move the files of {self.folder}, which is, holds or lies inside "
                                 f"the data folder {data_dir}: choose another output folder (--out)")

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
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.folder / name, lambda f: torch.save(state, f))
        atomic_write(self.folder / "history.json", lambda f: f.write(json.dumps(history).encode()))
        self.remember_checkpoint(name)
