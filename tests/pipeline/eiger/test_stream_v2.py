"""Stream V2 messages (DECTRIS Stream V2 docs): CBOR start/image/end built by hand, with real compressed blobs."""

from __future__ import annotations

import cbor2
import numpy as np
import pytest

from detpipe.pipeline.core.chunk_framing import decode_chunk_pixels
from detpipe.pipeline.core.errors import FrameRejected
from detpipe.pipeline.core.frame import Encoding
from detpipe.pipeline.core.series import EndOfSeries, EndReason
from detpipe.pipeline.eiger.header import PLACEHOLDER_DTYPE
from detpipe.pipeline.eiger.stream_v2 import _tag_hook, decode_v2
from tests.pipeline.stream_messages import (
    bslz4_chunk,
    lz4_chunk,
    pixels,
    v2_array,
    v2_end,
    v2_image,
    v2_message,
    v2_start,
)

SHAPE = (64, 96)  # dims [height, width] on the wire


def rejection(message: bytes, **kwargs) -> str:
    with pytest.raises(FrameRejected) as err:
        decode_v2(message, 1.0, **kwargs)
    return err.value.reason


def compressed_array(image: np.ndarray, algorithm: str, modifier: int, blob: bytes) -> cbor2.CBORTag:
    typed = cbor2.CBORTag({1: 64, 2: 69, 4: 70}[image.itemsize], cbor2.CBORTag(56500, [algorithm, modifier, blob]))
    return cbor2.CBORTag(40, [list(image.shape), typed])


# --- start ---------------------------------------------------------------------------------------------


def test_start_maps_to_detector_config():
    start = decode_v2(v2_message(v2_start(9, SHAPE, "uint32")), 5.0)
    config = start.config
    assert (start.series_id, start.unique_id, start.received_s) == (9, "01HQ8Z6M3J5K7N9P0R2S4T6V8W", 5.0)
    assert start.header_detail == "basic" and start.appendix == {"sample": "lysozyme"}
    assert config.shape == (64, 96) and config.dtype == np.dtype("uint32")
    assert (config.nimages, config.ntrigger) == (20, 1)
    assert (config.count_time_s, config.frame_time_s) == (0.0099999, 0.01)
    assert (config.photon_energy_ev, config.wavelength_a) == (12400.0, 0.99987)
    assert (config.beam_center_x_px, config.beam_center_y_px) == (512.5, 530.25)
    assert (config.x_pixel_size_m, config.y_pixel_size_m) == (7.5e-05, 7.5e-05)
    assert (config.sensor_material, config.sensor_thickness_m) == ("Si", 0.00045)
    assert (config.description, config.detector_number) == ("Dectris EIGER2 Si 16M", "E-32-0123")
    assert config.saturation_value == 21517
    assert config.header["goniometer"] == {"omega": {"start": 0.0, "increment": 0.1}}
    assert config.header["arm_date"] == "2024-03-01T10:00:00.123000+01:00"
    assert start.pixel_mask is None and start.flatfield is None


def test_start_distance_is_the_beam_axis_component_of_the_detector_translation():
    """Issue 15: ``detector_translation`` [x, y, z] is the only distance V2 sends; without it in the config the
    NXmx master had no distance and no depends_on chain, and DIALS put the detector at z = 0."""
    start = decode_v2(v2_message(v2_start(9, SHAPE, detector_translation=[0.001, -0.002, 0.2])), 5.0)
    assert start.config.detector_distance_m == 0.2
    assert start.config.header["detector_translation"] == [0.001, -0.002, 0.2]


@pytest.mark.parametrize("translation", [None, [0.0, 0.2], ["a", 0, 0.2], [0.0, 0.0, float("nan")], [0, 0, 1e9]],
                         ids=["absent", "two_values", "text", "nan", "beyond_range"])
def test_a_detector_translation_that_is_no_position_gives_no_distance(translation):
    start = v2_start(9, SHAPE, detector_translation=translation)
    if translation is None:
        del start["detector_translation"]
    assert decode_v2(v2_message(start), 5.0).config.detector_distance_m is None


def test_start_without_image_dtype_gets_the_placeholder_dtype():
    """Firmware before 2023-09 sends no image_dtype; frames carry their own dtype."""
    start = decode_v2(v2_message(v2_start(9, SHAPE, image_dtype=False)), 5.0)
    assert start.config.dtype == PLACEHOLDER_DTYPE and "image_dtype" not in start.config.header


def test_start_calibration_comes_from_the_first_channel_and_stays_out_of_the_header():
    rng = np.random.default_rng(4)
    masks = {name: rng.integers(0, 2, SHAPE).astype("<u4") for name in ("threshold_1", "threshold_2")}
    flats = {name: rng.uniform(0.9, 1.1, SHAPE).astype("<f4") for name in ("threshold_1", "threshold_2")}
    message = v2_start(
        9, SHAPE, channels=("threshold_1", "threshold_2"), calibration={"pixel_mask": masks, "flatfield": flats}
    )
    start = decode_v2(v2_message(message), 5.0)
    assert start.header_detail == "all"
    np.testing.assert_array_equal(start.pixel_mask, masks["threshold_1"])
    np.testing.assert_array_equal(start.flatfield, flats["threshold_1"])
    assert not {"pixel_mask", "flatfield", "countrate_correction_lookup_table"} & start.config.header.keys()


def test_compressed_calibration_is_decoded():
    mask = np.zeros(SHAPE, "<u4")
    mask[10, 20] = 1
    start_map = v2_start(9, SHAPE)
    start_map["pixel_mask"] = {"threshold_1": v2_array(mask, "bslz4")}
    start = decode_v2(v2_message(start_map), 5.0)
    np.testing.assert_array_equal(start.pixel_mask, mask)


def test_malformed_calibration_is_treated_as_absent():
    start_map = v2_start(9, SHAPE)
    start_map["flatfield"] = {"threshold_1": cbor2.CBORTag(40, [[64, 96], cbor2.CBORTag(85, b"placeholder")])}
    assert decode_v2(v2_message(start_map), 5.0).flatfield is None


# --- images --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
@pytest.mark.parametrize(
    ("compression", "encoding"),
    [("bslz4", Encoding.BSLZ4), ("lz4", Encoding.LZ4), (None, Encoding.RAW)],
    ids=["bslz4", "lz4", "uncompressed"],
)
def test_image_blob_passes_through_and_decodes_to_its_pixels(compression, encoding, dtype):
    image = pixels(SHAPE, dtype)
    (frame,) = decode_v2(v2_message(v2_image(9, 4, {"threshold_1": v2_array(image, compression)})), 5.0)
    expected_blob = {"bslz4": bslz4_chunk, "lz4": lz4_chunk, None: lambda a: a.tobytes()}[compression](image)
    assert bytes(frame.blob) == expected_blob
    assert (frame.encoding, frame.shape, frame.dtype) == (encoding, SHAPE, np.dtype(dtype))
    np.testing.assert_array_equal(decode_chunk_pixels(frame.encoding, frame.blob, frame.shape, frame.dtype), image)


def test_image_with_three_channels_gives_one_frame_per_channel():
    images = {name: pixels(SHAPE, seed=i) for i, name in enumerate(["threshold_1", "threshold_2", "difference"])}
    data = {name: v2_array(image, "bslz4") for name, image in images.items()}
    frames = decode_v2(v2_message(v2_image(9, 4, data)), 5.0)
    assert [frame.channel for frame in frames] == list(images)
    for frame in frames:
        assert (frame.series_id, frame.index) == (9, 4)
        pixels_back = decode_chunk_pixels(frame.encoding, frame.blob, frame.shape, frame.dtype)
        np.testing.assert_array_equal(pixels_back, images[frame.channel])


def test_image_times_are_rationals_in_seconds():
    (frame,) = decode_v2(v2_message(v2_image(9, 4, {"threshold_1": v2_array(pixels(SHAPE))})), 5.0)
    assert frame.start_time_s == pytest.approx(0.04)
    assert frame.stop_time_s == pytest.approx(0.0499999)
    assert frame.real_time_s == pytest.approx(0.0099999)
    assert frame.received_s == 5.0


def test_image_dims_are_height_then_width():
    image = pixels((3, 200))
    (frame,) = decode_v2(v2_message(v2_image(9, 0, {"threshold_1": v2_array(image, "bslz4")})), 5.0)
    assert frame.shape == (3, 200)


def test_compressed_blob_without_typed_array_tag_takes_the_start_image_dtype():
    image = pixels(SHAPE, "uint32")
    array = cbor2.CBORTag(40, [list(SHAPE), cbor2.CBORTag(56500, ["lz4", 0, lz4_chunk(image)])])
    message = v2_message(v2_image(9, 0, {"threshold_1": array}))
    (frame,) = decode_v2(message, 5.0, image_dtype=np.dtype("uint32"))
    assert frame.dtype == np.dtype("uint32") and frame.encoding is Encoding.LZ4
    assert rejection(message) == "unknown_encoding"  # no tag and no image_dtype: the dtype is unknown


def test_end_message_closes_the_series():
    assert decode_v2(v2_message(v2_end(9)), 5.0) == EndOfSeries(9, EndReason.END_MESSAGE)


def test_tag_hook_takes_the_cbor2_argument_order_of_either_major_version():
    """cbor2 ≥ 6 calls ``hook(tag, immutable)`` (checked on 6.2.1); cbor2 5 called ``hook(decoder, tag)``."""
    tag = cbor2.CBORTag(69, b"\x01\x00")
    assert _tag_hook(tag, True) == _tag_hook(object(), tag)


# --- rejections ----------------------------------------------------------------------------------------


def test_message_without_the_self_describe_tag_is_rejected():
    assert rejection(cbor2.dumps(v2_end(9))) == "missing_self_describe_tag"


@pytest.mark.parametrize(
    "message",
    [b"\xd9\xd9\xf7", b"\xd9\xd9\xf7\xa2\x64type", v2_message([1, 2]), b"\xd9\xd9\xf7\xc0\x63bad"],
    ids=["tag_only", "cut_map", "array_not_map", "bad_datetime"],
)
def test_undecodable_cbor_is_bad_cbor(message):
    assert rejection(message) == "bad_cbor"


def test_image_without_image_id_is_bad_cbor():
    image = v2_image(9, 0, {"threshold_1": v2_array(pixels(SHAPE))})
    del image["image_id"]
    assert rejection(v2_message(image)) == "bad_cbor"


@pytest.mark.parametrize("kind", ["status", None])
def test_unknown_message_type_is_rejected(kind):
    assert rejection(v2_message({**v2_end(9), "type": kind})) == "unknown_message_type"


def test_uncompressed_array_of_the_wrong_length_is_a_size_mismatch():
    image = pixels(SHAPE)
    array = cbor2.CBORTag(40, [[64, 95], cbor2.CBORTag(69, image.tobytes())])
    assert rejection(v2_message(v2_image(9, 0, {"threshold_1": array}))) == "size_mismatch"


def test_bslz4_header_size_other_than_dims_times_itemsize_is_a_size_mismatch():
    image = pixels(SHAPE)
    array = compressed_array(image[:32], "bslz4", 2, bslz4_chunk(image[:32]))
    array.value[0] = list(SHAPE)
    assert rejection(v2_message(v2_image(9, 0, {"threshold_1": array}))) == "size_mismatch"


def test_bslz4_element_size_other_than_the_typed_array_is_a_size_mismatch():
    image = pixels(SHAPE)
    array = compressed_array(image, "bslz4", 4, bslz4_chunk(image))
    assert rejection(v2_message(v2_image(9, 0, {"threshold_1": array}))) == "size_mismatch"


@pytest.mark.parametrize(("algorithm", "make_chunk"), [("bslz4", bslz4_chunk), ("lz4", lz4_chunk)])
def test_chunk_whose_block_chain_runs_past_the_blob_is_truncated(algorithm, make_chunk):
    image = pixels(SHAPE)
    array = compressed_array(image, algorithm, 2 if algorithm == "bslz4" else 0, make_chunk(image)[:-5])
    assert rejection(v2_message(v2_image(9, 0, {"threshold_1": array}))) == "truncated_blob"


@pytest.mark.parametrize(
    "array",
    [
        compressed_array(pixels(SHAPE), "bszstd", 2, b"\x00" * 64),
        cbor2.CBORTag(40, [list(SHAPE), cbor2.CBORTag(85, np.zeros(SHAPE, "<f4").tobytes())]),
        cbor2.CBORTag(1040, [list(SHAPE), cbor2.CBORTag(69, pixels(SHAPE).tobytes())]),
        pixels(SHAPE).tobytes(),
    ],
    ids=["bszstd", "float32", "column_major", "bare_bytes"],
)
def test_unknown_compression_or_array_form_is_an_unknown_encoding(array):
    assert rejection(v2_message(v2_image(9, 0, {"threshold_1": array}))) == "unknown_encoding"


@pytest.mark.parametrize("dims", [[64], [0, 96], [64, 96, 1], ["64", 96]])
def test_malformed_dims_are_a_bad_shape(dims):
    array = cbor2.CBORTag(40, [dims, cbor2.CBORTag(69, pixels(SHAPE).tobytes())])
    assert rejection(v2_message(v2_image(9, 0, {"threshold_1": array}))) == "bad_shape"
