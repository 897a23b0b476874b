"""Test-side clients for the EIGER simulator: a SIMPLON REST client and a PULL receiver.

Written from the DECTRIS SIMPLON API and stream documentation, independent of detpipe's own control and receiver code.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq


class RestError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status, self.reason = status, reason


@dataclass
class SimplonClient:
    """``get("detector", "config/count_time")`` → reply document; errors raise ``RestError``."""

    base_url: str
    version: str = "1.8.0"
    timeout_s: float = 30.0

    def url(self, module: str, resource: str) -> str:
        return f"{self.base_url}/{module}/api/{self.version}/{resource}"

    def request(self, method: str, url: str, value: Any = None, *, send_body: bool = False) -> Any:
        data = json.dumps({"value": value}).encode() if send_body else None
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as reply:
                payload = reply.read()
        except urllib.error.HTTPError as err:
            raise RestError(err.code, err.read().decode()) from None
        return json.loads(payload) if payload else None

    def get(self, module: str, resource: str) -> Any:
        return self.request("GET", self.url(module, resource))

    def value(self, module: str, resource: str) -> Any:
        return self.get(module, resource)["value"]

    def put(self, module: str, resource: str, value: Any) -> Any:
        return self.request("PUT", self.url(module, resource), value, send_body=True)

    def command(self, name: str, value: Any = None, module: str = "detector") -> Any:
        return self.request("PUT", self.url(module, f"command/{name}"), value, send_body=value is not None)

    def configure(self, **values: Any) -> None:
        for key, value in values.items():
            self.put("detector", f"config/{key}", value)

    def enable_stream(self, *, fmt: str = "legacy", header_detail: str = "basic") -> None:
        self.put("stream", "config/mode", "enabled")
        if self.version == "1.8.0":
            self.put("stream", "config/format", fmt)
        self.put("stream", "config/header_detail", header_detail)


class StreamReceiver:
    """A PULL socket connected to the simulator; collects whole messages until an end message."""

    def __init__(self, endpoint: str) -> None:
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)

    def receive(self, timeout_s: float = 5.0) -> list[bytes] | None:
        if self.socket.poll(int(timeout_s * 1000)):
            return self.socket.recv_multipart()
        return None

    def receive_until(self, is_end: Callable[[list[bytes]], bool], timeout_s: float = 10.0) -> list[list[bytes]]:
        messages: list[list[bytes]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = self.receive(0.1)
            if message is not None:
                messages.append(message)
                if is_end(message):
                    return messages
        raise TimeoutError(f"no end message within {timeout_s}s; got {len(messages)} messages")

    def close(self) -> None:
        self.socket.close()
        self.context.term()
