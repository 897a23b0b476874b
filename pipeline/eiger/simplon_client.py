"""Client of the DECTRIS SIMPLON REST API (eiger.md §1), stdlib only.

The API version is discovered, never hard-coded: EIGER DCUs speak 1.6.0 and EIGER2 DCUs 1.8.0 (§1.1).
Every PUT returns the keys that changed as a side effect (``count_time`` moves ``frame_time`` and
``bit_depth_image``); ``set_config`` re-reads them so callers always see the detector's real values.
"""

from __future__ import annotations

import json
import logging
import socket
import urllib.error
import urllib.request
from typing import Any

from ..core.errors import DetectorRefused, DetectorUnreachable

log = logging.getLogger(__name__)

SUPPORTED_API_VERSIONS = ("1.8.0", "1.6.0")
HARDWARE_COMMANDS = frozenset({"arm", "trigger", "initialize"})  # block on the detector for up to minutes


class SimplonClient:
    """One detector's REST interface.

    ``timeout_s`` bounds ordinary requests; ``command_timeout_s`` bounds ``arm``, ``trigger`` and
    ``initialize``, which block on hardware for minutes (LImA allows 5 min, per DECTRIS' SIMPLON manual).
    """

    def __init__(self, base_url: str, *, timeout_s: float = 10.0, command_timeout_s: float = 300.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.command_timeout_s = command_timeout_s
        self._api_version: str | None = None

    @property
    def api_version(self) -> str:
        if self._api_version is None:
            version = self._request("GET", "/detector/api/version/")["value"]
            if version not in SUPPORTED_API_VERSIONS:
                raise DetectorRefused("api version", f"{version} is not one of {SUPPORTED_API_VERSIONS}")
            self._api_version = version
        return self._api_version

    def _url(self, module: str, task: str, key: str) -> str:
        return f"/{module}/api/{self.api_version}/{task}/{key}"

    def get_value(self, module: str, task: str, key: str) -> Any:
        return self._request("GET", self._url(module, task, key))["value"]

    def detector_config(self, key: str) -> Any:
        return self.get_value("detector", "config", key)

    def detector_status(self, key: str = "state") -> Any:
        return self.get_value("detector", "status", key)

    def set_config(self, key: str, value: Any, *, module: str = "detector") -> dict[str, Any]:
        """PUT one value; returns {key: new value} for the key and every key changed with it."""
        changed = self._request("PUT", self._url(module, "config", key), {"value": value}) or []
        keys = [key, *[k for k in changed if k != key]]
        return {k: self.get_value(module, "config", k) for k in keys}

    def command(self, name: str, value: Any = None) -> int | None:
        """Run a detector command; returns the sequence id where the DCU replies with one (arm, disarm…).

        Only the commands that wait on hardware get ``command_timeout_s``; disarm, cancel and abort answer at
        once on a working DCU, so a dead one must not hold a Stop or Abort for minutes."""
        body = None if value is None else {"value": value}
        timeout_s = self.command_timeout_s if name in HARDWARE_COMMANDS else self.timeout_s
        reply = self._request("PUT", self._url("detector", "command", name), body, timeout_s=timeout_s)
        if isinstance(reply, dict) and "sequence id" in reply:
            return int(reply["sequence id"])
        return None

    def _request(self, method: str, path: str, body: Any = None, *, timeout_s: float | None = None) -> Any:
        url = self.base_url + path
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={"Accept": "application/json"})
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s or self.timeout_s) as reply:
                text = reply.read()
        except urllib.error.HTTPError as err:
            reason = err.read().decode(errors="replace").strip() or err.reason
            if 400 <= err.code < 500:
                raise DetectorRefused(f"{method} {path}", f"HTTP {err.code}: {reason}") from err
            raise DetectorUnreachable(url, f"HTTP {err.code}: {reason}") from err
        except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as err:
            raise DetectorUnreachable(url, str(getattr(err, "reason", err))) from err
        log.debug("%s %s -> %d bytes", method, path, len(text))
        return json.loads(text) if text.strip() else None
