"""Whole Stream V2 (CBOR) series received on a PULL socket and decoded from the DECTRIS Stream V2 documentation."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import cbor2
import numpy as np
import pytest

from detpipe.simulators import EigerSimulator
from tests.simulators.eiger_sim_client import SimplonClient, StreamReceiver
from tests.simulators.eiger_sim_wire import decode_v2_array, loads_v2


def is_v2_end(message: list[bytes]) -> bool:
    return loads_v2(message[0])["type"] == "end"


def run_series(rest: SimplonClient, receiver: StreamReceiver) -> list[dict]:
    rest.command("initialize")
    rest.command("arm")
    rest.command("trigger")
    rest.command("disarm")
    messages = receiver.receive_until(is_v2_end)
    assert all(len(parts) == 1 for parts in messages)
    assert all(parts[0][:3] == b"\xd9\xd9\xf7" for parts in messages)
    return [loads_v2(parts[0]) for parts in messages]


@pytest.mark.parametrize("compression", ["bslz4", "lz4", "none"])
def test_a_v2_series_decodes_to_the_simulated_frames(
    sim: EigerSimulator, rest: SimplonClient, receiver: StreamReceiver, compression: str
) -> None:
    rest.configure(nimages=3, frame_time=0.001, compression=compression)
    rest.enable_stream(fmt="cbor")

    start, *images, end = run_series(rest, receiver)

    assert next(iter(start)) == "type" and start["type"] == "start"
    assert end == {"type": "end", "series_id": 1, "series_unique_id": start["series_unique_id"]}
    assert [image["image_id"] for image in images] == [0, 1, 2]
    for i, image in enumerate(images):
        assert next(iter(image)) == "type" and image["type"] == "image"
        assert image["series_id"] == 1 and image["series_unique_id"] == start["series_unique_id"]
        array = image["data"]["threshold_1"]
        assert array.value[0] == [512, 1028] and array.value[1].tag == 69
        pixels, blob, algorithm = decode_v2_array(array)
        assert algorithm == (None if compression == "none" else compression)
        np.testing.assert_array_equal(pixels, sim.frames.pixels(i))
        assert blob == sim.encoded_blob(i)


def test_start_message_describes_the_series(rest: SimplonClient, receiver: StreamReceiver) -> None:
    rest.configure(nimages=2, ntrigger=1, count_time=0.002, frame_time=0.003, incident_energy=10000.0)
    rest.enable_stream(fmt="cbor", header_detail="basic")
    rest.put("stream", "config/header_appendix", '{"run": 17}')
    start = run_series(rest, receiver)[0]
    assert start["series_id"] == 1 and len(start["series_unique_id"]) == 26
    assert isinstance(start["arm_date"], datetime) and start["arm_date"].utcoffset() == timedelta(0)
    assert start["channels"] == ["threshold_1"]
    assert start["image_size_x"] == 1028 and start["image_size_y"] == 512 and start["image_dtype"] == "uint16"
    assert start["number_of_images"] == 2
    assert start["count_time"] == pytest.approx(0.002) and start["frame_time"] == pytest.approx(0.003)
    assert start["incident_energy"] == 10000.0 and start["incident_wavelength"] == pytest.approx(1.239842)
    assert start["threshold_energy"] == {"threshold_1": 5000.0}
    assert start["pixel_size_x"] == 75e-6 and start["sensor_material"] == "Si"
    assert start["saturation_value"] == 2**16 - 2
    assert start["detector_description"] == "Dectris EIGER2 Si 500K"
    assert set(start["goniometer"]) == {"chi", "kappa", "omega", "phi", "two_theta"}
    assert start["user_data"] == {"run": 17}
    assert "pixel_mask" not in start and "flatfield" not in start


def test_start_message_with_header_detail_all_carries_mask_and_flatfield(
    sim: EigerSimulator, rest: SimplonClient, receiver: StreamReceiver
) -> None:
    rest.configure(nimages=1, frame_time=0.001)
    rest.enable_stream(fmt="cbor", header_detail="all")
    start = run_series(rest, receiver)[0]
    mask, _, _ = decode_v2_array(start["pixel_mask"]["threshold_1"])
    np.testing.assert_array_equal(mask, sim.frames.pixel_mask)
    assert start["pixel_mask"]["threshold_1"].value[1].tag == 70
    flatfield, _, _ = decode_v2_array(start["flatfield"]["threshold_1"])
    assert flatfield.shape == (512, 1028) and flatfield.mean() == pytest.approx(1.0, abs=0.01)


def test_image_times_are_rationals_on_a_50_mhz_base_after_the_arm_date(
    rest: SimplonClient, receiver: StreamReceiver
) -> None:
    rest.configure(nimages=3, count_time=0.002, frame_time=0.004)
    rest.enable_stream(fmt="cbor")
    rest.put("stream", "config/image_appendix", "shot")
    start_message, *images, _ = run_series(rest, receiver)
    start_date = start_message["arm_date"]
    for image in images:
        assert image["series_date"] == start_date
        assert image["real_time"] == [100_000, 50_000_000]
        start, stop = image["start_time"], image["stop_time"]
        assert start[1] == stop[1] == 50_000_000 and stop[0] - start[0] == 100_000 and start[0] >= 0
        assert image["user_data"] == "shot"
    starts = [image["start_time"][0] for image in images]
    assert [b - a for a, b in zip(starts, starts[1:])] == [200_000, 200_000]


def test_v2_images_use_typed_array_tag_70_for_32_bit(
    rest: SimplonClient, receiver: StreamReceiver, sim: EigerSimulator
) -> None:
    rest.configure(nimages=1, count_time=0.2, frame_time=0.2 + 1e-7)
    rest.enable_stream(fmt="cbor")
    image = run_series(rest, receiver)[1]
    array = image["data"]["threshold_1"]
    assert array.value[1].tag == 70 and array.value[1].value.value[:2] == ["bslz4", 4]
    np.testing.assert_array_equal(decode_v2_array(array)[0], sim.frames.pixels(0))


def test_dates_are_tag_0_text(rest: SimplonClient, receiver: StreamReceiver) -> None:
    rest.configure(nimages=1, frame_time=0.001)
    rest.enable_stream(fmt="cbor")
    rest.command("initialize")
    rest.command("arm")
    rest.command("trigger")
    rest.command("disarm")
    start, image, _ = receiver.receive_until(is_v2_end)
    assert b"harm_date\xc0\x78" in start[0]  # key, tag 0, then a text string (major type 3, 1-byte length)
    assert b"kseries_date\xc0\x78" in image[0]


def test_default_cbor_hooks_still_load_every_message(rest: SimplonClient, receiver: StreamReceiver) -> None:
    rest.configure(nimages=1, frame_time=0.001)
    rest.enable_stream(fmt="cbor", header_detail="all")
    rest.command("initialize")
    rest.command("arm")
    rest.command("trigger")
    rest.command("disarm")
    for parts in receiver.receive_until(is_v2_end):
        assert isinstance(cbor2.loads(parts[0]), Mapping)  # cbor2 unwraps 55799 itself (into a frozendict)
