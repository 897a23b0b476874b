"""Sequences one Eiger acquisition: configure → arm → trigger(s) → disarm, with the receiver in step.

The order follows the DECTRIS SIMPLON API documentation. The writer is told the series id between ``arm`` and the first
message being read, so it can refuse the target files before a single frame is taken. Hardware
faults (REST errors, a silent stream) end the series in the writer with a reason, so the files stay
valid, and then surface as exceptions the device turns into FAULT.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from ..core.errors import (
    AcquisitionAbandoned,
    AcquisitionStateError,
    DetectorFailed,
    DetectorRefused,
    DetectorUnreachable,
)
from ..core.frame_queue import FrameQueue
from ..core.series import DetectorConfig, EndOfSeries, EndReason
from ..core.stage import Item
from ..core.thread_names import pipeline_thread
from .acquisition_params import AcquisitionParams, StreamFormatChoice
from .simplon_client import ConfigChange, SimplonClient
from .stream_receiver import StreamReceiver

log = logging.getLogger(__name__)


SeriesClaim = Callable[[int], FrameQueue[Item]]
"""Called once the detector is armed, with its series id: claims the series' files (raising the writer's
refusal) and returns the queue its frames go to (the writer's, or a hit finder's in front of it)."""


class Phase(enum.Enum):
    IDLE = "idle"
    PREPARED = "prepared"  # armed, waiting for Start
    ACQUIRING = "acquiring"  # triggers running or frames still arriving
    ENDING = "ending"  # disarmed, waiting for the series end to reach the writer


class StreamSilent(TimeoutError):
    def __init__(self, seconds: float, received: int, expected: int) -> None:
        super().__init__(
            f"no stream message for {seconds:.1f}s with {received}/{expected} frames received; "
            "the detector or its stream vanished; check the DCU, then Reset"
        )


class SeriesIdMismatch(RuntimeError):
    """The stream carries other series than the one ``arm`` answered: some DCUs number their stream apart from
    their sequence ids. Nothing of the armed series can arrive, so the series ends as an error naming both."""

    def __init__(self, armed: int, streamed: set[int]) -> None:
        ids = ", ".join(str(i) for i in sorted(streamed))
        super().__init__(f"arm answered series {armed} but the stream carries series {ids}; no frame of the "
                         "armed series arrived (another detector on this StreamEndpoint, or a DCU that numbers "
                         "its stream differently)")
        self.armed = armed
        self.streamed = streamed


MISMATCH_MESSAGES = 2  # messages of other series, with none of the armed one, that prove a series-id mismatch


class EigerAcquisition:
    """One detector's acquisition sequence; blocking methods, called from worker threads of the device.

    ``stream_timeout_s`` is how long the stream may stay silent while frames are still owed before the
    series is ended as timed out; ``end_timeout_s`` is how long to wait for the end message after disarm
    (simulators send it late or never) before ending the series ourselves.
    """

    def __init__(
        self,
        client: SimplonClient,
        receiver: StreamReceiver,
        *,
        stream_timeout_s: float = 5.0,
        end_timeout_s: float = 2.0,
    ) -> None:
        self.client = client
        self.receiver = receiver
        self.stream_timeout_s = stream_timeout_s
        self.end_timeout_s = end_timeout_s
        self.phase = Phase.IDLE
        self.series_id: int | None = None
        self.params: AcquisitionParams | None = None
        self.requested = AcquisitionParams()
        self.detector_values: dict[str, object] = {}
        self.unreadable_keys: dict[str, str] = {}  # side-effect keys of the last Prepare's PUTs GET could not read
        self.pixel_mask_note = ""  # why the last series' master has no pixel mask; empty when it has one
        self.pixel_mask: np.ndarray | None = None  # the armed series' mask as read over REST at Prepare
        self.rest_config: DetectorConfig | None = None  # the armed series' settings as read over REST
        self.step = ""  # what a Prepare in progress is doing, for the device's Status
        self._series_ended = threading.Event()
        self._last_end: EndOfSeries | None = None
        self._stop_requested = threading.Event()
        self._abandoned = False
        self._claim_lock = threading.Lock()  # abandon() vs. claiming files and listening
        receiver.on_series_end = self._on_series_end

    def request(self, **changes: object) -> None:
        """Change the settings the next Prepare applies; invalid values raise ``ConfigError``, nothing changes."""
        self.requested = AcquisitionParams.from_mapping({**_as_mapping(self.requested), **changes})

    @property
    def frames_expected(self) -> int:
        return self.params.nb_frames if self.params else 0

    def prepare(self, params: AcquisitionParams, claim: SeriesClaim) -> int:
        """Configure, arm, ``claim`` the series (files and route, resolved only now that the id is known) and point
        the receiver at it; returns the series id. A refusal of the claim disarms the detector again."""
        if self.phase in (Phase.ACQUIRING, Phase.ENDING):
            raise AcquisitionStateError("Prepare", self.phase.value, "Stop or Abort the running acquisition first")
        if self.phase is Phase.PREPARED or self.client.detector_status() == "ready":
            self._disarm_quietly()  # armed before: by us, by a Prepare abandoned at an Init, or by another client
        self.phase = Phase.IDLE
        self.step = f"configuring the detector at {self.client.base_url}"
        self._configure(params)
        self.receiver.stats.reset()
        self.receiver.decoder.reset()
        self._raise_if_abandoned(None)
        self.step = "arming the detector"
        series_id = self.client.command("arm")
        if series_id is None:
            raise DetectorRefused("arm", "the reply carried no sequence id")
        self.step = f"reading the settings of series {series_id}"
        rest_config = self._config_from_rest(params)
        pixel_mask = self._pixel_mask_from_rest(params, rest_config)
        self.step = f"claiming the files of series {series_id}"
        with self._claim_lock:
            self._raise_if_abandoned(series_id)
            try:
                outbox = claim(series_id)
            except Exception:
                self._disarm_quietly()
                raise
            self._series_ended.clear()
            self._stop_requested.clear()
            self.series_id, self.params, self.rest_config = series_id, params, rest_config
            self.pixel_mask = pixel_mask
            self.receiver.listen(series_id, outbox, rest_config, pixel_mask)
            self.phase = Phase.PREPARED
        log.info("series %d armed: %d frames", series_id, params.nb_frames)
        return series_id

    def abandon(self) -> None:
        """The device is re-initialised while ``prepare`` may still run in a worker thread (an arm can take
        seconds): from now on that prepare claims no files and listens to nothing. A prepare that already
        did is an armed series, which the device aborts like any other."""
        with self._claim_lock:
            self._abandoned = True

    def _raise_if_abandoned(self, series_id: int | None) -> None:
        if self._abandoned:
            raise AcquisitionAbandoned(series_id)

    def acquire(self) -> EndOfSeries:
        """Trigger (software modes), wait for every frame, disarm, and wait for the series end.

        Returns the end that closed the series. Raises ``DetectorUnreachable``, ``DetectorFailed`` or ``StreamSilent``
        after ending the series in the writer, so its files are closed and valid either way.
        """
        if self.phase is not Phase.PREPARED or self.params is None:
            raise AcquisitionStateError("Start", self.phase.value, "call Prepare first")
        self.phase = Phase.ACQUIRING
        self.receiver.last_message_monotonic = time.monotonic()  # an armed detector is silent until Start
        try:
            if self.params.trigger_mode.software_triggered:
                for _ in range(self.params.ntrigger):
                    if self._stop_requested.is_set():
                        break
                    self._trigger_watched()
            self._wait_for_frames()
        except (DetectorUnreachable, DetectorFailed, StreamSilent, DetectorRefused, SeriesIdMismatch) as err:
            reason = EndReason.TIMEOUT if isinstance(err, StreamSilent) else EndReason.ERROR
            self.receiver.end_series(reason, str(err))
            self._wait_series_end(self.end_timeout_s)
            self.phase = Phase.IDLE
            raise
        return self._end_series(EndReason.STOP if self._stop_requested.is_set() else EndReason.END_MESSAGE)

    def stop(self) -> None:
        """Stop after the current frame; every frame received is still written (drain)."""
        self._stop_requested.set()
        if self.phase is Phase.ACQUIRING:
            self._command_quietly("cancel")
        elif self.phase is Phase.PREPARED:
            self._end_series(EndReason.STOP)

    def abort(self) -> None:
        """Stop now: abort the detector and end the series at once; frames already queued are still written."""
        self._stop_requested.set()
        self._command_quietly("abort")
        if self.phase is not Phase.IDLE:
            self.receiver.end_series(EndReason.ABORT, "Abort command")
            self._wait_series_end(self.end_timeout_s)
        self.phase = Phase.IDLE

    def _configure(self, params: AcquisitionParams) -> None:
        readout_s = float(self.client.detector_config("detector_readout_time") or 0.0)
        settings = params.detector_settings()
        settings["frame_time"] = params.expo_time_s + max(params.latency_time_s, readout_s)
        if self.client.api_version == "1.6.0" and params.stream_format is StreamFormatChoice.CBOR:
            raise DetectorRefused("stream format cbor", "API 1.6.0 detectors stream V1 (legacy) only")
        self.detector_values, self.unreadable_keys = {}, {}
        for key, value in settings.items():
            self.detector_values.update(self._put(key, value).values)
        self._put("mode", "enabled", module="stream")
        self._put("header_detail", params.header_detail, module="stream")
        if self.client.api_version != "1.6.0":
            self._put("format", params.stream_format.value, module="stream")

    def _put(self, key: str, value: object, *, module: str = "detector") -> ConfigChange:
        """One PUT; side-effect keys the DCU listed but cannot serve are kept for Status, not fatal."""
        change = self.client.set_config(key, value, module=module)
        self.unreadable_keys.update(change.unreadable)
        return change

    def image_shape(self) -> tuple[int, int]:
        """(height, width) of the detector's images, read over REST (an ROI mode changes it)."""
        read = self.client.detector_config
        return (int(read("y_pixels_in_detector")), int(read("x_pixels_in_detector")))

    def geometry(self) -> DetectorConfig | None:
        """The detector's image geometry as the next series would have it (shape, bit depth, beam centre),
        read over REST: what the hit finder builds its geometry from before any Prepare."""
        return self._config_from_rest(self.requested)

    def _config_from_rest(self, params: AcquisitionParams) -> DetectorConfig | None:
        """The series metadata read over REST, for streams that carry none (header_detail none)."""
        try:
            read = self.client.detector_config
            bits = int(read("bit_depth_image"))
            return DetectorConfig(
                shape=(int(read("y_pixels_in_detector")), int(read("x_pixels_in_detector"))),
                dtype=np.dtype(f"uint{bits}"),
                nimages=params.nimages,
                ntrigger=params.ntrigger,
                count_time_s=float(self.detector_values.get("count_time", params.expo_time_s)),
                frame_time_s=float(self.detector_values.get("frame_time", params.expo_time_s)),
                photon_energy_ev=float(self.detector_values.get("photon_energy", params.photon_energy_ev)),
                wavelength_a=float(read("wavelength")),
                beam_center_x_px=float(read("beam_center_x")),
                beam_center_y_px=float(read("beam_center_y")),
                detector_distance_m=float(read("detector_distance")),
                x_pixel_size_m=float(read("x_pixel_size")),
                y_pixel_size_m=float(read("y_pixel_size")),
                sensor_material=str(read("sensor_material")),
                sensor_thickness_m=float(read("sensor_thickness")),
                description=str(read("description")),
                detector_number=str(read("detector_number")),
                trigger_mode=params.trigger_mode.simplon,
                compression=params.compression,
            )
        except (DetectorRefused, DetectorFailed, KeyError, TypeError, ValueError) as err:
            log.warning("REST metadata incomplete (%s); the master file gets what the stream sends", err)
            return None

    def _pixel_mask_from_rest(self, params: AcquisitionParams, config: DetectorConfig | None) -> np.ndarray | None:
        """The detector's pixel mask for a series whose header carries none (header_detail basic or none): DIALS,
        XDS and CrystFEL take bad pixels from the master's ``pixel_mask``. One read per Prepare, since the DCU
        may change its mask between series; a mask that cannot be read is noted, never fatal."""
        self.pixel_mask_note = ""
        if params.header_detail == "all":
            return None  # the stream header brings it
        try:
            mask = self.client.detector_array("pixel_mask")
        except (DetectorUnreachable, DetectorFailed, DetectorRefused, KeyError, TypeError, ValueError) as err:
            self.pixel_mask_note = f"no pixel_mask in the master: reading it over REST failed ({err})"
        else:
            if config is None or mask.shape == config.shape:
                return mask
            self.pixel_mask_note = f"no pixel_mask in the master: the DCU's is {mask.shape}, images are {config.shape}"
        log.warning("%s", self.pixel_mask_note)
        return None

    def _trigger_watched(self) -> None:
        """Run one blocking ``trigger`` while watching the stream: a silent stream ends it early."""
        failure: list[BaseException] = []
        done = threading.Event()

        def trigger() -> None:
            try:
                self.client.command("trigger")
            except BaseException as err:  # noqa: BLE001 - re-raised in the calling thread
                failure.append(err)
            finally:
                done.set()

        pipeline_thread(trigger, "trigger").start()
        while not done.wait(0.05):
            self._check_stream_alive()
        if failure:
            raise failure[0]

    def _wait_for_frames(self) -> None:
        """Until every frame of the armed series arrived, written or rejected; messages of other series never
        count (they would end the wait early and the series "done" with nothing written)."""
        stats = self.receiver.stats
        while (stats.frames_received + stats.frames_rejected < self.frames_expected
               and not self._stop_requested.is_set() and not self._series_ended.is_set()):
            self._check_stream_alive()
            self._check_series_ids()
            time.sleep(0.01)

    def _check_series_ids(self) -> None:
        stats = self.receiver.stats
        if (stats.rejected.get("other_series", 0) >= MISMATCH_MESSAGES and stats.frames_received == 0
                and stats.frames_rejected == 0 and self.series_id is not None):
            raise SeriesIdMismatch(self.series_id, set(stats.other_series_ids))

    def _check_stream_alive(self) -> None:
        silent_s = time.monotonic() - self.receiver.last_message_monotonic
        if silent_s > self.stream_timeout_s and not self._series_ended.is_set():
            raise StreamSilent(silent_s, self.receiver.stats.frames_received, self.frames_expected)

    def _end_series(self, reason: EndReason) -> EndOfSeries:
        self.phase = Phase.ENDING
        try:
            self.client.command("disarm")
        finally:
            if not self._wait_series_end(self.end_timeout_s):
                if reason is EndReason.END_MESSAGE:
                    reason = EndReason.DISARMED  # it says truthfully that no end message came
                self.receiver.end_series(reason, "no end message from the detector after disarm")
                self._wait_series_end(self.end_timeout_s)
            self.phase = Phase.IDLE
        assert self._last_end is not None
        return self._last_end

    def _wait_series_end(self, timeout_s: float) -> bool:
        return self._series_ended.wait(timeout_s)

    def _on_series_end(self, end: EndOfSeries) -> None:
        self._last_end = end
        self._series_ended.set()

    def _disarm_quietly(self) -> None:
        self._command_quietly("disarm")

    def _command_quietly(self, name: str) -> None:
        """Best-effort command during Stop/Abort/cleanup: a dead detector must not block the cleanup."""
        try:
            self.client.command(name)
        except (DetectorUnreachable, DetectorFailed, DetectorRefused) as err:
            log.warning("%s failed during cleanup: %s", name, err)


def _as_mapping(params: AcquisitionParams) -> dict[str, object]:
    return {
        name: (value.value if isinstance(value, enum.Enum) else value)
        for name, value in ((n, getattr(params, n)) for n in params.__dataclass_fields__)
    }
