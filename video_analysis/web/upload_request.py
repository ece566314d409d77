"""Flask's request class for this service: uploaded files go where the route says, and bad parts are errors."""
from __future__ import annotations

from typing import Optional

from flask import Request

from video_analysis.jobs.storage import UploadSpool


class UploadRequest(Request):
    """A request whose uploaded files are written into an `UploadSpool` once the route hands it one.

    Without a spool (a route that does not take uploads) werkzeug's own
    temporary files are used, as usual.
    """

    upload_spool: Optional[UploadSpool] = None

    def spool_uploads_to(self, spool: UploadSpool) -> None:
        """Write this request's files into `spool`; call before reading `files` or `form`."""
        self.upload_spool = spool

    def make_form_data_parser(self):
        # werkzeug's parser is silent by default: a malformed part (such as a
        # file name that is not UTF-8) would drop the whole form and look like
        # "no video". Raising lets the route say what is wrong.
        parser = super().make_form_data_parser()
        parser.silent = False
        return parser

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        if self.upload_spool is None:
            return super()._get_file_stream(total_content_length, content_type, filename, content_length)
        return self.upload_spool.open_file()
