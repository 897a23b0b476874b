"""The live view engine: pictures equal the simulators' pixels with gaps at 0 (NaN for floats), LImA's
VIDEO_IMAGE header parses back, the rate limit holds and the stream never waits for the view."""

from __future__ import annotations

import struct
import threading
import time
from typing import Any

import numpy as np
import pytest

from detpipe.pipeline.core.frame import Encoding, Frame
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.live_view import LiveView, TrainView, frame_picture
from detpipe.pipeline.core.receiver_stats import ReceiverStats
from detpipe.pipeline.core.series import SeriesStart
from detpipe.pipeline.core.train import AGIPD_MODULES, MODULE_SHAPE, Product, Train
from detpipe.pipeline.core.video_image import VIDEO_HEADER_FORMAT, VideoMode, encode_video_image
from detpipe.pipeline.eiger.frame_forwarder import FrameForwarder
from detpipe.simulators import bslz4_chunk
from detpipe.simulators.sfx_frames import SfxFrames
from tests.waiting import wait_until

SERIES = 4


@pytest.fixture(scope="module")
def frames() -> SfxFrames:
    return SfxFrames("1M", seed=5, hit_fraction=1.0)


def eiger_frame(frames: SfxFrames, index: int) -> Frame:
    return Frame(SERIES, index, frames.shape, frames.dtype, Encoding.BSLZ4, bslz4_chunk(frames.pixels(index)), 0.0)


def truth_with_gaps_at_zero(frames: SfxFrames, index: int) -> np.ndarray:
    return np.where(frames.pixel_mask != 0, 0, frames.pixels(index))


def test_an_eiger_picture_is_the_simulators_frame_with_gap_and_masked_pixels_at_zero(frames: SfxFrames) -> None:
    frame = eiger_frame(frames, 3)
    pixels, mask = frame_picture(frame, SeriesStart(SERIES, pixel_mask=frames.pixel_mask))

    np.testing.assert_array_equal(pixels, truth_with_gaps_at_zero(frames, 3))
    np.testing.assert_array_equal(mask, frames.pixel_mask != 0)
    assert mask.dtype == np.uint8 and mask.sum() > 0
    assert pixels.max() < frames.masked_value  # the gap marker never reaches the picture


def test_without_a_header_mask_the_detectors_gap_marker_still_becomes_zero(frames: SfxFrames) -> None:
    other_series = SeriesStart(SERIES + 1, pixel_mask=np.ones(frames.shape, np.uint32))  # not this frame's series
    pixels, mask = frame_picture(eiger_frame(frames, 1), other_series)

    marked = frames.pixels(1) == frames.masked_value
    np.testing.assert_array_equal(pixels, np.where(marked, 0, frames.pixels(1)))
    np.testing.assert_array_equal(mask, marked)


def test_the_live_view_shows_the_newest_frame_it_was_handed(frames: SfxFrames) -> None:
    start = SeriesStart(SERIES, pixel_mask=frames.pixel_mask)
    newest: list[Frame] = [eiger_frame(frames, 0)]
    view = LiveView(lambda: newest[-1], lambda f: frame_picture(f, start), max_rate_hz=50.0)
    view.start()
    try:
        wait_until(lambda: view.picture, lambda p: p is not None and p.frame_number == 0)
        newest.append(eiger_frame(frames, 2))
        picture = wait_until(lambda: view.picture, lambda p: p is not None and p.frame_number == 2)
    finally:
        view.close()
    np.testing.assert_array_equal(picture.pixels, truth_with_gaps_at_zero(frames, 2))
    assert picture.counter == view.stats.pictures == 2  # an unchanged item is not decoded again


@pytest.mark.parametrize(("dtype", "mode"), [(np.uint8, VideoMode.Y8), (np.uint16, VideoMode.Y16),
                                             (np.uint32, VideoMode.Y32)])
def test_the_video_image_header_parses_back_with_limas_struct_layout(dtype: type, mode: VideoMode) -> None:
    pixels = np.arange(3 * 5, dtype=dtype).reshape(3, 5)
    raw = encode_video_image(pixels, frame_number=41)

    header_bytes = struct.calcsize(VIDEO_HEADER_FORMAT)
    magic, version, image_mode, frame_number, width, height, endianness, header_size, pad0, pad1 = struct.unpack(
        "!IHHqiiHHHH", raw[:header_bytes])
    assert (magic, version, image_mode, frame_number) == (0x5644454F, 1, mode, 41)
    assert (width, height, endianness, header_size, pad0, pad1) == (5, 3, 0, 32, 0, 0)
    np.testing.assert_array_equal(np.frombuffer(raw[header_size:], dtype=np.dtype(dtype).newbyteorder("<"))
                                  .reshape(height, width), pixels)


def test_a_float_picture_goes_as_y32_counts_with_nan_and_negatives_at_zero() -> None:
    pixels = np.array([[1.4, np.nan], [-3.0, 2.6]], dtype=np.float32)
    raw = encode_video_image(pixels, frame_number=7)

    assert struct.unpack("!IHH", raw[:8])[2] == VideoMode.Y32
    np.testing.assert_array_equal(np.frombuffer(raw[32:], "<u4"), [1, 0, 0, 3])


def test_the_rate_limit_holds_while_items_arrive_much_faster() -> None:
    rate_hz, items = 10.0, [object()]
    view = LiveView(lambda: items[-1], lambda _: (np.zeros((1, 1)), np.zeros((1, 1), np.uint8)),
                    max_rate_hz=rate_hz, frame_number=lambda _: 0)
    t0 = time.monotonic()
    view.start()
    handed = 0
    while time.monotonic() - t0 < 0.6:
        items.append(object())  # a new item every ~1 ms: 60x the rate
        handed += 1
        time.sleep(0.001)
    pictures, elapsed = view.stats.pictures, time.monotonic() - t0
    view.close()
    assert handed > 5 * rate_hz * elapsed
    assert 1 <= pictures <= rate_hz * elapsed + 1


def test_a_live_view_at_rate_zero_is_off_and_a_negative_rate_is_refused() -> None:
    view = LiveView(lambda: object(), lambda _: (np.zeros((1, 1)), np.zeros((1, 1), np.uint8)), max_rate_hz=0.0,
                    frame_number=lambda _: 0)
    view.start()
    with pytest.raises(ValueError, match=">= 0"):
        view.max_rate_hz = -1.0
    view.max_rate_hz = 100.0
    wait_until(lambda: view.stats.pictures, lambda n: n > 0)
    view.max_rate_hz = 0.0
    time.sleep(0.05)  # let a render already begun finish
    off_at = view.stats.pictures
    time.sleep(0.2)
    view.close()
    assert view.stats.pictures == off_at


def test_the_stream_forwards_every_frame_while_the_live_view_is_stuck_decoding(frames: SfxFrames) -> None:
    outbox: FrameQueue[Any] = FrameQueue(64, FullPolicy.DROP)
    forwarder = FrameForwarder(ReceiverStats(), lambda reason, detail: None, lambda end: None)
    release, rendering = threading.Event(), threading.Event()

    def stuck_render(frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        rendering.set()
        release.wait(10.0)
        return frame_picture(frame, None)

    view = LiveView(lambda: forwarder.latest, stuck_render, max_rate_hz=100.0)
    view.start()
    try:
        forwarder.forward(outbox, eiger_frame(frames, 0))
        assert rendering.wait(10.0)
        for i in range(1, 20):
            forwarder.forward(outbox, eiger_frame(frames, i))
        forwarded = [outbox.get(timeout_s=10.0).index for _ in range(20)]
        assert forwarded == list(range(20))
        assert forwarder.latest is not None and forwarder.latest.index == 19
        assert view.stats.pictures == 0  # still stuck on frame 0
    finally:
        release.set()
        view.close()


def agipd_train(product: Product) -> Train:
    rng = np.random.default_rng(2)
    frames = 3
    if product is Product.RAW:
        data = rng.integers(0, 8000, (frames, AGIPD_MODULES, 2, *MODULE_SHAPE), dtype=np.uint16)
        mask = None
    else:
        data = rng.normal(1.0, 0.5, (frames, AGIPD_MODULES, *MODULE_SHAPE)).astype(np.float32)
        mask = np.zeros((frames, AGIPD_MODULES, *MODULE_SHAPE), np.uint32)
        mask[1, 5, 10:20, 7] = 4
    present = tuple(m != 9 for m in range(AGIPD_MODULES))
    return Train(1, 0, 1000, product, data, np.arange(frames, dtype=np.uint16), np.arange(frames, dtype=np.uint64),
                 present, 0.0, 0.0, mask=mask)


def test_an_agipd_module_view_is_that_cell_and_modules_data() -> None:
    train = agipd_train(Product.RAW)
    pixels, mask = TrainView(cell=2, module=4).render(train)

    np.testing.assert_array_equal(pixels, train.data[2, 4, 0].astype(np.float32))  # analog ADU
    assert not mask.any()


def test_the_stacked_agipd_view_has_nan_in_masked_pixels_and_missing_modules() -> None:
    train = agipd_train(Product.CORRECTED)
    pixels, mask = TrainView(cell=1, module=-1).render(train)

    rows = MODULE_SHAPE[0]
    assert pixels.shape == (AGIPD_MODULES * rows, MODULE_SHAPE[1])
    expected_mask = np.zeros((AGIPD_MODULES, *MODULE_SHAPE), bool)
    expected_mask[5, 10:20, 7] = True
    expected_mask[9] = True
    expected = np.where(expected_mask, np.nan, train.data[1]).reshape(pixels.shape)
    np.testing.assert_array_equal(pixels, expected)  # NaN where expected: assert_array_equal matches NaNs
    np.testing.assert_array_equal(mask, expected_mask.reshape(pixels.shape))
    assert TrainView(cell=99, module=0).render(train)[0][0, 0] == train.data[2, 0, 0, 0]  # beyond: the last cell
