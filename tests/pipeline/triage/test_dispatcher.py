"""The triage dispatcher with real worker processes: order kept, results attached, nothing lost."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest

from detpipe.pipeline.core.frame import Frame
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.series import EndOfSeries, SeriesStart
from detpipe.pipeline.core.stage import Item
from detpipe.pipeline.core.train import Product
from detpipe.pipeline.triage.dispatcher import TriageDispatcher
from detpipe.pipeline.triage.pool import TriagePool
from detpipe.pipeline.triage.setup import DetectorKind
from detpipe.simulators.sfx_frames import SfxFrames
from tests.pipeline.agipd_trains import make_train
from tests.pipeline.frames_for_writer_tests import config, frame, start
from tests.waiting import wait_until

WORKERS_START_S = 240.0
N_FRAMES = 12


@pytest.fixture(scope="module")
def sfx() -> SfxFrames:
    return SfxFrames("1M", seed=4, hit_fraction=0.5, peaks_per_hit=(20, 30))


@pytest.fixture
def dispatcher() -> Iterator[tuple[TriageDispatcher, FrameQueue[Item]]]:
    inbox: FrameQueue[Item] = FrameQueue(64, FullPolicy.DROP)
    outbox: FrameQueue[Item] = FrameQueue(64, FullPolicy.BLOCK)
    triage = TriageDispatcher(TriagePool(2), inbox)
    triage.start()
    try:
        wait_until(lambda: triage.pool.ready, bool, WORKERS_START_S, "triage workers ready")
        assert triage.pool.startup_s > 0  # what the hit finder's Status reports
        triage.prepare(DetectorKind.EIGER, outbox)
        yield triage, outbox
    finally:
        triage.close()


def series(sfx: SfxFrames, n: int = N_FRAMES) -> list[Item]:
    cfg = config(shape=sfx.shape, dtype="uint16", nimages=n, beam_center_x_px=sfx.beam_center[0],
                 beam_center_y_px=sfx.beam_center[1])
    return [start(1, cfg, pixel_mask=sfx.pixel_mask), *(frame(i, sfx.pixels(i)) for i in range(n)),
            EndOfSeries(1, frames_sent=n)]


def drain(outbox: FrameQueue[Item], count: int) -> list[Item]:
    return [outbox.get(timeout_s=60) for _ in range(count)]


def test_frames_leave_in_arrival_order_with_their_triage_and_hits_match_the_truth(dispatcher, sfx) -> None:
    triage, outbox = dispatcher
    for item in series(sfx):
        triage.inbox.put(item)
    out = drain(outbox, N_FRAMES + 2)
    assert isinstance(out[0], SeriesStart)
    # the parameters the series was triaged with, saturation_value 0 ("the detector's") resolved from its header
    assert out[0].config.saturation_value and triage.params.saturation_value == 0
    assert out[0].triage == dataclasses.replace(triage.params, saturation_value=out[0].config.saturation_value)
    frames = out[1:-1]
    assert [f.index for f in frames] == list(range(N_FRAMES)) and isinstance(out[-1], EndOfSeries)
    assert all(isinstance(f, Frame) and f.triage is not None for f in frames)
    assert [f.triage.is_hit for f in frames] == [sfx.truth(i).is_hit for i in range(N_FRAMES)]
    assert triage.stats.frames_triaged == N_FRAMES and triage.stats.not_triaged_total == 0
    assert triage.stats.hits == sum(sfx.truth(i).is_hit for i in range(N_FRAMES))
    last_true_hit = max(i for i in range(N_FRAMES) if sfx.truth(i).is_hit)
    assert triage.last_hit is not None and triage.last_hit.item.index == last_true_hit
    assert triage.last_hit.number == triage.stats.hits
    assert not triage.in_series and triage.backlog == 0


def test_raw_agipd_trains_pass_untriaged_and_are_counted_uncorrected(dispatcher) -> None:
    triage, outbox = dispatcher
    triage.prepare(DetectorKind.AGIPD, outbox)
    train = make_train(0, product=Product.RAW, frames=4)
    for item in (SeriesStart(1), train, EndOfSeries(1)):
        triage.inbox.put(item)
    out = drain(outbox, 3)
    assert out[1].triage == (None,) * 4 and np.shares_memory(out[1].data, train.data)
    assert triage.stats.frames_not_triaged == {"uncorrected": 4}


def test_a_killed_worker_costs_only_its_images_which_are_counted(dispatcher, sfx) -> None:
    triage, outbox = dispatcher
    items = series(sfx, 6)
    triage.inbox.put(items[0])
    triage.inbox.put(items[1])
    wait_until(lambda: triage.pool.in_flight, lambda n: n >= 1, 30, "a job in flight")
    for process in triage.pool._processes:  # noqa: SLF001 - the fault under test
        process.kill()
    for item in items[2:]:
        triage.inbox.put(item)
    out = drain(outbox, len(items))
    assert [f.index for f in out[1:-1]] == list(range(6))
    stats = triage.stats
    assert stats.frames_triaged + stats.not_triaged_total == 6 and stats.frames_not_triaged["worker_died"] >= 1
    wait_until(lambda: triage.pool.workers_alive, lambda n: n == 2, 60, "workers restarted")


def test_the_mask_read_at_prepare_or_the_last_headers_builds_the_series_geometry_in_advance(sfx) -> None:
    """The detector reads the pixel mask over REST at Prepare and the workers build the geometry then; the
    series header brings the same mask (another dtype): the setup is the same, so nothing is built again when
    the first frames wait."""
    inbox: FrameQueue[Item] = FrameQueue(4, FullPolicy.DROP)
    triage = TriageDispatcher(TriagePool(1), inbox)  # not started: only its setups are compared
    try:
        cfg = series(sfx)[0].config
        triage.expect(cfg, DetectorKind.EIGER, pixel_mask=sfx.pixel_mask.astype(np.uint32))
        at_prepare = triage._preload  # noqa: SLF001 - what the workers build at Prepare
        at_start = triage._setup_for(start(1, cfg, pixel_mask=sfx.pixel_mask.astype(np.int64)))  # noqa: SLF001
        assert at_prepare is not None and at_start is not None
        assert at_prepare.key() == at_start.key()
        other = sfx.pixel_mask.copy()
        other[0, 0] ^= 1
        with_other = triage._setup_for(start(2, cfg, pixel_mask=other))  # noqa: SLF001
        assert with_other is not None and with_other.key() != at_prepare.key()
        # Without a mask at Prepare (the header brings it: header_detail all), the last header's stands in.
        triage.expect(cfg, DetectorKind.EIGER)
        assert triage._preload is not None and triage._preload.key() == with_other.key()  # noqa: SLF001
    finally:
        triage.pool.close()
