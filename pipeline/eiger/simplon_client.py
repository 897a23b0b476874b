"""Client of the DECTRIS SIMPLON REST API (DECTRIS SIMPLON API documentation), stdlib only.

The API version is discovered, never hard-coded: EIGER DCUs speak 1.6.0 and EIGER2 DCUs 1.8.0. A DCU
without ``/detector/api/version/`` (404) is probed with each known version instead. Every PUT returns the
keys that changed as a side effect (``count_time`` moves ``frame_time`` and ``bit_depth_image``);
``set_config`` re-reads them so callers always see the detector's real values. Some DCUs list keys there that
they cannot serve on GET (404 or 500): those are reported as unreadable, never fatal.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.errors import DetectorFailed, DetectorRefused, DetectorUnreachable

log = logging.getLogger(__name__)

SUPPORTED_API_VERSIONS = ("1.8.0", "1.6.0")  # newest first: the order versions are probed in
HARDWARE_COMMANDS = frozenset({"arm", "trigger", "initialize"})  # block on the detector for up to minutes
ERROR_BODY_CHARS = 300  # an HTML error page must not flood Status


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """What one PUT did: ``values`` = {key: value read back} for the key PUT and every side-effect key that
    could be read; ``unreadable`` = {key: why} for side-effect keys the DCU listed but could not serve."""

    values: dict[str, Any]
    unreadable: dict[str, str] = field(default_factory=dict)


class SimplonClient:
    """One detector's REST interface.

    ``timeout_s`` bounds ordinary requests; ``command_timeout_s`` bounds ``arm``, ``trigger`` and
    ``initialize``, which block on hardware for minutes (LImA allows 5 min, per DECTRIS' SIMPLON manual).
    ``version_probed`` tells, once ``api_version`` was read, whether the DCU lacked the version endpoint.
    """

    def __init__(self, base_url: str, *, timeout_s: float = 10.0, command_timeout_s: float = 300.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.command_timeout_s = command_timeout_s
        self.version_probed = False
        self._api_version: str | None = None

    @property
    def api_version(self) -> str:
        if self._api_version is None:
            self._api_version = self._discover_version()
        return self._api_version

    def _discover_version(self) -> str:
        try:
            version = self._request("GET", "/detector/api/version/")["value"]
        except DetectorRefused as err:
            if err.http_status != 404:
                raise
            return self._probe_version()
        if version not in SUPPORTED_API_VERSIONS:
            raise DetectorRefused("api version", f"{version} is not one of {SUPPORTED_API_VERSIONS}")
        return version

    def _probe_version(self) -> str:
        """The first known version whose ``status/state`` answers: a DCU serves one API version, and every
        version has that key. Any answer but 404 (a 500 included) means the version exists."""
        for version in SUPPORTED_API_VERSIONS:
            try:
                self._request("GET", f"/detector/api/{version}/status/state")
            except DetectorRefused as err:
                if err.http_status != 404:
                    raise
                continue
            except DetectorFailed as err:  # a server error on status/state still proves the version is served
                log.info("SIMPLON API %s answered status/state with an error (%s): it exists", version, err)
            log.warning("%s has no /detector/api/version/ (HTTP 404); probed SIMPLON API %s (status/state answered)",
                        self.base_url, version)
            self.version_probed = True
            return version
        raise DetectorRefused("api version", f"/detector/api/version/ is missing (HTTP 404) and none of "
                              f"{SUPPORTED_API_VERSIONS} answers status/state; is this a SIMPLON DCU?", http_status=404)

    def _url(self, module: str, task: str, key: str) -> str:
        return f"/{module}/api/{self.api_version}/{task}/{key}"

    def get_value(self, module: str, task: str, key: str) -> Any:
        return self._request("GET", self._url(module, task, key))["value"]

    def detector_config(self, key: str) -> Any:
        return self.get_value("detector", "config", key)

    def detector_array(self, key: str) -> np.ndarray:
        """A 2-D config value (``pixel_mask``, ``flatfield``) as (height, width), decoded from the SIMPLON
        darray object ``{"__darray__": [1, 0, 0], "type": "<u4", "shape": [width, height], "filters":
        ["base64"], "data": …}``; ``ValueError`` for any other form."""
        value = self.detector_config(key)
        if not isinstance(value, dict) or "__darray__" not in value:
            raise ValueError(f"{key} is not a SIMPLON darray object: {str(value)[:80]}")
        if list(value.get("filters", [])) != ["base64"]:
            raise ValueError(f"{key}: darray filters {value.get('filters')} are not supported (only base64)")
        flat = np.frombuffer(base64.b64decode(value["data"]), dtype=np.dtype(value["type"]))
        width, height = (int(n) for n in value["shape"])
        return flat.reshape(height, width)

    def detector_status(self, key: str = "state") -> Any:
        return self.get_value("detector", "status", key)

    def set_config(self, key: str, value: Any, *, module: str = "detector") -> ConfigChange:
        """PUT one value and read back the key and every key the DCU says changed with it.

        The key itself must read back (the DCU just accepted it); a side-effect key that answers 404 or 5xx
        is logged and listed in ``unreadable``: some DCUs list keys their GET does not serve."""
        changed = self._request("PUT", self._url(module, "config", key), {"value": value}) or []
        values = {key: self.get_value(module, "config", key)}
        unreadable: dict[str, str] = {}
        for side_effect in dict.fromkeys(k for k in changed if k != key):
            try:
                values[side_effect] = self.get_value(module, "config", side_effect)
            except (DetectorRefused, DetectorFailed) as err:
                log.warning("PUT %s listed %s as changed, but it cannot be read: %s", key, side_effect, err)
                unreadable[side_effect] = str(err)
        return ConfigChange(values, unreadable)

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
            message = " ".join(err.read().decode(errors="replace").split())[:ERROR_BODY_CHARS] or str(err.reason)
            if 400 <= err.code < 500:
                raise DetectorRefused(f"{method} {path}", f"HTTP {err.code}: {message}", http_status=err.code) from err
            raise DetectorFailed(self.base_url, f"{method} {path}", err.code, message) from err
        except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as err:
            raise DetectorUnreachable(url, str(getattr(err, "reason", err))) from err
        log.debug("%s %s -> %d bytes", method, path, len(text))
        return json.loads(text) if text.strip() else None
