"""The SIMPLON REST interface over HTTP (DECTRIS SIMPLON API documentation), serving API 1.6.0 and 1.8.0 side by side.

Paths: ``/<module>/api/<version>/<task>/<key>`` with task ``config`` (GET, PUT), ``status`` (GET) or
``command`` (PUT); ``…/<task>/keys`` lists names; ``/<module>/api/version/`` reports the configured
version. A refused request gets HTTP 400 (bad value or state) or 404 (no such path) with a plain-text
reason, the form DECTRIS's client prints. Every request is appended to ``request_log`` as
(method, path) before it runs, so tests can assert the arm → trigger → disarm order.

One thread per request (``ThreadingHTTPServer``): ``trigger`` blocks for the whole exposure while
status polls and ``abort`` must still be served, as on a DCU.

Deviations seen on real DCUs can be switched on (``EigerSimulator.rest_deviations``): no version endpoint
(the DCU then serves only its own API version, as hardware does), side-effect keys listed by every config
PUT that GET cannot serve, and named keys or commands that fail with HTTP 500 and a reason.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from .simplon_darray import darray_reply
from .simplon_errors import RequestFailed, RequestRejected, UnknownResource
from .simplon_parameters import API_1_8, API_VERSIONS, ParameterTable, StatusTable

log = logging.getLogger(__name__)

Command = Callable[[Any], Any]  # the PUT body's "value" (or None) → JSON reply, or None for an empty body


@dataclass(frozen=True)
class SimplonModule:
    """One SIMPLON module (detector, stream, filewriter …): its config and status tables and commands;
    ``arrays`` are the read-only 2-D config keys (``pixel_mask``), served as darray objects."""

    config: ParameterTable | None = None
    status: StatusTable | None = None
    commands: Mapping[str, Command] = field(default_factory=dict)
    arrays: Mapping[str, Callable[[], np.ndarray]] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # handler threads are still joined on close: block_on_close stays True
    simplon: EigerRestServer


class EigerRestServer:
    """Serves ``modules`` on ``host:port`` (0 = the OS picks; ``port`` then reports it)."""

    def __init__(
        self,
        modules: Mapping[str, SimplonModule],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_version: str = API_1_8,
    ) -> None:
        if api_version not in API_VERSIONS:
            raise ValueError(f"api_version {api_version!r} is not one of {list(API_VERSIONS)}")
        self.modules = dict(modules)
        self.api_version = api_version
        self.request_log: list[tuple[str, str]] = []
        self.killed = False
        self.version_endpoint = True  # False: /<module>/api/version/ answers 404, other API versions too
        self.unreadable_changed_keys: dict[str, int] = {}  # listed by every config PUT; GET answers the status
        self.failing_requests: dict[str, str] = {}  # key or command name → reason of an HTTP 500
        self._httpd = _Server((host, port), _Handler)
        self._httpd.simplon = self
        self.host, self.port = host, self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"eiger-rest-{self.port}",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, wait for requests in flight to finish, close the listening socket."""
        self._stop_accepting()
        self._httpd.server_close()

    def kill(self) -> None:
        """Vanish: stop accepting at once; requests in flight will get their connection dropped without a
        reply. Returns without waiting for them (a blocked ``trigger`` ends only when the stream dies);
        ``stop()`` then joins their threads."""
        self.killed = True
        self._stop_accepting()
        self._httpd.socket.close()

    def _stop_accepting(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join()

    def dispatch(self, method: str, raw_path: str, body: bytes) -> Any:
        """The reply document of one request, or an exception with its reason and HTTP status."""
        path = urlsplit(raw_path).path
        parts = [p for p in path.split("/") if p]
        if len(parts) < 3 or parts[1] != "api" or parts[0] not in self.modules:
            raise UnknownResource(path, "paths look like /detector/api/1.8.0/config/count_time")
        module = self.modules[parts[0]]
        if parts[2] == "version":
            if not self.version_endpoint:
                raise UnknownResource(path, "this DCU has no version endpoint")
            return {"value": self.api_version, "value_type": "string"}
        version = parts[2]
        if not self.version_endpoint and version != self.api_version:
            raise UnknownResource(path, f"this DCU serves API {self.api_version} only")
        if parts[3:] == ["files"] and parts[0] == "filewriter" and method == "GET":
            return []  # the 1.6 file listing; no files are written (1.8 lists them in status/files)
        if version not in API_VERSIONS or len(parts) < 5:
            raise UnknownResource(path, f"versions {list(API_VERSIONS)}, then config|status|command/<key>")
        task, name = parts[3], "/".join(parts[4:])
        if name in self.failing_requests:
            raise RequestFailed(self.failing_requests[name])
        if name == "keys" and method == "GET":
            return self._keys(module, task, version, path)
        if task == "config" and module.config is not None:
            if method == "GET":
                return self._config_value(module, name, version, path)
            changed = module.config.put(name, _put_value(body, required=True), version)
            return sorted({*changed, *self.unreadable_changed_keys})
        if task == "status" and module.status is not None and method == "GET":
            return module.status.get(name, version)
        if task == "command" and method == "PUT":
            command = module.commands.get(name)
            if command is None:
                raise UnknownResource(path, f"commands: {sorted(module.commands)}")
            return command(_put_value(body, required=False))
        raise UnknownResource(path, f"{method} is not served here")

    def _config_value(self, module: SimplonModule, name: str, version: str, path: str) -> Any:
        assert module.config is not None
        status = self.unreadable_changed_keys.get(name)
        if status == 404:
            raise UnknownResource(path, "listed as changed, but not served")
        if status is not None:
            raise RequestFailed(f"cannot read {name}", status)
        if name in module.arrays:
            return darray_reply(module.arrays[name]())
        return module.config.get(name, version)

    @staticmethod
    def _keys(module: SimplonModule, task: str, version: str, path: str) -> list[str]:
        if task == "config" and module.config is not None:
            return sorted([*module.config.keys(version), *module.arrays])
        if task == "status" and module.status is not None:
            return module.status.keys(version)
        if task == "command":
            return sorted(module.commands)
        raise UnknownResource(path)


def _put_value(body: bytes, *, required: bool) -> Any:
    if not body.strip():
        if required:
            raise RequestRejected('PUT needs a JSON body {"value": …}')
        return None
    try:
        document = json.loads(body)
    except ValueError as err:
        raise RequestRejected(f"body is not JSON ({err}); send {{\"value\": …}}") from None
    if not isinstance(document, dict) or "value" not in document:
        raise RequestRejected(f'body must be {{"value": …}}, got {body[:80]!r}')
    return document["value"]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "SimplonSimulator/1.0"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def _serve(self, method: str) -> None:
        simplon = self.server.simplon
        simplon.request_log.append((method, urlsplit(self.path).path))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            status, reply = 200, simplon.dispatch(method, self.path, body)
        except (RequestRejected, UnknownResource, RequestFailed) as err:
            status, reply = err.http_status, err.reason
        except Exception as err:  # a simulator bug must reach the client, not just a log
            log.exception("%s %s failed", method, self.path)
            status, reply = 500, f"{type(err).__name__}: {err}"
        if simplon.killed:
            self._drop_connection()
            return
        if status == 200 and reply is None:
            self._reply(200, b"", "application/json")
        elif status == 200:
            self._reply(200, json.dumps(reply).encode(), "application/json")
        else:
            self._reply(status, str(reply).encode(), "text/plain; charset=utf-8")

    def _reply(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _drop_connection(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            log.debug("connection of %s already gone", self.client_address)
