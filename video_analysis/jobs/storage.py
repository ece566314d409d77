"""Files on disk: one owner-only directory per session under DATA_DIR.

Uploads are streamed by werkzeug straight into the session's directory (no
copy through /tmp, never a whole video in memory: web/upload_request.py gives
it an `UploadSpool`'s files) under a server-made name;
the client's file name is kept only as sanitised metadata. Whatever a request
wrote is removed unless a session took ownership of it.

The storage bound (`MAX_STORAGE_MB`): `Storage` counts the bytes that the
sessions' files hold plus the room taken by uploads being received, and
never lets that count pass the bound. A request with a declared
Content-Length takes that much room before its body is read; a chunked body
takes room as each piece is written (werkzeug writes 64 KiB at a time: one
addition per write, a lock only when the request outgrows what it took).
What a request took and did not keep is given back when it ends; what a
session keeps is given back when `remove` deletes its directory (cleanup,
expiry, a legacy request's end). Only files written through an `UploadSpool`
are counted; files in DATA_DIR that the service did not make are neither
counted nor touched.
"""
from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import threading
import unicodedata
from typing import BinaryIO, Callable, Dict, Iterable, List, Optional

from video_analysis.jobs.session_ids import is_session_id

log = logging.getLogger(__name__)

_NAME_LIMIT = 200
_MB = 1024 * 1024
# Where nginx buffers request bodies when `make run` puts it in front (serve/launcher.py); not ours to touch.
_PROXY_BODY_DIR = ".request-bodies"


class StorageError(OSError):
    """The server cannot store files right now; `full` tells a full disk from the rest."""

    def __init__(self, full: bool):
        super().__init__("storage full" if full else "storage unavailable")
        self.full = full


class StorageFull(StorageError):
    """Storing `needed` more bytes would pass MAX_STORAGE_MB; `left` bytes of it were free."""

    def __init__(self, needed: int, left: int):
        super().__init__(full=True)
        self.needed = needed
        self.left = left


def storage_error(error: OSError) -> StorageError:
    return StorageError(full=error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG))


class Ledger:
    """The count behind the storage bound: bytes taken by uploads being received and kept by sessions.

    This one lives in the process. In cluster mode every API process of a node shares one in Redis
    (`cluster.storage_ledger`), with the same methods, so a session cleaned up by another process
    than the one that received it is given back all the same.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._used = 0
        self._kept: Dict[str, int] = {}  # session directory -> bytes its files hold

    @property
    def used(self) -> int:
        return self._used

    def take(self, nbytes: int, limit: Optional[int]) -> None:
        with self._lock:
            if limit is not None and self._used + nbytes > limit:
                raise StorageFull(nbytes, max(limit - self._used, 0))
            self._used += nbytes

    def give_back(self, nbytes: int) -> None:
        with self._lock:
            self._used -= nbytes

    def keep(self, directory: str, nbytes: int) -> None:
        with self._lock:
            self._kept[directory] = self._kept.get(directory, 0) + nbytes

    def forget(self, directory: str) -> None:
        """The session's directory is deleted: what it kept is given back."""
        with self._lock:
            self._used -= self._kept.pop(directory, 0)

    def reset(self) -> None:
        """Nothing counted (at start, before the kept sessions are counted again)."""
        with self._lock:
            self._used = 0
            self._kept.clear()


class Storage:
    def __init__(self, data_dir: str, max_storage_mb: Optional[int] = None, ledger: Optional[Ledger] = None):
        """`max_storage_mb`: the bound in MB; None = half the disk's free space at `prepare`; 0 = no bound.
        `ledger`: where the count is kept (shared by the API processes of a node in cluster mode)."""
        self.root = os.path.abspath(data_dir)
        self.max_storage_mb = max_storage_mb
        self.limit: Optional[int] = None  # bytes, set by prepare(); None: only the disk itself limits
        self.ledger = ledger or Ledger()
        self._own: set = set()  # names in DATA_DIR that are the service's own files (the state database)

    def prepare(self, sessions: Iterable[str] = (), own_files: Iterable[str] = (), remove_strays: bool = True) -> None:
        """Create DATA_DIR owner-only; remove what an earlier process left that no session owns; set the bound.

        `sessions`: the directories of the sessions that came back from the state database: they are
        kept and counted. Any other entry named like a session (an upload cut off by a crash, a
        legacy request's files) is removed; only such entries: a DATA_DIR set by mistake to a
        directory holding other files loses none of them. `own_files`: names in DATA_DIR that are
        the service's own and not sessions' (the state database), left alone without a warning.
        `remove_strays=False` (a cluster's API process, when another has prepared the node): only the bound
        is set; nothing is removed or counted again.
        """
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)
        kept = {os.path.abspath(directory) for directory in sessions}
        self._own = set(own_files)
        quiet = {_PROXY_BODY_DIR, *self._own}
        if not remove_strays:
            self._set_limit()
            return
        self.ledger.reset()
        for name in os.listdir(self.root):
            path = os.path.join(self.root, name)
            if is_session_id(name):
                if path in kept:
                    size = _size_of(path)
                    self.take(size)  # no bound yet (`_set_limit` comes after): counted whatever it is
                    self.keep(path, size)
                else:
                    self.remove(path)
            elif name not in quiet:
                log.warning("DATA_DIR holds %r, which this service did not create; leaving it alone", name)
        self._set_limit()

    def _set_limit(self) -> None:
        free = shutil.disk_usage(self.root).free
        if self.max_storage_mb == 0:
            self.limit = None
            log.warning("MAX_STORAGE_MB=0: uploads are bounded only by the %d MB free on DATA_DIR's disk", free // _MB)
        elif self.max_storage_mb is None:
            # Half: the other half stays for everything else on that disk (logs, the model cache, the system).
            self.limit = free // 2
            log.info("Uploads may keep up to %d MB in DATA_DIR: half of the %d MB free on its disk at start "
                     "(set MAX_STORAGE_MB to choose)", self.limit // _MB, free // _MB)
        else:
            self.limit = self.max_storage_mb * _MB
            if self.limit > free:
                log.warning("MAX_STORAGE_MB=%d is more than the %d MB free on DATA_DIR's disk: the disk may fill "
                            "first (uploads then get 507 too)", self.max_storage_mb, free // _MB)

    # -- the bound ----------------------------------------------------------------------
    @property
    def used(self) -> int:
        """Bytes counted against the bound now: sessions' files plus uploads being received."""
        return self.ledger.used

    def take(self, nbytes: int) -> None:
        """Count `nbytes` more; StorageFull (nothing counted) when that would pass the bound."""
        self.ledger.take(nbytes, self.limit)

    def give_back(self, nbytes: int) -> None:
        if nbytes:
            self.ledger.give_back(nbytes)

    def keep(self, directory: str, nbytes: int) -> None:
        """`nbytes` already taken now belong to the session whose files are in `directory` (given back by `remove`)."""
        self.ledger.keep(os.path.abspath(directory), nbytes)

    def count_written(self, directory: str, nbytes: int) -> None:
        """A job wrote `nbytes` of outputs (thumbnails, a reel) into a session's directory: counted, and given back
        with it. Past the bound if need be: the bytes are on disk already, and uploads wait for the room."""
        self.ledger.take(nbytes, None)
        self.keep(directory, nbytes)

    def session_dir(self, session_id: str) -> str:
        return os.path.join(self.root, session_id)

    def remove(self, path: Optional[str]) -> None:
        """Delete a session directory (or file) under DATA_DIR; never anything outside it."""
        if not path:
            return
        path = os.path.abspath(path)
        if os.path.dirname(path) != self.root:
            raise ValueError("refusing to delete outside DATA_DIR")
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self.ledger.forget(path)

    def entries(self) -> List[str]:
        """What DATA_DIR holds besides the service's own files (the state database)."""
        try:
            return sorted(name for name in os.listdir(self.root) if name not in self._own)
        except FileNotFoundError:
            return []


class _MeteredFile(io.BufferedRandom):
    """An upload file that counts each write against the storage bound before making it."""

    def __init__(self, raw: io.FileIO, charge: Callable[[int], None]):
        super().__init__(raw)
        self._charge = charge

    def write(self, data) -> int:
        self._charge(len(data))
        return super().write(data)


class UploadSpool:
    """The files one request's multipart body is written to, in one directory, and the room it holds."""

    def __init__(self, storage: Storage, directory: str):
        self.storage = storage
        self.directory = directory
        self.paths: List[str] = []
        self.files: List[BinaryIO] = []
        self.claimed = False
        self.taken = 0  # bytes of the bound this request holds
        self.written = 0  # bytes written into its files

    def reserve(self, nbytes: int) -> None:
        """Take room for a body of `nbytes` (its declared length) before reading it; StorageFull if it cannot fit."""
        self.storage.take(nbytes)
        self.taken += nbytes

    def charge(self, nbytes: int) -> None:
        """Count a write of `nbytes`: beyond what the request took, more is taken (StorageFull: not written)."""
        more = self.written + nbytes - self.taken
        if more > 0:
            self.storage.take(more)
            self.taken += more
        self.written += nbytes

    def open_file(self) -> BinaryIO:
        try:
            if not self.paths:
                os.mkdir(self.directory, 0o700)
            path = os.path.join(self.directory, f"upload-{len(self.paths)}.bin")
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as error:
            raise storage_error(error) from error
        self.paths.append(path)
        stream = _MeteredFile(io.FileIO(descriptor, "r+"), self.charge)
        self.files.append(stream)
        return stream

    def sync(self) -> None:
        """Force the files and their directory entry onto the disk (StorageError if it fails): a session the
        state database keeps must not outlive its upload in a power cut."""
        try:
            for stream in self.files:
                stream.flush()
                os.fsync(stream.fileno())
            directory = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as error:
            raise storage_error(error) from error

    def claim(self) -> None:
        """A session owns the files now: they stay counted until its directory is removed; the rest is given back."""
        self.storage.keep(self.directory, self.written)
        self.storage.give_back(self.taken - self.written)
        self.taken = self.written
        self.claimed = True

    def discard(self) -> None:
        """Unless a session owns them: close and remove everything this request wrote, give back what it took."""
        if self.claimed:
            return
        for stream in self.files:
            try:
                stream.close()
            except OSError:
                pass
        if self.paths:
            self.storage.remove(self.directory)
        self.storage.give_back(self.taken)
        self.taken = self.written = 0


def _size_of(directory: str) -> int:
    total = 0
    for parent, _, names in os.walk(directory):
        for name in names:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
            except OSError:
                pass
    return total


# Controls (C0, DEL, C1), invisible format characters (bidi overrides that
# make "evil\u202egpj.mp4" show as "evil4pm.jpg", zero-widths), surrogates,
# private use, and line/paragraph separators.
_HIDDEN = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}


def display_filename(raw: Optional[str]) -> str:
    """The client's file name, safe to show: no directories, no control or invisible characters, bounded."""
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in _HIDDEN).strip().strip(".").strip()
    if len(name) > _NAME_LIMIT:
        stem, dot, extension = name.rpartition(".")
        name = (stem[: _NAME_LIMIT - len(extension) - 1] + "." + extension) if dot and len(extension) <= 10 else name[:_NAME_LIMIT]
    return name or "video"
