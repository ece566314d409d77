"""Files on disk: one owner-only directory per session under DATA_DIR.

Uploads are streamed by werkzeug straight into the session's directory (no
copy through /tmp, never a whole video in memory) under a server-made name;
the client's file name is kept only as sanitised metadata. Whatever a request
wrote is removed unless a session took ownership of it.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import unicodedata
from typing import BinaryIO, List, Optional

from flask import Request

log = logging.getLogger(__name__)

SPOOL_ENVIRON_KEY = "video_service.upload_spool"
# What a session's directory is called (session ids are UUID4 strings).
_SESSION_NAME = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_NAME_LIMIT = 200
# Where nginx buffers request bodies when serve.py runs it in front (serve.REQUEST_BODY_DIR); not ours to touch.
_PROXY_BODY_DIR = ".request-bodies"


class StorageError(OSError):
    """The server cannot store files right now; `full` tells a full disk from the rest."""

    def __init__(self, full: bool):
        super().__init__("storage full" if full else "storage unavailable")
        self.full = full


def storage_error(error: OSError) -> StorageError:
    return StorageError(full=error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG))


class Storage:
    def __init__(self, data_dir: str):
        self.root = os.path.abspath(data_dir)

    def prepare(self) -> None:
        """Create DATA_DIR owner-only; remove what an earlier process left (its sessions are gone).

        Only entries named like a session (a UUID) are removed: a DATA_DIR set
        by mistake to a directory holding other files loses none of them.
        """
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)
        for name in os.listdir(self.root):
            if _SESSION_NAME.match(name):
                self.remove(os.path.join(self.root, name))
            elif name != _PROXY_BODY_DIR:
                log.warning("DATA_DIR holds %r, which this service did not create; leaving it alone", name)

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

    def entries(self) -> List[str]:
        try:
            return sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []


class UploadSpool:
    """The files one request's multipart body is written to, in one directory."""

    def __init__(self, storage: Storage, directory: str):
        self.storage = storage
        self.directory = directory
        self.paths: List[str] = []
        self.claimed = False

    def open_file(self) -> BinaryIO:
        try:
            if not self.paths:
                os.mkdir(self.directory, 0o700)
            path = os.path.join(self.directory, f"upload-{len(self.paths)}.bin")
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as error:
            raise storage_error(error) from error
        self.paths.append(path)
        return os.fdopen(descriptor, "w+b")

    def discard(self) -> None:
        """Remove everything this request wrote, unless a session owns it now."""
        if not self.claimed and self.paths:
            self.storage.remove(self.directory)


class SpoolingRequest(Request):
    """Flask request whose uploaded files go to the route's UploadSpool, when it set one."""

    def make_form_data_parser(self):
        # werkzeug's parser is silent by default: a malformed part (such as a
        # file name that is not UTF-8) would drop the whole form and look like
        # "no video". Raising lets the route say what is wrong.
        parser = super().make_form_data_parser()
        parser.silent = False
        return parser

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        spool: Optional[UploadSpool] = self.environ.get(SPOOL_ENVIRON_KEY)
        if spool is None:
            return super()._get_file_stream(total_content_length, content_type, filename, content_length)
        return spool.open_file()


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
