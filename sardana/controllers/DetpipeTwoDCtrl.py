"""Sardana 2D controller for a detpipe EigerDetector: the frames stay in detpipe's NXmx files and the scan
records ``h5file://`` references to them (Sardana documentation, Referable 2D controllers: references, not
pixels, on the scan bus).

Loaded by the Pool from ``PoolPath``; it needs only pytango, h5py and hdf5plugin, not detpipe itself, so a
Sardana host may run it against a detpipe server on another machine. Wiring and limits: docs/sardana.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import h5py
import hdf5plugin  # noqa: F401 - registers the bitshuffle/LZ4 filter that ReadOne needs to decode frames
import numpy as np
import tango
from sardana import State
from sardana.pool import AcqSynch
from sardana.pool.controller import DefaultValue, Description, MaxDimSize, Referable, TwoDController, Type

FRAMES_DATASET = "/entry/data/data"
# Every detpipe command returns at once: Prepare arms in the background (State MOVING, then STANDBY or FAULT), so
# the controller waits on State, not on a long client timeout. The first Prepare on a machine may wait for the
# hit finder to compile peakfinder8.
PREPARE_TIMEOUT_S = 600.0
POLL_S = 0.05
# EIGER2 16M images are 4148 x 4362 pixels, beyond Sardana's default 4096 x 4096 Value attribute.
MAX_IMAGE_SIZE = (8192, 8192)

# Sardana synchronisation -> EigerDetector.acq_trigger_mode (Sardana documentation, after sardana-limaccd).
TRIGGER_MODES = {
    AcqSynch.SoftwareStart: "INTERNAL_TRIGGER",
    AcqSynch.SoftwareTrigger: "INTERNAL_TRIGGER_MULTI",
    AcqSynch.SoftwareGate: "INTERNAL_TRIGGER_MULTI",
    AcqSynch.HardwareStart: "EXTERNAL_TRIGGER",
    AcqSynch.HardwareTrigger: "EXTERNAL_TRIGGER_MULTI",
    AcqSynch.HardwareGate: "EXTERNAL_GATE",
}
HARDWARE = (AcqSynch.HardwareStart, AcqSynch.HardwareTrigger, AcqSynch.HardwareGate)
# One value per start; the other modes report lists of the frames saved since the last read.
ONE_VALUE_PER_START = (AcqSynch.SoftwareTrigger, AcqSynch.SoftwareGate)


def frame_reference(path: str, index: int) -> str:
    """``h5file:///abs/path.h5::/entry/data/data[index]``: silx's ``path::dataset[index]`` notation with Sardana's
    ``h5file`` scheme; ``index`` is 0-based along the frame axis. Sardana's NXscanH5 recorder cannot turn a
    reference with an index into a virtual dataset, warns "Unsupported reference" and keeps the string."""
    return f"h5file://{path}::{FRAMES_DATASET}[{index}]"


def read_frames(path: str, indexes: range) -> list[np.ndarray]:
    if not indexes:
        return []
    with h5py.File(path, "r") as f:
        return list(f[FRAMES_DATASET][indexes.start:indexes.stop])


def replace_prefix(path: str, detector_prefix: str, analysis_prefix: str) -> str:
    """``path`` as the analysis side sees it, when the writer reported it under ``detector_prefix``."""
    if detector_prefix and path.startswith(detector_prefix):
        return analysis_prefix + path[len(detector_prefix):]
    return path


class DetpipeTwoDController(TwoDController, Referable):
    """One axis: the EigerDetector named by ``DeviceName``; its frames are read back through the writer's files.

    Software synchronisation (``ct``, step scans, ``timescan``): each start is its own Eiger series of
    ``repetitions`` frames, configured and armed in ``LoadOne`` and triggered in ``StartOne``. detpipe's
    INTERNAL_TRIGGER_MULTI sends its software triggers itself within ``Start``, so a Sardana trigger cannot
    reach an armed series frame by frame; a series per start is the exact equivalent. Hardware
    synchronisation: one series of ``repetitions x nb_starts`` frames armed in ``PrepareOne``, started once,
    triggered by the hardware. Finished means saved: the axis is Moving until the writer has closed the
    series (``acq_status`` Ready), or, between hardware starts, until this start's frames are saved.
    """

    gender = "detpipe"
    model = "EigerDetector"
    organization = "detpipe"
    MaxDevice = 1

    ctrl_properties = {
        "DeviceName": {Type: str, Description: "The EigerDetector device, e.g. eiger/detector/1"},
        "WriterDevice": {
            Type: str, DefaultValue: "",
            Description: "The NexusWriter device whose files hold the frames; empty = the detector's WriterDevice",
        },
        "DetectorPathPrefix": {
            Type: str, DefaultValue: "",
            Description: "Start of the file paths as the writer reports them, e.g. /detector/data",
        },
        "AnalysisPathPrefix": {
            Type: str, DefaultValue: "",
            Description: "What DetectorPathPrefix becomes in references, e.g. /gpfs/beamline/data",
        },
    }

    def __init__(self, inst: str, props: dict, *args: object, **kwargs: object) -> None:
        TwoDController.__init__(self, inst, props, *args, **kwargs)
        self._detector = _proxy(self.DeviceName)
        self._writer = _proxy(self.WriterDevice or _device_property(self._detector, "WriterDevice"))
        self._policy_name = _device_property(self._detector, "DataPolicyDevice")
        self._synchronization = AcqSynch.SoftwareTrigger
        self._repetitions = 1
        self._nb_starts = 1
        self._starts = 0
        self._master = ""
        self._next_ref = 0  # next frame index of the series to report by RefOne
        self._next_value = 0  # ... by ReadOne
        self._shape: list[int] | None = None
        self._value_ref_enabled = False
        self._value_ref_pattern = ""

    def GetAxisAttributes(self, axis: int) -> dict:
        attributes = super().GetAxisAttributes(axis)
        attributes["Value"][MaxDimSize] = MAX_IMAGE_SIZE
        return attributes

    def AddDevice(self, axis: int) -> None:
        if axis != 1:
            raise ValueError(f"{type(self).__name__} has one axis (1), the detector {self.DeviceName}")

    # --- acquisition (call order: Sardana documentation) ---
    @property
    def _hardware(self) -> bool:
        return self._synchronization in HARDWARE

    def PrepareOne(self, axis: int, value: float, repetitions: int, latency: float, nb_starts: int) -> None:
        self._check_raw_frames_kept()
        self._repetitions, self._nb_starts, self._starts = repetitions, nb_starts, 0
        if self._hardware:
            self._arm(repetitions * nb_starts, value, latency)

    def LoadOne(self, axis: int, integ_time: float, repetitions: int, latency_time: float) -> None:
        if not self._hardware:
            self._repetitions = repetitions
            self._arm(repetitions, integ_time, latency_time)

    def StartOne(self, axis: int, value: float) -> None:
        self._starts += 1
        if not self._hardware or self._starts == 1:
            self._detector.Start()

    def StateOne(self, axis: int) -> tuple[int, str]:
        acq_status = self._detector.acq_status
        if acq_status == "Fault":
            return State.Fault, f"{self.DeviceName}: {self._detector.Status()}"
        if acq_status == "Ready" or self._start_saved():
            return State.On, f"{self.DeviceName} ready; last series in {self._master or '(none yet)'}"
        return State.Moving, f"{self.DeviceName} acquiring into {self._master}"

    def _start_saved(self) -> bool:
        """Between hardware starts of one series: this start's frames are on disk (the last start waits for
        the series to close instead)."""
        if not self._hardware or self._starts >= self._nb_starts:
            return False
        return self._writer.last_image_saved + 1 >= self._starts * self._repetitions

    def RefOne(self, axis: int) -> str | list[str]:
        master = self._reference_path(self._master)
        return self._frames(lambda indexes: [frame_reference(master, i) for i in indexes], "_next_ref")

    def ReadOne(self, axis: int) -> np.ndarray | list[np.ndarray]:
        """Pixels, for measurement groups without value references; read once the series is closed (the
        writer holds the files open until then)."""
        if self._detector.acq_status == "Running":
            if self._synchronization in ONE_VALUE_PER_START:
                raise RuntimeError(f"{self._master} is still being written; its frame is readable once saved")
            return []
        return self._frames(lambda indexes: read_frames(self._reference_path(self._master), indexes), "_next_value")

    def StopOne(self, axis: int) -> None:
        self._detector.Stop()

    def AbortOne(self, axis: int) -> None:
        self._detector.Abort()

    # --- parameters ---
    def SetAxisPar(self, axis: int, parameter: str, value: object) -> None:
        """``value_ref_pattern`` is kept but not used: references always name the files the writer wrote."""
        if parameter == "value_ref_enabled":
            self._value_ref_enabled = bool(value)
        elif parameter == "value_ref_pattern":
            self._value_ref_pattern = str(value)
        else:
            super().SetAxisPar(axis, parameter, value)

    def GetAxisPar(self, axis: int, parameter: str) -> object:
        if parameter == "shape":
            return self._image_shape()
        if parameter == "value_ref_enabled":
            return self._value_ref_enabled
        if parameter == "value_ref_pattern":
            return self._value_ref_pattern
        return super().GetAxisPar(axis, parameter)

    # --- helpers ---
    def _arm(self, nb_frames: int, expo_time_s: float, latency_s: float) -> None:
        """Configure and Prepare one series; the writer has claimed its files when Prepare returns."""
        mode = TRIGGER_MODES.get(self._synchronization)
        if mode is None:
            raise ValueError(f"synchronisation {self._synchronization!r} has no EigerDetector trigger mode")
        trigger_modes = list(self._detector.get_attribute_config("acq_trigger_mode").enum_labels)  # a DevEnum
        self._detector.write_attributes([
            ("acq_trigger_mode", trigger_modes.index(mode)), ("acq_nb_frames", int(nb_frames)),
            ("acq_expo_time", float(expo_time_s)), ("latency_time", float(latency_s)),
        ])
        self._detector.Prepare()
        state = _wait_while_moving(self._detector, PREPARE_TIMEOUT_S)
        if state != tango.DevState.STANDBY:
            raise RuntimeError(f"{self.DeviceName} Prepare ended in {state}: {self._detector.Status()}")
        self._master, self._next_ref, self._next_value = self._writer.master_file, 0, 0

    def _frames(self, fetch: Callable[[range], list], cursor: str) -> object:
        """The point's one frame in trigger/gate modes (the Pool appends it at the point's index; reading again
        gives it again), else a list of the frames saved since the last call (the Pool extends its buffer with
        them; ``cursor`` names the attribute that remembers where the last call stopped)."""
        if not self._master:
            raise RuntimeError(f"nothing acquired through {type(self).__name__} yet; count first (ct)")
        last = self._writer.last_image_saved
        if self._synchronization in ONE_VALUE_PER_START:
            if last < 0:
                raise RuntimeError(f"no frame of {self._master} was saved")
            return fetch(range(last, last + 1))[0]
        first = getattr(self, cursor)
        setattr(self, cursor, max(first, last + 1))
        return fetch(range(first, last + 1))

    def _reference_path(self, path: str) -> str:
        return replace_prefix(path, self.DetectorPathPrefix, self.AnalysisPathPrefix)

    def _image_shape(self) -> list[int] | None:
        """[x, y] of the detector's frames, from the writer's latest master (the writer holds it open while a series
        runs: then the last shape seen); None before any series, and Sardana falls back to MaxDimSize."""
        master = self._master or self._writer.master_file
        if master and self._detector.acq_status != "Running":
            with h5py.File(self._reference_path(master), "r") as f:
                height, width = f[FRAMES_DATASET].shape[1:]
            self._shape = [int(width), int(height)]
        return self._shape

    def _check_raw_frames_kept(self) -> None:
        """References point at raw frames; a DataPolicy keeping only RED data leaves none to point at."""
        if not self._policy_name:
            return
        policy = _proxy(self._policy_name)
        labels: Sequence[str] = policy.get_attribute_config("policy").enum_labels
        if labels[policy.policy] == "red":
            raise ValueError(f"{self._policy_name} keeps RED data only (policy red); {type(self).__name__} "
                             "references raw frames: set its policy to raw or raw+red")


def _proxy(name: str) -> tango.DeviceProxy:
    return tango.DeviceProxy(name)


def _wait_while_moving(detector: tango.DeviceProxy, timeout_s: float) -> tango.DevState:
    """The State once a background Prepare has ended (STANDBY, or FAULT with the reason in Status)."""
    deadline = time.monotonic() + timeout_s
    while (state := detector.State()) == tango.DevState.MOVING:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{detector.name()} still preparing after {timeout_s:.0f}s: {detector.Status()}")
        time.sleep(POLL_S)
    return state


def _device_property(device: tango.DeviceProxy, name: str) -> str:
    values = device.get_property(name)[name]
    return values[0] if values else ""
