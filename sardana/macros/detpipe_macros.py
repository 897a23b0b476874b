"""Sardana macros for detpipe: SFX series on an EIGER, AGIPD runs, the data policy and a status summary.

Loaded by the MacroServer from ``MacroPath`` (docs/sardana.md). The macros talk to detpipe with plain
``tango.DeviceProxy`` (a taurus device's ``state`` is a property) and wait by polling in
0.1 s steps with ``checkPoint()``: a blocking Tango call cannot be interrupted, so Stop and Abort reach a
macro at its next step. Sardana stops only the Pool elements a macro reserved, so ``on_stop``/``on_abort``
stop the detector themselves.

Environment (``senv``): ``DetpipeDetector`` (the EigerDetector) and ``DetpipeAgipd`` (the AgipdDetector);
``DetpipeDataDir``, optional, becomes the writer's ``saving_directory``. The writer, hit finder and data
policy are the ones the detector device itself names (its WriterDevice, HitFinderDevice and
DataPolicyDevice properties): frames flow in-process to exactly those devices, so a second list of names
in the environment could only disagree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tango
from sardana.macroserver.macro import Macro, Optional, Type
from sardana.macroserver.msexception import UnknownEnv

POLL_S = 0.1
PROGRESS_EVERY_S = 2.0
# Every detpipe command returns at once (Tango's default 3 s client timeout is plenty): Prepare arms in the
# background (State MOVING, then STANDBY or FAULT), Start runs until the State leaves RUNNING. The macros wait
# on State. The first Prepare on a machine may wait for the hit finder to compile peakfinder8.
PREPARE_TIMEOUT_S = 600.0
DRAIN_TIMEOUT_S = 120.0  # Stop: the frames already queued are written before the files close
RUN_TIMEOUT_S = 24 * 3600.0
EIGER_ENV, AGIPD_ENV, DATA_DIR_ENV = "DetpipeDetector", "DetpipeAgipd", "DetpipeDataDir"
COMPANIONS = {"writer": "WriterDevice", "hit finder": "HitFinderDevice", "data policy": "DataPolicyDevice"}
STATUS_COUNTERS = {
    "detector": ("acq_status", "frames_received", "frames_dropped"),
    "writer": ("frames_written", "last_image_saved", "master_file"),
    "hit finder": ("frames_triaged", "hits", "hit_rate"),
    "data policy": ("frames_in", "frames_kept", "hits_kept"),
}


def proxy(name: str) -> tango.DeviceProxy:
    return tango.DeviceProxy(name)


def env_text(macro: Macro, name: str, example: str, *, required: bool = True) -> str:
    """An environment variable; a missing required one says how to set it."""
    try:
        return str(macro.getEnv(name))
    except UnknownEnv:
        if required:
            raise ValueError(f"environment variable {name} is not set: senv {name} {example}") from None
        return ""


def companions(detector: tango.DeviceProxy) -> dict[str, tango.DeviceProxy]:
    """The writer, hit finder and data policy the detector feeds, by role; roles it has none for are absent."""
    found = {}
    for role, prop in COMPANIONS.items():
        values = detector.get_property(prop)[prop]
        if values and values[0]:
            found[role] = proxy(values[0])
    return found


def poll_until(macro: Macro, done: Callable[[], bool], timeout_s: float, what: str,
               progress: Callable[[], str] | None = None) -> None:
    """Poll ``done`` every POLL_S with a checkPoint, printing ``progress`` every PROGRESS_EVERY_S."""
    start = last_report = time.monotonic()
    while not done():
        macro.checkPoint()
        now = time.monotonic()
        if now - start > timeout_s:
            raise TimeoutError(f"{what} not done after {timeout_s:.0f}s")
        if progress is not None and now - last_report > PROGRESS_EVERY_S:
            macro.output("%s", progress())
            last_report = now
        time.sleep(POLL_S)


def enum_label_index(device: tango.DeviceProxy, attribute: str, label: str) -> int:
    labels = list(device.get_attribute_config(attribute).enum_labels)
    if label not in labels:
        raise ValueError(f"{attribute} must be one of {', '.join(labels)}, not {label!r}")
    return labels.index(label)


def enum_label(device: tango.DeviceProxy, attribute: str) -> str:
    return str(device.get_attribute_config(attribute).enum_labels[device.read_attribute(attribute).value])


class StopsDetector:
    """Runs a detpipe acquisition from a macro and stops it with the macro: Stop drains, so every frame
    received is written and the files stay valid; Abort closes them as they are."""

    armed_detector: tango.DeviceProxy | None = None

    def acquire(self, detector: tango.DeviceProxy, progress: Callable[[], str]) -> None:
        """Prepare, Start and wait until the writer has closed every file (acq_status Ready)."""
        self.armed_detector = detector
        detector.Prepare()
        poll_until(self, lambda: detector.State() != tango.DevState.MOVING, PREPARE_TIMEOUT_S,
                   f"{detector.name()} Prepare", lambda: detector.Status())
        if detector.State() != tango.DevState.STANDBY:
            raise RuntimeError(f"{detector.name()} Prepare ended in {detector.State()}: {detector.Status()}")
        self.output("%s", detector.Status())
        detector.Start()
        poll_until(self, lambda: detector.acq_status != "Running", RUN_TIMEOUT_S, detector.name(), progress)
        self.armed_detector = None
        if detector.acq_status != "Ready":
            raise RuntimeError(f"{detector.name()} ended in {detector.State()}: {detector.Status()}")

    def on_stop(self) -> None:
        """Stop answers at once and drains in the background: the macro ends once every frame received is
        written and the files are closed, so what it reports is what is on disk."""
        if self.armed_detector is not None:
            self.armed_detector.Stop()
            _wait_saved(self.armed_detector, DRAIN_TIMEOUT_S)
            self.output("Stopped. %s", self.armed_detector.Status())

    def on_abort(self) -> None:
        if self.armed_detector is not None:
            self.armed_detector.Abort()
            _wait_saved(self.armed_detector, DRAIN_TIMEOUT_S)


def data_policy(detector: tango.DeviceProxy, linked: dict[str, tango.DeviceProxy]) -> tango.DeviceProxy:
    if "data policy" not in linked:
        raise ValueError(f"{detector.name()} has no DataPolicyDevice property: it has no data policy to set")
    return linked["data policy"]


def set_policy(policy: tango.DeviceProxy, label: str, settings: str = "") -> None:
    """Settings first (validated as a whole by LoadPolicy), then the policy, so a bad setting changes nothing."""
    index = enum_label_index(policy, "policy", label)
    if settings:
        policy.LoadPolicy(settings)
    policy.policy = index


class sfx_acquire(StopsDetector, Macro):
    """Acquire one SFX series on the EIGER named by DetpipeDetector: nframes frames of expo seconds,
    triaged by its hit finder, kept according to its data policy and written by its writer.

    policy (raw, red or raw+red) sets the data policy first; DetpipeDataDir, when set, becomes the writer's
    saving_directory. Reports frames acquired and written, hits and files. Stop drains: every frame
    received is written and the files stay valid. Abort closes them as they are.
    """

    param_def = [
        ["nframes", Type.Integer, None, "Frames in the series"],
        ["expo", Type.Float, None, "Exposure per frame in seconds"],
        ["policy", Type.String, Optional, "Data policy for this series: raw, red or raw+red (default: as set)"],
    ]
    result_def = [
        ["frames_acquired", Type.Integer, None, "Frames received from the detector"],
        ["frames_written", Type.Integer, None, "Frames in the raw files"],
        ["hits", Type.Integer, None, "Frames the hit finder called hits; -1 without a hit finder"],
        ["master", Type.String, None, "Raw master file"],
    ]

    def run(self, nframes: int, expo: float, policy: str | None) -> tuple[int, int, int, str]:
        detector = proxy(env_text(self, EIGER_ENV, "eiger/detector/1"))
        linked = companions(detector)
        writer, finder, policy_device = linked["writer"], linked.get("hit finder"), linked.get("data policy")
        if policy is not None:
            set_policy(data_policy(detector, linked), policy)
        if data_dir := env_text(self, DATA_DIR_ENV, "/data/experiment", required=False):
            writer.saving_directory = data_dir
        if finder is not None:
            finder.enabled = True
        internal_trigger = enum_label_index(detector, "acq_trigger_mode", "INTERNAL_TRIGGER")
        detector.write_attributes([("acq_trigger_mode", internal_trigger), ("acq_nb_frames", nframes),
                                   ("acq_expo_time", expo)])
        self.acquire(detector, lambda: f"{detector.frames_received}/{nframes} frames received")
        acquired, written, master = detector.frames_received, writer.frames_written, writer.master_file
        hits = finder.hits if finder is not None else -1
        self.output("frames acquired %d, written %d, dropped %d", acquired, written, detector.frames_dropped)
        if finder is not None:
            self.output("hits %d of %d frames triaged", hits, finder.frames_triaged)
        self.output("master file %s", master)
        if policy_device is not None:
            self.output("data policy %s: %s", enum_label(policy_device, "policy"), policy_device.Status())
        return acquired, written, hits, master


class agipd_run(StopsDetector, Macro):
    """Record one AGIPD run of ntrains trains with the AgipdDetector named by DetpipeAgipd, into r<run>/.

    run defaults to the device's run_number; after a complete run run_number moves on by one, so the next
    agipd_run claims a new run directory (the writer refuses an existing one).
    """

    param_def = [
        ["ntrains", Type.Integer, None, "Trains in the run"],
        ["run", Type.Integer, Optional, "Run number (default: the device's run_number)"],
    ]
    result_def = [["run_directory", Type.String, None, "The run's directory"]]

    def run(self, ntrains: int, run: int | None) -> str:
        detector = proxy(env_text(self, AGIPD_ENV, "spb/agipd1m/1"))
        writer = companions(detector)["writer"]
        if data_dir := env_text(self, DATA_DIR_ENV, "/data/experiment", required=False):
            writer.saving_directory = data_dir
        run = detector.run_number if run is None else run
        detector.write_attributes([("run_number", run), ("acq_nb_trains", ntrains)])
        self.acquire(detector, lambda: f"{detector.trains_received}/{ntrains} trains received")
        directory = str(Path(writer.master_file).parent)
        self.output("run %d: %d trains, %d frames received, %d written, in %s", run, detector.trains_received,
                    detector.frames_received, writer.frames_written, directory)
        detector.run_number = run + 1
        return directory


class set_data_policy(Macro):
    """Set the data policy (raw, red or raw+red) of DetpipeDetector's DataPolicy device, with optional
    settings as a JSON or YAML mapping, e.g. set_data_policy raw+red '{"hits_only": true, "miss_fraction": 0.05}'.
    Refused while a series is prepared or running."""

    param_def = [
        ["policy", Type.String, None, "raw, red or raw+red"],
        ["settings", Type.String, Optional, "JSON/YAML mapping of policy parameters (docs/data_policy.md)"],
    ]

    def run(self, policy: str, settings: str | None) -> None:
        detector = proxy(env_text(self, EIGER_ENV, "eiger/detector/1"))
        device = data_policy(detector, companions(detector))
        set_policy(device, policy, settings or "")
        self.output("%s: %s", device.name(), device.policy_config)


class det_status(Macro):
    """State, Status and main counters of the detpipe detectors in the environment (DetpipeDetector,
    DetpipeAgipd) and of the writer, hit finder and data policy each one feeds."""

    def run(self) -> None:
        names = [env_text(self, name, "", required=False) for name in (EIGER_ENV, AGIPD_ENV)]
        if not any(names):
            raise ValueError(f"set {EIGER_ENV} and/or {AGIPD_ENV} first, e.g. senv {EIGER_ENV} eiger/detector/1")
        for name in filter(None, names):
            detector = proxy(name)
            for role, device in {"detector": detector, **companions(detector)}.items():
                self.output("%-11s %-24s %-8s %s", role, device.name(), device.State(), device.Status())
                self.output("%-11s %s", "", "  ".join(_counter(device, a) for a in STATUS_COUNTERS[role]))


def _wait_saved(detector: tango.DeviceProxy, timeout_s: float) -> None:
    """Poll until the series is closed, without checkPoint (the macro is already stopping)."""
    deadline = time.monotonic() + timeout_s
    while detector.acq_status == "Running" and time.monotonic() < deadline:
        time.sleep(POLL_S)


def _counter(device: tango.DeviceProxy, attribute: str) -> str:
    value: Any = device.read_attribute(attribute).value
    return f"{attribute}={value:.1f}" if isinstance(value, float) else f"{attribute}={value}"
