"""Spreads one detector stream over N receivers, in the style of odin-data's EigerFan: the fan-out reads the
DCU's stream like a single receiver and passes each message on, as it came, to one receiver: images in blocks
of ``block_frames`` (one data file each), round robin over the receivers still reachable; the series header
and end go to every receiver.

Why a fan-out stage and not several PULL clients on the DCU's PUSH socket (ZMQ fair queuing): the DCU sends
the header and the end message to one PULL client only, so the other receivers would have neither the series'
configuration nor its end; fair queuing hands out single frames, so every receiver's data file would be
full of holes and the master's virtual dataset would need one mapping per frame; and when a receiver dies,
the DCU's socket keeps queueing frames to it until its pipe fills. docs/scale_out.md has the measured cost.

Frames are passed on without a copy (the ZMQ message is re-sent by reference). A receiver that has not taken
a message for ``stall_timeout_s`` (its process died, its host went away) is marked gone with the reason: the
rest of its current block is counted lost (``frames_dropped["receiver_gone"]``) and later blocks go to the
others. A series that ends without the detector's end message (Stop without one, Abort, a silent stream) gets
a synthetic end message in the stream's own format, sent after the last frame on every link, so each
receiver closes its files with every frame it was sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cbor2
import numpy as np
import zmq

from ..core.frame import Frame
from ..core.series import DetectorConfig, EndOfSeries, SeriesStart
from ..core.stage import Item
from .frame_forwarder import ItemSink
from .stream_decoder import StreamFormat
from .stream_receiver import StreamReceiver
from .stream_v2 import SELF_DESCRIBE

log = logging.getLogger(__name__)

SEND_BUFFER_MESSAGES = 1000  # per receiver, on top of the receiver's own receive buffer
DEFAULT_STALL_TIMEOUT_S = 2.0


@dataclass
class ReceiverLink:
    """One downstream receiver: the PUSH socket bound for it, what it was sent, and why it is gone."""

    name: str
    endpoint: str
    socket: zmq.Socket
    frames_sent: int = 0
    frames_lost: int = 0  # frames of its blocks it could no longer be sent
    gone: str = ""  # why it no longer takes messages; empty while it does

    def reset(self) -> None:
        self.frames_sent = self.frames_lost = 0
        self.gone = ""


class StreamFanOut(StreamReceiver):
    """A ``StreamReceiver`` whose frames go to downstream receivers instead of a local queue.

    ``receivers`` is (name, endpoint) per receiver; each endpoint is bound here (127.0.0.1 unless configured
    otherwise) and the receiver connects its own PULL socket to it.
    """

    def __init__(self, endpoint: str, receivers: Sequence[tuple[str, str]], *,
                 stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S, receive_buffer_messages: int = 1000) -> None:
        super().__init__(endpoint, receive_buffer_messages=receive_buffer_messages)
        if not receivers:
            raise ValueError("a fan-out needs at least one receiver")
        self.stall_timeout_s = stall_timeout_s
        self.block_frames = 1000
        self.links = [ReceiverLink(name, *_bound_push(address)) for name, address in receivers]
        self._blocks: dict[int, ReceiverLink] = {}  # block number → the link its frames go to
        self._message: list[zmq.Frame] | None = None  # the stream message being decoded, as received
        self._message_sent = False  # it went out already (a V2 message of two thresholds is two frames)
        self._message_delivered = False

    def close(self, timeout_s: float = 5.0) -> None:
        super().close(timeout_s)
        for link in self.links:
            link.socket.close(linger=0)

    def distribute(self, block_frames: int) -> None:
        """Before ``listen``: the frames each receiver gets in a row, its data files' length, so that every data
        file is whole in one receiver's folder."""
        if block_frames < 1:
            raise ValueError(f"block_frames must be at least 1, got {block_frames}")
        self.block_frames = block_frames
        self._blocks = {}
        for link in self.links:
            link.reset()

    def listen(self, series_id: int, outbox: ItemSink, fallback_config: DetectorConfig | None,
               fallback_pixel_mask: np.ndarray | None = None) -> None:
        """As ``StreamReceiver.listen``; the series start and end reach ``outbox`` too, the frames do not."""
        super().listen(series_id, _Distribution(self, outbox), fallback_config, fallback_pixel_mask)

    @property
    def gone(self) -> list[ReceiverLink]:
        return [link for link in self.links if link.gone]

    def _handle_message(self, parts: list[zmq.Frame]) -> None:
        self._message, self._message_sent = parts, False
        try:
            super()._handle_message(parts)
        finally:
            self._message = None

    # --- called by _Distribution on the receive thread ---
    def pass_on_frame(self, frame: Frame) -> None:
        """Each frame of the message is counted; the message goes out once (two thresholds: one message)."""
        link = self._link_for(frame.index // self.block_frames)
        if not self._message_sent:
            self._message_sent = True
            self._message_delivered = link is not None and not link.gone and self._send(link, self._message or [])
        if self._message_delivered:
            assert link is not None
            link.frames_sent += 1
            return
        if link is not None:
            link.frames_lost += 1
        self.stats.frames_dropped["receiver_gone"] += 1

    def pass_on_boundary(self, item: SeriesStart | EndOfSeries) -> None:
        """The header or end to every receiver: as received, or, for an end the detector did not send, made."""
        parts = self._message if self._message is not None else self._end_message(item.series_id)
        for link in self.links:
            if not link.gone:
                self._send(link, parts)

    def _link_for(self, block: int) -> ReceiverLink | None:
        """The receiver of ``block``: chosen among those still reachable at its first frame, and kept (gone or
        not) for the rest of it, so a data file is never split; None when every receiver is gone."""
        link = self._blocks.get(block)
        if link is None:
            alive = [candidate for candidate in self.links if not candidate.gone]
            if not alive:
                return None
            link = self._blocks[block] = alive[block % len(alive)]
        return link

    def _send(self, link: ReceiverLink, parts: Sequence[zmq.Frame | bytes]) -> bool:
        """Sends at once when the link has room (the poll answers at once then), else waits up to
        ``stall_timeout_s`` for some; a receiver that made none in that time is gone."""
        if link.socket.poll(int(self.stall_timeout_s * 1000), zmq.POLLOUT):
            link.socket.send_multipart(parts, copy=False)
            return True
        link.gone = (f"took no message for {self.stall_timeout_s:.1f} s at {link.endpoint} (its process or host "
                     "is gone, or it stopped reading)")
        log.error("receiver %s: %s; its frames are counted lost, later blocks go to the others", link.name, link.gone)
        return False

    def _end_message(self, series_id: int) -> list[bytes]:
        """An end message as the DCU would send it, in the series' stream format."""
        if self.decoder.stream_format is StreamFormat.V2:
            start = self.forwarder.series_start
            unique = {"series_unique_id": start.unique_id} if start is not None and start.unique_id else {}
            return [SELF_DESCRIBE + cbor2.dumps({"type": "end", "series_id": series_id, **unique})]
        return [json.dumps({"htype": "dseries_end-1.0", "series": series_id}).encode()]


class _Distribution:
    """Where the fan-out's receive thread puts what it decoded: frames to the receivers, start and end to all
    receivers and to the local ``outbox``. Never refuses an item: a frame no receiver takes is counted by
    the fan-out."""

    def __init__(self, fan_out: StreamFanOut, outbox: ItemSink) -> None:
        self._fan_out, self._outbox = fan_out, outbox

    def put(self, item: Item) -> bool:
        if isinstance(item, Frame):
            self._fan_out.pass_on_frame(item)
            return True
        self._fan_out.pass_on_boundary(item)
        return self._outbox.put(item)


def _bound_push(endpoint: str) -> tuple[str, zmq.Socket]:
    """(the endpoint as bound, the socket): a wildcard port (``tcp://127.0.0.1:*``) is resolved."""
    socket = zmq.Context.instance().socket(zmq.PUSH)
    socket.setsockopt(zmq.SNDHWM, SEND_BUFFER_MESSAGES)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.bind(endpoint)
    except zmq.ZMQError as err:
        socket.close(linger=0)
        raise OSError(f"cannot bind the fan-out endpoint {endpoint}: {err}") from None
    return socket.getsockopt_string(zmq.LAST_ENDPOINT), socket
