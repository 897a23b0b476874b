"""Seeded mutations of every message kind, interleaved with good frames on a real ZMQ stream: the receive
thread never dies, every good frame arrives (and, for EIGER, is written) unchanged, every bad message is
counted. ``make test`` runs 2,000 mutations per protocol in batches; ``make fuzz`` 20,000
(``DETPIPE_FUZZ_CASES``). A failure names its protocol, batch and seed, which reproduce it exactly."""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zmq

from detpipe.pipeline.agipd.receiver import AgipdReceiver, BridgeSocket
from detpipe.pipeline.core.frame import Frame
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.saving_target import SavingParams
from detpipe.pipeline.core.series import EndOfSeries, EndReason, SeriesStart
from detpipe.pipeline.core.train import Train
from detpipe.pipeline.eiger.stream_receiver import StreamReceiver
from detpipe.pipeline.writers.nxmx_writer import NxmxWriter
from tests.fuzz.mutations import VICTIM_BASE, bump_id, mutate_bridge, mutate_v1, mutate_v2
from tests.pipeline.frames_for_writer_tests import read_stack
from tests.pipeline.karabo_messages import FIRST_TRAIN_ID, make_truth, module_sources, v1_0, v2_2
from tests.pipeline.stream_messages import (
    bslz4_chunk,
    pixels,
    v1_config,
    v1_end,
    v1_header,
    v1_image,
    v2_array,
    v2_end,
    v2_image,
    v2_message,
    v2_start,
)

CASES = int(os.environ.get("DETPIPE_FUZZ_CASES", "2000"))
BATCH = 100  # mutated messages per series
SHAPE = (16, 24)
IMAGES = [pixels(SHAPE, seed=i) for i in range(4)]
V2_DATA = [{"threshold_1": v2_array(image, "bslz4")} for image in IMAGES]


def batches() -> range:
    return range(max(1, CASES // BATCH))


def eiger_messages(protocol: str, series: int, rng: random.Random) -> tuple[list[list[bytes]], int]:
    """One series: header, then per mutated message a good frame before it, a last good frame, end.
    Victims are frames numbered far past the series (so a mutation that leaves one valid is still refused)
    or copies of the header; the good frames are 0 … goods - 1."""
    goods = BATCH + 1
    if protocol == "v1":
        header = v1_header(series, "basic", v1_config(SHAPE, nimages=goods, ntrigger=1))
        good = [v1_image(series, i, IMAGES[i % 4]) for i in range(goods)]
        victim = lambda k: header if rng.random() < 0.2 else v1_image(series, VICTIM_BASE + k, IMAGES[k % 4])  # noqa: E731
        mutate: Callable[[list[bytes]], list[bytes]] = lambda parts: mutate_v1(rng, parts)  # noqa: E731
        end = v1_end(series)
    else:
        start = v2_start(series, SHAPE, number_of_images=goods)
        header = [v2_message(start)]
        good = [[v2_message(v2_image(series, i, V2_DATA[i % 4]))] for i in range(goods)]
        contents = lambda k: start if rng.random() < 0.2 else v2_image(series, VICTIM_BASE + k, V2_DATA[k % 4])  # noqa: E731
        victim = lambda k: [contents(k)]  # noqa: E731
        mutate = lambda parts: [mutate_v2(rng, parts[0], v2_message(parts[0]))]  # noqa: E731
        end = [v2_message(v2_end(series))]
    messages = [header]
    for k in range(BATCH):
        messages.append(good[k])
        chosen = victim(k)
        if rng.random() < 0.05:  # the same message from another series: earlier (late) or foreign
            other = bump_id(rng, series)
            chosen = v1_image(other, 0, IMAGES[0]) if protocol == "v1" else [v2_image(other, 0, V2_DATA[0])]
        messages.append(mutate(chosen))
    messages += [good[-1], end]
    return messages, goods


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_eiger_stream_fuzz(push: tuple[zmq.Socket, str], tmp_path: Path, protocol: str) -> None:
    socket, endpoint = push
    receiver = StreamReceiver(endpoint)
    receiver.start()
    try:
        for batch in batches():
            seed, series = 1000 * batch + (protocol == "v2"), 10 + batch
            messages, goods = eiger_messages(protocol, series, random.Random(seed))
            outbox: FrameQueue = FrameQueue(4 * BATCH, FullPolicy.DROP)
            receiver.listen(series, outbox, None)
            for message in messages:
                socket.send_multipart(message)
            items = collect(outbox)
            where = f"{protocol} batch {batch} (seed {seed})"
            frames = [item for item in items if isinstance(item, Frame)]
            assert receiver.failure == "", where
            assert [f.index for f in frames] == list(range(goods)), where
            assert all(bytes(f.blob) == bslz4_chunk(IMAGES[f.index % 4]) for f in frames), where
            stats = receiver.stats
            assert stats.messages_received == len(messages), where
            assert stats.rejected_total + stats.late_messages >= BATCH, where
            assert "undecodable" not in stats.rejected, f"{where}: a check is missing for {stats.rejected}"
            assert stats.frames_missing == 0 and stats.frames_dropped_total == 0, where
            write_and_check(items, tmp_path / f"{protocol}_{batch}", goods)
            stats.reset()
    finally:
        receiver.close()


def collect(outbox: FrameQueue) -> list[SeriesStart | Frame | EndOfSeries]:
    items = []
    while not isinstance(item := outbox.get(timeout_s=30), EndOfSeries):
        items.append(item)
    return [*items, item]


def write_and_check(items: list, directory: Path, goods: int) -> None:
    """The series through the NXmx writer: every good frame reads back pixel for pixel."""
    writer = NxmxWriter(SavingParams(directory=directory, data_roots=(directory.parent,)))
    starts = [item for item in items if isinstance(item, SeriesStart)]
    assert len(starts) == 1
    writer.start_series(starts[0])
    for item in items:
        if isinstance(item, Frame):
            writer.process(item)
    writer.finish(items[-1])
    np.testing.assert_array_equal(read_stack(writer.master_path), np.stack([IMAGES[i % 4] for i in range(goods)]))


@pytest.mark.parametrize("protocol", ["2.2", "1.0"])
def test_bridge_fuzz(push: tuple[zmq.Socket, str], protocol: str) -> None:
    """One present module keeps a train at 256 KiB, so thousands of them take seconds."""
    encode = v2_2 if protocol == "2.2" else v1_0
    missing = range(1, 16)
    good_truths = [make_truth(raw=True, frames=1, train_id=FIRST_TRAIN_ID + i, missing=missing, seed=i)
                   for i in range(4)]
    socket, endpoint = push
    receiver = AgipdReceiver(endpoint, socket_type=BridgeSocket.PULL)
    receiver.start()
    try:
        for batch in batches():
            seed = 2000 * batch + (protocol == "1.0")
            rng = random.Random(seed)
            outbox: FrameQueue = FrameQueue(4 * BATCH, FullPolicy.DROP)
            receiver.listen(batch + 1, outbox)
            first_tid = FIRST_TRAIN_ID + 10 * BATCH * batch
            sent_good = []
            for k in range(BATCH):
                truth = good_truths[k % 4]
                tid = first_tid + 2 * k
                socket.send_multipart(encode(module_sources(dataclasses.replace(truth, train_id=tid))))
                sent_good.append((tid, truth))
                victim = good_truths[(k + 1) % 4]
                victim_tid = first_tid + 2 * k + 1
                socket.send_multipart(mutate_bridge(rng, encode(module_sources(
                    dataclasses.replace(victim, train_id=victim_tid)))))
            trains = collect_trains(receiver, outbox, 2 * BATCH)
            where = f"bridge {protocol} batch {batch} (seed {seed})"
            assert receiver.failure == "", where
            by_tid = {t.train_id: t for t in trains}
            for tid, truth in sent_good:
                assert tid in by_tid, f"{where}: good train {tid} lost"
                np.testing.assert_array_equal(by_tid[tid].data[:, 0], truth.data[:, 0], err_msg=where)
            stats = receiver.stats
            mutated_forwarded = len(trains) - len(sent_good)
            assert stats.messages_received == 2 * BATCH, where
            assert stats.rejected_total + mutated_forwarded >= BATCH, where
            assert "undecodable" not in stats.rejected, f"{where}: a check is missing for {stats.rejected}"
            stats.reset()
    finally:
        receiver.close()


def collect_trains(receiver: AgipdReceiver, outbox: FrameQueue, messages: int) -> list[Train]:
    """The trains forwarded once the receiver has read all ``messages``, then the run ended by Stop."""
    deadline = time.monotonic() + 60
    while receiver.stats.messages_received < messages and time.monotonic() < deadline:
        time.sleep(0.01)
    receiver.end_series(EndReason.STOP)
    items = []
    while not isinstance(item := outbox.get(timeout_s=30), EndOfSeries):
        items.append(item)
    return [item for item in items if isinstance(item, Train)]
