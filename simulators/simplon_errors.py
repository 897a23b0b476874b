"""Why the simulated DCU refuses a request; each maps to the HTTP status a client sees.

The simulators may not import ``detpipe.pipeline.core.errors`` (they share no code with the receivers), so
they keep this small hierarchy of their own, shaped the same way.
"""

from __future__ import annotations


class RequestRejected(ValueError):
    """A well-formed request the detector refuses in its current configuration or state (HTTP 400)."""

    http_status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownResource(KeyError):
    """A path that names no module, version, task or key of this detector (HTTP 404)."""

    http_status = 404

    def __init__(self, path: str, hint: str = "") -> None:
        reason = f"{path} does not exist on this detector" + (f"; {hint}" if hint else "")
        super().__init__(reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class RequestFailed(RuntimeError):
    """A request the detector accepts but fails to carry out (HTTP 5xx, a plain-text reason in the body):
    a DCU module not initialised, a hardware fault; the simulator raises it where told to deviate."""

    def __init__(self, reason: str, http_status: int = 500) -> None:
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status
