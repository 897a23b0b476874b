"""A simulated EIGER2 DCU: SIMPLON REST + ZMQ stream (V1 or V2) + frames with ground truth.

It behaves like the hardware where detpipe depends on it (docs/detector_variance.md): the stream starts disabled,
bslz4 blobs carry the 12-byte header, masked pixels hold 2**bit_depth − 1, bit depth follows count_time,
a PUT reports every key it changed, and the end message goes out on disarm. Everything binds to
127.0.0.1 unless told otherwise; ports of 0 are chosen by the OS and reported.

    with EigerSimulator("1M", seed=7) as sim:
        sim.rest_url, sim.stream_endpoint       # point the receiver and control device here
        sim.frames.pixels(i), sim.frames.truth(i)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from .blob_cache import DEFAULT_CACHE_BYTES, BlobCache
from .dataset_replay import DatasetFrames
from .detector_config import DetectorConfig, ImageFormat
from .detector_models import DetectorGeometry, DetectorModel
from .eiger_acquisition import DetectorState, EigerAcquisition
from .eiger_compression import BlobLayout, Compression, encode
from .eiger_rest import EigerRestServer, SimplonModule
from .eiger_status import detector_status, filewriter_status, stream_status
from .eiger_stream import StreamSender
from .filewriter_config import FilewriterConfig
from .frame_source import FrameSource
from .sfx_difficulty import preset
from .sfx_frames import SfxFrames
from .simplon_errors import RequestRejected
from .simplon_parameters import API_1_8, API_VERSIONS, utc_timestamp
from .stream_config import HeaderDetail, StreamConfig, StreamFormat
from .stream_series import EncodedImage, StreamSeries, new_series_unique_id

log = logging.getLogger(__name__)


def blob_layout(stream_format: StreamFormat, compression: Compression) -> BlobLayout:
    """V1 ``lz4<`` is one raw LZ4 block while V2 ``lz4`` uses filter-32004 framing."""
    if compression is Compression.BSLZ4:
        return BlobLayout.BSLZ4_CHUNK
    if compression is Compression.LZ4:
        return BlobLayout.LZ4_BLOCK if stream_format is StreamFormat.LEGACY else BlobLayout.LZ4_CHUNK
    return BlobLayout.RAW


class EigerSimulator:
    """REST server, stream sender and frame source of one simulated detector; a context manager.

    ``dataset`` ("FILE" or "FILE::/path") replays recorded frames instead of synthetic ones; its shape
    and dtype then fix the image size and bit depth. ``paced=False`` sends images as fast as possible.
    ``arm_delay_s`` (settable between series) is how long ``arm`` takes to answer: a real DCU arms in a
    fraction of a second to several seconds (large EIGER2 models, first arm after initialize), and a
    control system must not wait for it inside a client's call.
    """

    def __init__(
        self,
        model: DetectorModel | str = DetectorModel.EIGER2_4M,
        *,
        host: str = "127.0.0.1",
        rest_port: int = 0,
        stream_port: int = 0,
        seed: int = 0,
        hit_fraction: float = 0.1,
        peaks_per_hit: tuple[int, int] = (15, 60),
        difficulty: str = "easy",
        paced: bool = True,
        dataset: str | Path | None = None,
        distinct_frames: int | None = None,
        api_version: str = API_1_8,
        send_timeout_s: float = 2.0,
        blob_cache_bytes: int = DEFAULT_CACHE_BYTES,
        arm_delay_s: float = 0.0,
    ) -> None:
        if api_version not in API_VERSIONS:
            raise ValueError(f"api_version {api_version!r} is not one of {list(API_VERSIONS)}")
        if not arm_delay_s >= 0:
            raise ValueError(f"arm_delay_s must be >= 0 seconds, got {arm_delay_s}")
        self.arm_delay_s = arm_delay_s
        self.geometry = DetectorGeometry.of(model)
        # Built first so bad options fail before any file or port is opened; settings follow the config.
        self._sfx = SfxFrames(
            self.geometry.model,
            seed=seed,
            hit_fraction=hit_fraction,
            peaks_per_hit=peaks_per_hit,
            distinct_frames=distinct_frames,
            difficulty=preset(difficulty),
        )
        self._dataset = DatasetFrames(dataset) if dataset is not None else None
        image = ImageFormat(*self.geometry.shape)
        if self._dataset is not None:
            height, width = self._dataset.shape
            image = ImageFormat(height, width, fixed_bit_depth=self._dataset.dtype.itemsize * 8)
        self.detector_config = DetectorConfig(self.geometry, image, api_version=api_version)
        self.stream_config = StreamConfig()
        self.filewriter_config = FilewriterConfig()
        self._cache: BlobCache[EncodedImage] = BlobCache(max_bytes=blob_cache_bytes)
        self._last_unique_id = ""
        self._stopped = False
        try:
            self._sender = StreamSender(host=host, port=stream_port, paced=paced, send_timeout_s=send_timeout_s)
        except OSError:
            self._close_dataset()
            raise
        self._acquisition = EigerAcquisition(self._sender)
        try:
            self._rest = EigerRestServer(self._modules(), host=host, port=rest_port, api_version=api_version)
        except OSError:
            self._sender.stop()
            self._close_dataset()
            raise

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> EigerSimulator:
        self._sender.start()
        self._rest.start()
        log.info("EIGER %s simulator: rest %s, stream %s", self.geometry.model.value, self.rest_url,
                 self.stream_endpoint)
        return self

    def stop(self) -> None:
        """Abort any series (its end message still goes out), then close both servers; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._acquisition.abort()
        self._rest.stop()
        self._sender.stop()
        self._close_dataset()

    def kill(self) -> None:
        """Die mid-series like a detector losing power: no end message, sockets and HTTP server closed,
        requests in flight get no reply."""
        if self._stopped:
            return
        self._stopped = True
        self._rest.kill()
        self._sender.kill()
        self._rest.stop()
        self._close_dataset()

    def _close_dataset(self) -> None:
        if self._dataset is not None:
            self._dataset.close()

    def __enter__(self) -> EigerSimulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- what tests and benchmarks read ------------------------------------------------------------
    @property
    def paced(self) -> bool:
        """Whether images leave at frame_time intervals (True) or as fast as possible; settable between series."""
        return self._sender.paced

    @paced.setter
    def paced(self, value: bool) -> None:
        self._sender.paced = value

    @property
    def rest_url(self) -> str:
        return self._rest.url

    @property
    def stream_endpoint(self) -> str:
        return self._sender.endpoint

    @property
    def api_version(self) -> str:
        """The SIMPLON API version this DCU reports (and, without its version endpoint, the only one served)."""
        return self._rest.api_version

    @property
    def rest_log(self) -> list[tuple[str, str]]:
        """(method, path) of every REST request so far, in arrival order (a copy)."""
        return list(self._rest.request_log)

    @property
    def frames_sent(self) -> int:
        """Images sent in the current or last series (dropped ones excluded)."""
        return self._sender.frames_sent

    @property
    def frames_dropped(self) -> int:
        return self._sender.frames_dropped

    @property
    def state(self) -> DetectorState:
        return self._acquisition.state

    @property
    def frames(self) -> FrameSource:
        """The frame source as the current configuration (bit depth, beam centre, mask) shapes it."""
        if self._dataset is not None:
            return self._dataset
        self._sfx = self._sfx.with_settings(**self._sfx_settings())
        return self._sfx

    def encoded_blob(self, index: int) -> bytes:
        """The bytes the stream sends for image ``index`` under the current configuration: V1 part 3,
        or in V2 the bytes inside tag 56500 (the bare typed-array bytes for ``compression=none``)."""
        stream_format = StreamFormat(self.stream_config["format"])
        layout = blob_layout(stream_format, Compression(self.detector_config["compression"]))
        return self._encoded_image(self.frames, layout, index).blob

    def dcu_deviations(self, *, stream_id_offset: int | None = None, duplicate_end_at_disarm: bool | None = None,
                       end_message: bool | None = None) -> None:
        """Make the simulator behave like a DCU that deviates from the documented stream (see
        ``EigerAcquisition``); the options left ``None`` keep their value. Takes effect at the next arm."""
        acquisition = self._acquisition
        if stream_id_offset is not None:
            acquisition.stream_id_offset = stream_id_offset
        if duplicate_end_at_disarm is not None:
            acquisition.duplicate_end_at_disarm = duplicate_end_at_disarm
        if end_message is not None:
            acquisition.end_message = end_message

    def rest_deviations(self, *, version_endpoint: bool | None = None,
                        unreadable_changed_keys: Mapping[str, int] | None = None,
                        failing_requests: Mapping[str, str] | None = None) -> None:
        """Make the REST interface deviate like some DCUs do (see ``EigerRestServer``); options left ``None``
        keep their value, so ``rest_deviations(version_endpoint=True, unreadable_changed_keys={},
        failing_requests={})`` restores the documented behaviour. Takes effect at the next request.

        ``version_endpoint=False``: ``/detector/api/version/`` answers 404 and only the configured API version
        is served. ``unreadable_changed_keys`` {key: 404 or 5xx}: every config PUT lists these keys as
        changed and a GET of them answers that status. ``failing_requests`` {key or command: reason}: any
        request naming it answers HTTP 500 with the reason as its body."""
        rest = self._rest
        if version_endpoint is not None:
            rest.version_endpoint = version_endpoint
        if unreadable_changed_keys is not None:
            if bad := {k: s for k, s in unreadable_changed_keys.items() if s != 404 and not 500 <= s < 600}:
                raise ValueError(f"unreadable keys answer 404 or 5xx, not {bad}")
            rest.unreadable_changed_keys = dict(unreadable_changed_keys)
        if failing_requests is not None:
            rest.failing_requests = dict(failing_requests)

    def fire_external_trigger(self, exposure_s: float | None = None) -> None:
        """One hardware trigger (``exts``) or gate of ``exposure_s`` (``exte``): sends ``nimages`` images."""
        self._acquisition.fire_external_trigger(exposure_s)

    # -- composition ---------------------------------------------------------------------------------
    def _sfx_settings(self) -> dict[str, Any]:
        config = self.detector_config
        return {
            "bit_depth": config["bit_depth_image"],
            "beam_center": (config["beam_center_x"], config["beam_center_y"]),
            "pixel_mask_applied": config["pixel_mask_applied"],
        }

    def _encoded_image(self, frames: FrameSource, layout: BlobLayout, index: int) -> EncodedImage:
        def make() -> EncodedImage:
            return EncodedImage(encode(frames.pixels(index), layout))

        return self._cache.get_or_make((frames, frames.frame_key(index), layout), make)

    def _open_series(self, series_id: int) -> StreamSeries:
        """Snapshot the configuration at arm; the series keeps it whatever is PUT later."""
        now = datetime.now(timezone.utc)
        self.detector_config.set_internal("data_collection_date", utc_timestamp(now))
        config, stream = self.detector_config.snapshot(), self.stream_config.snapshot()
        frames = self.frames
        stream_format = StreamFormat(stream["format"])
        layout = blob_layout(stream_format, Compression(config["compression"]))
        self._last_unique_id = new_series_unique_id(now.timestamp())
        return StreamSeries(
            series_id=series_id,
            unique_id=self._last_unique_id,
            arm_date=now,
            arm_clock_s=time.monotonic(),
            stream_enabled=stream["mode"] == "enabled",
            stream_format=stream_format,
            header_detail=HeaderDetail(stream["header_detail"]),
            header_appendix=stream["header_appendix"],
            image_appendix=stream["image_appendix"],
            detector_config=config,
            frames=frames,
            encoded_image=lambda index: self._encoded_image(frames, layout, index),
        )

    def _modules(self) -> dict[str, SimplonModule]:
        acquisition = self._acquisition

        def arm(_: Any) -> dict[str, int]:
            time.sleep(self.arm_delay_s)
            return {"sequence id": acquisition.arm(self._open_series)}

        def trigger(value: Any) -> None:
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise RequestRejected(f"trigger takes an exposure time in seconds or no body, not {value!r}")
            acquisition.trigger(None if value is None else float(value))

        detector_commands = {
            "initialize": lambda _: acquisition.initialize(),
            "arm": arm,
            "trigger": trigger,
            "disarm": lambda _: {"sequence id": acquisition.disarm()},
            "cancel": lambda _: {"sequence id": acquisition.cancel()},
            "abort": lambda _: {"sequence id": acquisition.abort()},
            "status_update": lambda _: None,
        }
        return {
            "detector": SimplonModule(
                config=self.detector_config,
                status=detector_status(acquisition, lambda: self._last_unique_id),
                commands=detector_commands,
                arrays={"pixel_mask": lambda: self.frames.pixel_mask},
            ),
            "stream": SimplonModule(
                config=self.stream_config,
                status=stream_status(self.stream_config, self._sender),
                commands={"initialize": lambda _: None},
            ),
            "filewriter": SimplonModule(
                config=self.filewriter_config,
                status=filewriter_status(),
                commands={"clear": lambda _: None, "initialize": lambda _: None},
            ),
        }
