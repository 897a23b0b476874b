"""What both ends of an EIGER stream show in Tango: the device that reads a stream (the detector's own, or its
share from a fan-out) with its counters, decode times and live image. EigerDetector and EigerReceiver build on it.
"""

from __future__ import annotations

import json

import numpy as np
from tango import DevState
from tango.server import attribute

from detpipe.pipeline.core.frame_queue import FrameQueue
from detpipe.pipeline.core.live_view import frame_picture
from detpipe.pipeline.core.stage import Item
from detpipe.pipeline.eiger.stream_receiver import StreamReceiver

from .detector_device import DetectorDevice
from .detpipe_device import CLOSE_WAIT_S, in_background, settle
from .live_view_device import LIVE_MAX_HEIGHT, LIVE_MAX_WIDTH


class StreamDevice(DetectorDevice):
    """A detector device whose frames arrive on one ``StreamReceiver`` (started by ``start_stream``)."""

    EVENT_ATTRIBUTES = ("last_image_acquired", "frames_received", "frames_dropped", "receive_rate", "acq_status")
    _receiver: StreamReceiver

    def start_stream(self, receiver: StreamReceiver) -> None:
        """Start reading ``receiver``'s socket and show its newest frame as the live image."""
        self._receiver = receiver
        receiver.start()
        forwarder = receiver.forwarder
        self.start_live_view(lambda: forwarder.latest, lambda frame: frame_picture(frame, forwarder.series_start),
                             lambda frame: frame.index)

    async def delete_device(self) -> None:
        await super().delete_device()
        await settle([in_background(self._receiver.close)], CLOSE_WAIT_S)  # ends a series still armed

    def claim_series(self, series_id: int) -> FrameQueue[Item]:
        """In the engine's thread: the sink claims the files of ``series_id``; returns where its frames go."""
        sink = self.data_sink()
        sink.prepare(series_id)
        return self.claimed(sink, series_id, self.detector_kind)

    def stream_fault(self) -> tuple[DevState, str] | None:
        """FAULT when the receive thread died (it never does by one message); None while it runs."""
        if self._receiver.failure:
            return DevState.FAULT, f"{self._receiver.failure}; Init starts a new receiver"
        return None

    def event_values(self) -> dict[str, object]:
        stats = self._receiver.stats
        return {
            "last_image_acquired": stats.last_image_acquired,
            "frames_received": stats.frames_received,
            "frames_dropped": stats.frames_dropped_total,
            "receive_rate": stats.rates()[1],
            "acq_status": self.acquisition_status(),
        }

    @attribute(label="Last image acquired",
               dtype=int, unit="frame", format="%d", description="Index of the last frame received; -1 before the first")
    async def last_image_acquired(self) -> int:
        return self._receiver.stats.last_image_acquired

    @attribute(dtype=((np.uint32,),), max_dim_x=LIVE_MAX_WIDTH, max_dim_y=LIVE_MAX_HEIGHT, unit="count",
               format="%d", label="Live image", data_ready_event_implemented=True,
               description="The newest frame received, at most live_image_max_rate times per second, in counts; "
                           "gap and masked pixels 0 (live_image_mask); its frame index in live_image_frame")
    async def live_image(self) -> np.ndarray:
        picture = self.live_picture()
        return picture.pixels.astype(np.uint32) if picture is not None else np.zeros((1, 1), np.uint32)

    @attribute(label="Frames received",
               dtype=int, unit="frame", format="%d", description="Frames received in this series")
    async def frames_received(self) -> int:
        return self._receiver.stats.frames_received

    @attribute(label="Frames dropped", dtype=int, unit="frame", format="%d",
               description="Frames received but not passed on: the writer queue was full, or (behind a fan-out) "
                           "the receiver they were for was gone; by reason in frames_dropped_reasons")
    async def frames_dropped(self) -> int:
        return self._receiver.stats.frames_dropped_total

    @attribute(label="Frames rejected", dtype=int, unit="message", format="%d",
               description="Stream messages rejected (malformed, other series...); see rejection_reasons")
    async def frames_rejected(self) -> int:
        return self._receiver.stats.rejected_total

    @attribute(label="Rejections, by reason", dtype=str, description="Rejected stream messages by reason, as JSON")
    async def rejection_reasons(self) -> str:
        return json.dumps(dict(self._receiver.stats.rejected))

    @attribute(label="Late messages", dtype=int, unit="message", format="%d",
               description="Messages of an earlier series read and discarded in this series (leftovers of a series "
                           "aborted, refused or re-initialised away; a second end message at disarm); not an error")
    async def late_messages(self) -> int:
        return self._receiver.stats.late_messages

    @attribute(label="Receive rate",
               dtype=float, unit="MB/s", format="%.1f", description="Compressed stream rate over the last second")
    async def receive_rate(self) -> float:
        return self._receiver.stats.rates()[1]

    @attribute(label="Receive frame rate",
               dtype=float, unit="frame/s", format="%.1f", description="Frames received per second over the last second")
    async def receive_frame_rate(self) -> float:
        return self._receiver.stats.rates()[0]

    @attribute(label="Decode time (last)",
               dtype=float, unit="ms", format="%.3f", description="Time to decode the last stream message")
    async def decode_time_last(self) -> float:
        return self._receiver.stats.time_last_ms

    @attribute(label="Decode time (mean)",
               dtype=float, unit="ms", format="%.3f", description="Mean time to decode one stream message")
    async def decode_time_mean(self) -> float:
        return self._receiver.stats.time_mean_ms

    @attribute(label="Decode time (max)",
               dtype=float, unit="ms", format="%.3f", description="Longest time to decode one stream message")
    async def decode_time_max(self) -> float:
        return self._receiver.stats.time_max_ms

    @attribute(label="Stream format",
               dtype=str, description="Stream format detected from the messages: legacy (V1), cbor (V2) or unknown")
    async def stream_format(self) -> str:
        fmt = self._receiver.decoder.stream_format
        return fmt.value if fmt is not None else "unknown"

    @attribute(label="Frames dropped, by reason", dtype=str,
               description="Frames received but not passed on, by reason, as JSON: queue_full (the writer's "
                           "queue), receiver_gone (behind a fan-out, the receiver of their block was gone)")
    async def frames_dropped_reasons(self) -> str:
        return json.dumps(dict(self._receiver.stats.frames_dropped))
