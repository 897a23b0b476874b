"""Mutated messages injected between the EIGER simulator and a running detpipe server: a ZMQ peer forwards
every message of the series and, after each image and the header, sends mutated copies (numbered past the
series, so none can pass for a good frame). The series still ends with every frame written pixel-equal to
the simulator's truth, every mutated message counted, the devices in ALARM (not FAULT), and the next series
runs clean."""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cbor2
import h5py
import numpy as np
import pytest
import tango
import zmq

from detpipe.devices.cli.embedded_database import free_tcp_port
from detpipe.simulators import EigerSimulator
from tests.device_servers import device_server
from tests.fuzz.mutations import VICTIM_BASE, mutate_v1, mutate_v2
from tests.integration.conftest import DETECTOR, WRITER, server_devices
from tests.integration.test_eiger_slice import acquire, configure
from tests.pipeline.stream_messages import corrupt_first_match

FRAMES = 30
MUTATIONS_PER_IMAGE = int(os.environ.get("DETPIPE_DEVICE_FUZZ_PER_IMAGE", "70"))  # ≥ 2,000 per protocol


class MutatingPeer:
    """PULL from the simulator, PUSH to the server; after each image (and the header) of a series,
    ``per_message`` mutated copies. ``injected`` counts them; ``enabled`` off forwards untouched. The V1
    images numbered in ``corrupt_frames`` go on with a flipped LZ4 match offset in their chunk."""

    def __init__(self, upstream: str, endpoint: str, per_message: int, seed: int) -> None:
        """Created after the server process is forked: a forked child must not inherit live ZMQ sockets."""
        context = zmq.Context.instance()
        self._pull = context.socket(zmq.PULL)
        self._pull.connect(upstream)
        self._pull.setsockopt(zmq.RCVTIMEO, 50)
        self._push = context.socket(zmq.PUSH)
        self._push.setsockopt(zmq.SNDHWM, 0)
        self._push.bind(endpoint)
        self.per_message, self.rng, self.enabled, self.injected = per_message, random.Random(seed), True, 0
        self.corrupt_frames: set[int] = set()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        self._pull.close(linger=0)
        self._push.close(linger=0)

    def _run(self) -> None:
        victim = 0
        while not self._closing.is_set():
            try:
                parts = self._pull.recv_multipart()
            except zmq.Again:
                continue
            self._push.send_multipart(self._corrupted(parts) if self.corrupt_frames else parts)
            if not self.enabled:
                continue
            for _ in range(self.per_message):
                mutated = self._mutated(parts, VICTIM_BASE + victim)
                if mutated is not None:
                    self._push.send_multipart(mutated)
                    self.injected += 1
                    victim += 1

    def _corrupted(self, parts: list[bytes]) -> list[bytes]:
        first = json.loads(parts[0]) if parts[0][:1] == b"{" else {}
        if first.get("htype") == "dimage-1.0" and first.get("frame") in self.corrupt_frames:
            return [parts[0], parts[1], corrupt_first_match(parts[2]), *parts[3:]]
        return parts

    def _mutated(self, parts: list[bytes], index: int) -> list[bytes] | None:
        if parts[0][:3] == b"\xd9\xd9\xf7":
            content = cbor2.loads(parts[0])
            if isinstance(content, cbor2.CBORTag):
                content = content.value
            if content.get("type") not in ("image", "start"):
                return None
            if content["type"] == "image":
                content = {**content, "image_id": index}
            return [mutate_v2(self.rng, content, cbor2.dumps(cbor2.CBORTag(55799, content)))]
        first = json.loads(parts[0])
        if first.get("htype") not in ("dimage-1.0", "dheader-1.0"):
            return None
        if first["htype"] == "dimage-1.0":
            parts = [json.dumps({**first, "frame": index}).encode(), *parts[1:]]
        return mutate_v1(self.rng, parts)


@contextmanager
def fuzzed_server(sim: EigerSimulator, data_root: Path, stream_format: str,
                  per_message: int = MUTATIONS_PER_IMAGE) -> Iterator[tuple]:
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    devices = server_devices(sim, data_root, StreamFormat=stream_format)
    devices[0]["devices"][0]["properties"]["StreamEndpoint"] = endpoint
    with device_server(devices, timeout_s=30) as ctx:
        peer = MutatingPeer(sim.stream_endpoint, endpoint, per_message, seed=len(stream_format))
        try:
            yield peer, ctx.get_device(DETECTOR), ctx.get_device(WRITER)
        finally:
            peer.close()


@pytest.mark.parametrize("stream_format", ["legacy", "cbor"])
def test_a_series_survives_mutated_messages_through_a_running_server(eiger_sim: EigerSimulator, data_root: Path,
                                                                    stream_format: str) -> None:
    with fuzzed_server(eiger_sim, data_root, stream_format) as (peer, detector, writer):
        configure(detector, writer, data_root, FRAMES)
        assert acquire(detector) == "Ready", detector.Status()
        assert peer.injected >= FRAMES * MUTATIONS_PER_IMAGE
        assert detector.State() == tango.DevState.ALARM, detector.Status()
        assert detector.frames_rejected + detector.late_messages >= peer.injected, detector.rejection_reasons
        assert "undecodable" not in json.loads(detector.rejection_reasons)
        assert detector.frames_received == FRAMES and detector.frames_missing == 0
        assert writer.frames_written == FRAMES and writer.State() != tango.DevState.FAULT, writer.Status()
        with h5py.File(writer.master_file) as f:
            stack = f["/entry/data/data"]
            for i in range(FRAMES):
                np.testing.assert_array_equal(stack[i], eiger_sim.frames.pixels(i), err_msg=f"frame {i}")
        peer.enabled = False
        assert acquire(detector) == "Ready", detector.Status()
        assert detector.State() == tango.DevState.ON, detector.Status()
        assert writer.frames_written == FRAMES


def test_frames_whose_chunks_do_not_decode_are_rejected_by_the_writer_and_named_in_both_statuses(
        eiger_sim: EigerSimulator, data_root: Path) -> None:
    """Issue 14 case 5 through a running server, with the receive thread checking headers only (issue 18):
    frames 5 and 17 arrive with a flipped LZ4 match offset. The writer's frame check rejects both
    (``corrupt_payload``), the 28 others are written pixel-equal, and both devices say what was not written."""
    with fuzzed_server(eiger_sim, data_root, "legacy", per_message=0) as (peer, detector, writer):
        peer.corrupt_frames = {5, 17}
        configure(detector, writer, data_root, FRAMES)
        assert acquire(detector) == "Ready", detector.Status()
        assert detector.frames_received == FRAMES
        assert writer.frames_written == FRAMES - 2 and writer.frames_rejected == 2
        assert writer.State() == tango.DevState.ALARM and "'corrupt_payload': 2" in writer.Status(), writer.Status()
        assert detector.State() == tango.DevState.ALARM
        assert "2 frames received but not written" in detector.Status(), detector.Status()
        with h5py.File(writer.master_file) as f:
            stack = f["/entry/data/data"]
            for i in set(range(FRAMES)) - peer.corrupt_frames:
                np.testing.assert_array_equal(stack[i], eiger_sim.frames.pixels(i), err_msg=f"frame {i}")
