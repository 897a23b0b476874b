"""The live view through real device servers: the picture a client reads (``live_image`` and LImA's
``video_last_image``) is the simulator's last frame with gaps at 0, or the chosen AGIPD cell and module."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import tango

from detpipe.simulators import EigerSimulator
from detpipe.simulators.agipd_simulator import AgipdSimulator
from tests.integration.test_agipd_slice import agipd_server
from tests.integration.test_agipd_slice import run as run_agipd
from tests.integration.test_eiger_slice import acquire, configure
from tests.waiting import wait_until

FRAMES = 12


def video_image(detector: tango.DeviceProxy) -> tuple[int, np.ndarray]:
    """(frame number, pixels) of ``video_last_image``, decoded as a LImA client decodes it."""
    fmt, raw = detector.video_last_image
    assert fmt == "VIDEO_IMAGE"
    magic, version, mode, frame_number, width, height, endianness, header_size, _, _ = struct.unpack(
        "!IHHqiiHHHH", raw[:32])
    assert (magic, version, endianness) == (0x5644454F, 1, 0)
    dtype = {0: "<u1", 1: "<u2", 2: "<u4", 3: "<u8"}[mode]
    return frame_number, np.frombuffer(raw[header_size:], dtype).reshape(height, width)


def test_the_eiger_live_image_is_the_last_frame_with_gaps_at_zero_also_as_a_lima_video_image(
        detpipe_server, eiger_sim: EigerSimulator, data_root: Path) -> None:
    detector, writer = detpipe_server
    detector.live_image_max_rate = 20.0
    configure(detector, writer, data_root, FRAMES)

    assert acquire(detector) == "Ready", detector.Status()

    wait_until(lambda: detector.live_image_frame, lambda n: n == FRAMES - 1, 10.0, "live_image_frame")
    frames = eiger_sim.frames
    expected = np.where(frames.pixel_mask != 0, 0, frames.pixels(FRAMES - 1))
    np.testing.assert_array_equal(detector.live_image, expected)
    np.testing.assert_array_equal(detector.live_image_mask, frames.pixel_mask != 0)
    frame_number, pixels = video_image(detector)
    assert frame_number == FRAMES - 1
    np.testing.assert_array_equal(pixels, expected)
    assert 1 <= detector.video_last_image_counter <= FRAMES


def test_the_agipd_live_image_is_the_chosen_cell_and_module_of_the_last_train(data_root: Path) -> None:
    with AgipdSimulator(cells=4, product="raw", paced=False, seed=6) as sim:
        with agipd_server(sim, data_root, LiveViewRate=20.0) as (detector, _):
            detector.live_view_cell, detector.live_view_module = 2, 7
            assert run_agipd(detector, 3) == "Ready", detector.Status()

            last = sim.train(2)
            wait_until(lambda: detector.live_image_frame, lambda n: n == last.train_id, 10.0, "live_image_frame")
            np.testing.assert_array_equal(detector.live_image, last.data[2, 7, 0].astype(np.float32))
            assert not detector.live_image_mask.any()

            detector.live_view_module = -1  # all 16 modules stacked, from the next picture on
            detector.live_image_max_rate = 0.0
            assert detector.live_image_max_rate == 0.0
            assert run_agipd(detector, 1, run_number=2) == "Ready", detector.Status()
            assert detector.live_image_frame == last.train_id  # off: no new picture
            detector.live_image_max_rate = 20.0
            newest = sim.train(3)
            wait_until(lambda: detector.live_image_frame, lambda n: n == newest.train_id, 10.0, "live_image_frame")
            stacked = newest.data[2, :, 0].astype(np.float32).reshape(16 * 512, 128)
            np.testing.assert_array_equal(detector.live_image, stacked)


@pytest.mark.parametrize("detpipe_server", [{"LiveViewRate": 0.0}], indirect=True)
def test_a_live_view_switched_off_by_property_makes_no_picture(detpipe_server, data_root: Path) -> None:
    detector, writer = detpipe_server
    configure(detector, writer, data_root, 3)

    assert acquire(detector) == "Ready", detector.Status()

    assert detector.live_image_max_rate == 0.0
    assert detector.video_last_image_counter == 0 and detector.live_image_frame == -1
    assert video_image(detector)[0] == -1
