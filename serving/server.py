"""`keras-deeplab serve`'s HTTP server: the REST API of serving/rest_api.py on threads, and the page at `GET /`.

Where TF Serving (the `Dockerfile`) cannot run, this serves the same export folder over the same API. It binds
127.0.0.1 unless told otherwise, refuses a body over its size limit (413) before reading it, drops a client that
trickles its body past the timeout (408), and a bad request never stops it: every answer, errors of the HTTP
layer included, is JSON (the page aside).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from serving.page import CONTENT_SECURITY_POLICY, PAGE_PATHS, page_html
from serving.rest_api import RestApi
from serving.settings import DEFAULT_HOST, DEFAULT_MAX_BODY_BYTES, DEFAULT_PORT

CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() also takes '²'
LISTEN_BACKLOG = 128  # connections waiting to be accepted; socketserver's 5 stalls a burst of clients
HTTP_METHODS = ("GET", "POST")


def make_http_server(
    api: RestApi,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    access_log: bool = True,
    timeout_s: float = 60.0,
) -> ThreadingHTTPServer:
    """A threaded HTTP server answering with `api` (port 0: any free port; see `server_address`), and with the
    page of serving/page.py at `GET /` (made at the first request for it)."""

    @functools.cache
    def page() -> bytes:
        return page_html(
            api.name,
            api.descriptor,
            max_pixels=api.max_pixels,
            max_request_pixels=api.max_request_pixels,
            max_body_bytes=max_body_bytes,
            crf=api.crf is not None,
        )

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = timeout_s  # a client that stops sending loses its connection, not a thread forever

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] in PAGE_PATHS:
                headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"}
                self._send(200, page(), "text/html; charset=utf-8", headers)
            else:
                self._answer(*api.handle("GET", self.path, b""))

        def do_POST(self) -> None:
            length = self.headers.get("Content-Length")
            if length is None or not CONTENT_LENGTH.fullmatch(length.strip()):
                self.close_connection = True
                self._answer(411, {"error": "a Content-Length header is required"})
            elif int(length) > max_body_bytes:
                self.close_connection = True
                self._answer(413, {"error": f"request body of {length} bytes is over the limit of {max_body_bytes}"})
            else:
                body = self._read_body(int(length))
                if body is not None:
                    self._answer(*api.handle("POST", self.path, body))

        def _read_body(self, length: int) -> bytes | None:
            """The body, or None (answered 408, or the client went away) when it does not arrive whole within
            `timeout_s`: a client trickling bytes holds a thread for that long at most."""
            deadline = time.monotonic() + timeout_s
            chunks, remaining = [], length
            while remaining:
                chunk = None
                if time.monotonic() < deadline:
                    self.connection.settimeout(max(deadline - time.monotonic(), 0.001))
                    with contextlib.suppress(TimeoutError):  # answered 408 below
                        chunk = self.rfile.read1(min(remaining, 2**16))
                    self.connection.settimeout(timeout_s)
                if not chunk:
                    self.close_connection = True
                    if chunk is None:
                        self._answer(408, {"error": f"the request body did not arrive within {timeout_s:g} s"})
                    return None
                chunks.append(chunk)
                remaining -= len(chunk)
            return b"".join(chunks)

        def _refuse_method(self) -> None:
            self.close_connection = True
            self._answer(405, {"error": f"method {self.command} is not served; use {' or '.join(HTTP_METHODS)}"})

        do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse_method  # noqa: N815

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """Errors of the HTTP layer (a malformed request line, an unknown method) as JSON, like the API's."""
            self.close_connection = True
            short, _ = self.responses.get(code, ("Error", ""))
            body = json.dumps({"error": f"{message or short}"}).encode("utf-8")
            self.send_response(code, message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            headers = {"Allow": ", ".join(HTTP_METHODS)} if status == 405 else {}
            self._send(status, json.dumps(payload).encode("utf-8"), "application/json", headers)

        def _send(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            if access_log:
                super().log_message(format, *args)

    class Server(ThreadingHTTPServer):
        request_queue_size = LISTEN_BACKLOG
        daemon_threads = True

    return Server((host, port), Handler)
