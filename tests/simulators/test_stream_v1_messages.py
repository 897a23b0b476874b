"""Whole Stream V1 series received on a PULL socket and decoded from the DECTRIS Stream V1 documentation."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from detpipe.simulators import EigerSimulator
from tests.simulators.eiger_sim_client import SimplonClient, StreamReceiver
from tests.simulators.eiger_sim_wire import decode_v1_image

HEADER_PARTS = {"none": 1, "basic": 2, "all": 8}


def is_v1_end(message: list[bytes]) -> bool:
    return json.loads(message[0]).get("htype") == "dseries_end-1.0"


def run_series(rest: SimplonClient, receiver: StreamReceiver, *, ntrigger: int = 1) -> list[list[bytes]]:
    rest.command("initialize")
    rest.command("arm")
    for _ in range(ntrigger):
        rest.command("trigger")
    rest.command("disarm")
    return receiver.receive_until(is_v1_end)


@pytest.mark.parametrize("compression", ["bslz4", "lz4"])
@pytest.mark.parametrize("header_detail", ["none", "basic", "all"])
def test_a_v1_series_decodes_to_the_simulated_frames(
    sim: EigerSimulator, rest: SimplonClient, receiver: StreamReceiver, header_detail: str, compression: str
) -> None:
    rest.configure(nimages=3, frame_time=0.001, compression=compression)
    rest.enable_stream(fmt="legacy", header_detail=header_detail)

    header, *images, end = run_series(rest, receiver)

    assert len(header) == HEADER_PARTS[header_detail]
    assert json.loads(header[0]) == {"htype": "dheader-1.0", "series": 1, "header_detail": header_detail}
    assert json.loads(end[0]) == {"htype": "dseries_end-1.0", "series": 1} and len(end) == 1
    assert len(images) == 3 and sim.frames_sent == 3
    for i, parts in enumerate(images):
        assert len(parts) == 4
        assert json.loads(parts[0]) == {
            "htype": "dimage-1.0", "series": 1, "frame": i, "hash": hashlib.md5(parts[2]).hexdigest()
        }
        descriptor, pixels = decode_v1_image(parts)
        assert descriptor["shape"] == [1028, 512] and descriptor["type"] == "uint16"
        assert descriptor["encoding"] == ("bs16-lz4<" if compression == "bslz4" else "lz4<")
        np.testing.assert_array_equal(pixels, sim.frames.pixels(i))
        assert parts[2] == sim.encoded_blob(i)


def test_basic_header_carries_the_detector_config_at_arm(rest: SimplonClient, receiver: StreamReceiver) -> None:
    rest.configure(nimages=1, frame_time=0.001, photon_energy=9000.0, beam_center_x=500.5)
    rest.enable_stream(header_detail="basic")
    header = run_series(rest, receiver)[0]
    config = json.loads(header[1])
    assert config["photon_energy"] == 9000.0 and config["beam_center_x"] == 500.5
    assert config["wavelength"] == pytest.approx(12398.42 / 9000.0)
    assert config["x_pixels_in_detector"] == 1028 and config["y_pixels_in_detector"] == 512
    assert config["bit_depth_image"] == 16 and config["nimages"] == 1
    identity = {"count_time", "frame_time", "description", "detector_number", "sensor_thickness", "software_version"}
    assert identity <= set(config)


def test_all_header_carries_full_size_flatfield_mask_and_countrate_table(
    sim: EigerSimulator, rest: SimplonClient, receiver: StreamReceiver
) -> None:
    rest.configure(nimages=1, frame_time=0.001)
    rest.enable_stream(header_detail="all")
    header = run_series(rest, receiver)[0]
    flat, flat_blob, mask, mask_blob, table, table_blob = header[2:8]
    assert json.loads(flat) == {"htype": "dflatfield-1.0", "shape": [1028, 512], "type": "float32"}
    assert np.frombuffer(flat_blob, "<f4").reshape(512, 1028).mean() == pytest.approx(1.0, abs=0.01)
    assert json.loads(mask) == {"htype": "dpixelmask-1.0", "shape": [1028, 512], "type": "uint32"}
    np.testing.assert_array_equal(np.frombuffer(mask_blob, "<u4").reshape(512, 1028), sim.frames.pixel_mask)
    table_header = json.loads(table)
    assert table_header["htype"] == "dcountrate_table-1.0" and table_header["shape"] == [2, 1001]
    assert len(table_blob) == 2 * 1001 * 4


def test_appendices_add_one_part_to_header_and_images(rest: SimplonClient, receiver: StreamReceiver) -> None:
    rest.configure(nimages=2, frame_time=0.001)
    rest.enable_stream(header_detail="basic")
    rest.put("stream", "config/header_appendix", '{"sample": "lysozyme"}')
    rest.put("stream", "config/image_appendix", "beam on")
    header, *images, _ = run_series(rest, receiver)
    assert len(header) == 3 and json.loads(header[2]) == {"sample": "lysozyme"}
    assert all(len(parts) == 5 and parts[4] == b"beam on" for parts in images)


def test_frame_numbers_run_on_across_triggers(
    sim: EigerSimulator, rest: SimplonClient, receiver: StreamReceiver
) -> None:
    rest.configure(nimages=2, ntrigger=3, frame_time=0.001)
    rest.enable_stream(header_detail="none")
    _, *images, _ = run_series(rest, receiver, ntrigger=3)
    assert [json.loads(parts[0])["frame"] for parts in images] == list(range(6))
    for i, parts in enumerate(images):
        np.testing.assert_array_equal(decode_v1_image(parts)[1], sim.frames.pixels(i))


def test_dconfig_times_are_detector_clock_ns_one_frame_time_apart(
    rest: SimplonClient, receiver: StreamReceiver
) -> None:
    rest.configure(nimages=3, count_time=0.002, frame_time=0.003)
    rest.enable_stream(header_detail="none")
    _, *images, _ = run_series(rest, receiver)
    times = [json.loads(parts[3]) for parts in images]
    assert all(t["htype"] == "dconfig-1.0" and t["real_time"] == 2_000_000 for t in times)
    assert all(t["stop_time"] - t["start_time"] == 2_000_000 for t in times)
    assert [b["start_time"] - a["start_time"] for a, b in zip(times, times[1:])] == [3_000_000, 3_000_000]


def test_long_exposures_switch_the_stream_to_32_bit(
    sim: EigerSimulator, rest: SimplonClient, receiver: StreamReceiver
) -> None:
    rest.configure(nimages=1, count_time=0.1, frame_time=0.1 + 1e-7)
    rest.enable_stream(header_detail="none")
    image = run_series(rest, receiver)[1]
    descriptor, pixels = decode_v1_image(image)
    assert descriptor["type"] == "uint32" and descriptor["encoding"] == "bs32-lz4<"
    assert pixels.max() == 2**32 - 1  # dead pixels carry the mask marker
    np.testing.assert_array_equal(pixels, sim.frames.pixels(0))


def test_a_disabled_stream_sends_nothing(sim: EigerSimulator, rest: SimplonClient, receiver: StreamReceiver) -> None:
    rest.configure(nimages=2, frame_time=0.001)
    rest.command("initialize")
    rest.command("arm")
    rest.command("trigger")
    rest.command("disarm")
    assert receiver.receive(timeout_s=0.2) is None
    assert sim.frames_sent == 0
