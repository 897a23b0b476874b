"""Stream V1 messages (DECTRIS Stream V1 documentation) and real DCUs' quirks, from hand-built messages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detpipe.pipeline.core.chunk_framing import decode_chunk_pixels
from detpipe.pipeline.core.errors import FrameRejected
from detpipe.pipeline.core.frame import Encoding, Frame
from detpipe.pipeline.core.series import EndOfSeries, EndReason, SeriesStart
from detpipe.pipeline.eiger.stream_v1 import decode_v1
from tests.pipeline.stream_messages import (
    bslz4_blocks,
    bslz4_chunk,
    lz4_block_as_long_as_its_frame,
    pixels,
    v1_config,
    v1_end,
    v1_header,
    v1_image,
)

SHAPE = (64, 96)  # (height, width): the wire shape is [96, 64]


def rejection(parts) -> str:
    with pytest.raises(FrameRejected) as err:
        decode_v1(parts, 1.0)
    return err.value.reason


# --- headers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("appendix", [None, b'{"user": "alice"}'], ids=["no_appendix", "appendix"])
def test_header_detail_none_opens_a_series_without_config(appendix):
    start = decode_v1(v1_header(7, "none", appendix=appendix), 5.0)
    assert isinstance(start, SeriesStart)
    assert (start.series_id, start.header_detail, start.config, start.received_s) == (7, "none", None, 5.0)
    assert start.appendix == (None if appendix is None else {"user": "alice"})


@pytest.mark.parametrize("appendix", [None, b"plain text appendix"], ids=["no_appendix", "appendix"])
def test_header_detail_basic_maps_the_config_part_to_detector_config(appendix):
    config_part = v1_config(SHAPE, "uint32")
    start = decode_v1(v1_header(7, "basic", config_part, appendix=appendix), 5.0)
    config = start.config
    assert start.header_detail == "basic" and start.appendix == (appendix.decode() if appendix else None)
    assert config.shape == (64, 96) and config.dtype == np.dtype("uint32")
    assert (config.nimages, config.ntrigger, config.frames_expected) == (10, 2, 20)
    assert (config.count_time_s, config.frame_time_s) == (0.0099999, 0.01)
    assert (config.photon_energy_ev, config.wavelength_a) == (12400.0, 0.99987)
    assert (config.beam_center_x_px, config.beam_center_y_px, config.detector_distance_m) == (512.5, 530.25, 0.125)
    assert (config.x_pixel_size_m, config.y_pixel_size_m) == (7.5e-05, 7.5e-05)
    assert (config.sensor_material, config.sensor_thickness_m) == ("Si", 0.00045)
    assert (config.description, config.detector_number) == ("Dectris EIGER2 Si 1M", "E-02-0001")
    assert (config.bit_depth_readout, config.saturation_value) == (16, 21517)
    assert (config.trigger_mode, config.compression) == ("exts", "bslz4")
    assert config.header == config_part
    assert start.pixel_mask is None and start.flatfield is None


@pytest.mark.parametrize("appendix", [None, b'{"user": "alice"}'], ids=["no_appendix", "appendix"])
def test_header_detail_all_carries_flatfield_and_pixel_mask_as_height_by_width_arrays(appendix):
    flatfield = np.random.default_rng(2).uniform(0.9, 1.1, SHAPE).astype("<f4")
    mask = np.zeros(SHAPE, "<u4")
    mask[3, 90] = 1
    start = decode_v1(
        v1_header(7, "all", v1_config(SHAPE), flatfield=flatfield, pixel_mask=mask, appendix=appendix), 5.0
    )
    assert start.header_detail == "all" and start.config.shape == SHAPE
    np.testing.assert_array_equal(start.flatfield, flatfield)
    np.testing.assert_array_equal(start.pixel_mask, mask)
    assert start.appendix == (None if appendix is None else {"user": "alice"})


def test_empty_calibration_parts_mean_no_calibration():
    """Real detector: ``"shape": []``, ``"type": "undefined"`` and empty blobs."""
    start = decode_v1(v1_header(7, "all", v1_config(SHAPE)), 5.0)
    assert start.flatfield is None and start.pixel_mask is None and start.config.shape == SHAPE


def test_placeholder_calibration_blobs_mean_no_calibration():
    """Simulator: ``[100, 100]`` shapes with placeholder byte strings."""
    parts = [
        json.dumps({"htype": "dflatfield-1.0", "shape": [100, 100], "type": "float32"}).encode(),
        b"flatfield-data-blob-here",
        json.dumps({"htype": "dpixelmask-1.0", "shape": [100, 100], "type": "uint32"}).encode(),
        b"pixelmask-data-blob-here",
    ]
    start = decode_v1(v1_header(7, "all", v1_config(SHAPE), calibration_parts=parts), 5.0)
    assert start.flatfield is None and start.pixel_mask is None


@pytest.mark.parametrize(("detail", "parts"), [("none", 3), ("basic", 1), ("basic", 4), ("all", 7), ("all", 10)])
def test_header_with_a_part_count_other_than_its_detail_needs_is_rejected(detail, parts):
    message = [*v1_header(7, "all", v1_config(SHAPE), appendix=b"{}"), b"{}"]
    message[0] = json.dumps({"htype": "dheader-1.0", "series": 7, "header_detail": detail}).encode()
    assert rejection(message[:parts]) == "wrong_part_count"


def test_header_with_an_unknown_header_detail_is_bad_json():
    message = [json.dumps({"htype": "dheader-1.0", "series": 7, "header_detail": "most"}).encode()]
    assert rejection(message) == "bad_json"


def test_header_without_image_size_is_bad_json():
    config = v1_config(SHAPE)
    del config["x_pixels_in_detector"]
    assert rejection(v1_header(7, "basic", config)) == "bad_json"


# --- images --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
def test_framed_bslz4_blob_passes_through_byte_for_byte_without_copy(dtype):
    image = pixels(SHAPE, dtype)
    message = [memoryview(part) for part in v1_image(7, 3, image, "bslz4")]
    frame = decode_v1(message, 5.0)
    assert isinstance(frame, Frame)
    assert frame.blob is message[2]
    assert bytes(frame.blob) == bslz4_chunk(image)
    assert (frame.encoding, frame.shape, frame.dtype) == (Encoding.BSLZ4, SHAPE, np.dtype(dtype))
    np.testing.assert_array_equal(decode_chunk_pixels(frame.encoding, frame.blob, frame.shape, frame.dtype), image)


def test_headerless_bslz4_blob_gets_a_header_and_decodes():
    """The ALBA simulator sends bare bitshuffle.compress_lz4 output."""
    image = pixels(SHAPE)
    frame = decode_v1(v1_image(7, 3, image, "bslz4-headerless"), 5.0)
    assert frame.encoding is Encoding.BSLZ4
    assert bytes(frame.blob) == bslz4_chunk(image)
    assert bytes(frame.blob[12:]) == bslz4_blocks(image)


def test_lz4_block_is_reframed_as_a_32004_chunk_and_decodes():
    image = pixels(SHAPE)
    frame = decode_v1(v1_image(7, 3, image, "lz4"), 5.0)
    assert frame.encoding is Encoding.LZ4
    np.testing.assert_array_equal(decode_chunk_pixels(frame.encoding, frame.blob, frame.shape, frame.dtype), image)


def test_lz4_block_as_long_as_the_frame_becomes_raw_pixels():
    block, raw = lz4_block_as_long_as_its_frame()
    image = np.frombuffer(raw, np.uint8).reshape(2, 13)
    frame = decode_v1(v1_image(7, 3, image, "lz4", blob=block), 5.0)
    assert frame.encoding is Encoding.RAW and frame.blob == raw


def test_uncompressed_frame_passes_through_as_raw():
    image = pixels(SHAPE, "uint32")
    message = [memoryview(part) for part in v1_image(7, 3, image, "raw")]
    frame = decode_v1(message, 5.0)
    assert frame.encoding is Encoding.RAW and frame.blob is message[2]
    np.testing.assert_array_equal(decode_chunk_pixels(frame.encoding, frame.blob, frame.shape, frame.dtype), image)


def test_image_fields_map_to_the_frame():
    """``frame`` is 0-based; shape [x, y] is (y, x); dconfig times are nanoseconds."""
    frame = decode_v1(v1_image(7, 3, pixels(SHAPE), "bslz4"), 5.0)
    assert (frame.series_id, frame.index, frame.shape, frame.received_s) == (7, 3, (64, 96), 5.0)
    assert frame.start_time_s == pytest.approx(2_896_000.0)
    assert frame.stop_time_s == pytest.approx(2_896_000.01)
    assert frame.real_time_s == pytest.approx(0.0099999)
    assert frame.channel == "threshold_1"


def test_image_with_an_appendix_decodes():
    frame = decode_v1(v1_image(7, 3, pixels(SHAPE), "bslz4", appendix=b'{"shot": 12}'), 5.0)
    assert frame.index == 3


def test_image_hash_is_never_checked():
    """The hash matches neither the compressed nor the decompressed bytes on hardware."""
    message = v1_image(7, 3, pixels(SHAPE), "bslz4")
    message[0] = json.dumps({"htype": "dimage-1.0", "series": 7, "frame": 3, "hash": "not-a-hash"}).encode()
    assert decode_v1(message, 5.0).index == 3


@pytest.mark.parametrize("spacing", [(b" ", b""), (b"", b"\n"), (b"\r\n ", b" \t")],
                         ids=["leading", "trailing", "both"])
def test_json_parts_with_whitespace_around_them_decode(spacing):
    """The JSON parts are read by the C scanner in one call; whitespace around an object (a DCU's JSON
    writer may end a part with a newline) sends them through the standard decoder, which accepts it."""
    before, after = spacing
    message = [before + part + after if i != 2 else part for i, part in enumerate(v1_image(7, 3, pixels(SHAPE)))]
    frame = decode_v1(message, 5.0)
    assert (frame.index, frame.shape, frame.stop_time_s) == (3, (64, 96), pytest.approx(2_896_000.01))


@pytest.mark.parametrize(("part", "what"), [(b'{"htype": "dimage-1.0"} {}', "Extra data"),
                                            (b"  ", "Expecting value"), (b"", "Expecting value")],
                         ids=["two_objects", "blank", "empty"])
def test_json_part_the_scanner_does_not_read_whole_is_refused_with_the_standard_message(part, what):
    message = v1_image(7, 3, pixels(SHAPE))
    message[0] = part
    with pytest.raises(FrameRejected, match=what) as err:
        decode_v1(message, 1.0)
    assert err.value.reason == "bad_json"


def test_end_message_closes_the_series():
    assert decode_v1(v1_end(7), 5.0) == EndOfSeries(7, EndReason.END_MESSAGE)


# --- rejections ----------------------------------------------------------------------------------------


def test_part_that_is_not_json_is_bad_json():
    message = v1_image(7, 3, pixels(SHAPE))
    message[1] = b"\x89PNG not json"
    assert rejection(message) == "bad_json"


def test_image_without_a_frame_number_is_bad_json():
    message = v1_image(7, 3, pixels(SHAPE))
    message[0] = json.dumps({"htype": "dimage-1.0", "series": 7}).encode()
    assert rejection(message) == "bad_json"


@pytest.mark.parametrize("part", [0, 1, 3], ids=["dimage", "dimage_d", "dconfig"])
def test_unknown_htype_is_rejected(part):
    message = v1_image(7, 3, pixels(SHAPE))
    message[part] = json.dumps({**json.loads(message[part]), "htype": "dimage-9.9"}).encode()
    assert rejection(message) == "unknown_htype"


@pytest.mark.parametrize("parts", [3, 6])
def test_image_with_a_wrong_part_count_is_rejected(parts):
    message = [*v1_image(7, 3, pixels(SHAPE), appendix=b"{}"), b"{}"]
    assert rejection(message[:parts]) == "wrong_part_count"


def test_end_with_extra_parts_is_rejected():
    assert rejection([*v1_end(7), b"{}"]) == "wrong_part_count"


def test_blob_shorter_than_its_declared_size_is_truncated():
    image = pixels(SHAPE)
    chunk = bslz4_chunk(image)
    assert rejection(v1_image(7, 3, image, blob=chunk[:-10], meta={"size": len(chunk)})) == "truncated_blob"


def test_bslz4_chain_running_past_the_blob_is_truncated():
    image = pixels(SHAPE)
    assert rejection(v1_image(7, 3, image, blob=bslz4_chunk(image)[:-10])) == "truncated_blob"


def test_blob_longer_than_its_declared_size_is_a_size_mismatch():
    image = pixels(SHAPE)
    chunk = bslz4_chunk(image)
    assert rejection(v1_image(7, 3, image, blob=chunk, meta={"size": len(chunk) - 1})) == "size_mismatch"


def test_bslz4_header_size_other_than_shape_times_itemsize_is_a_size_mismatch():
    """Header fields that lie (shape says 64 × 96 uint16, the chunk holds a smaller frame)."""
    image = pixels(SHAPE)
    assert rejection(v1_image(7, 3, image, blob=bslz4_chunk(image[:32]))) == "size_mismatch"


def test_bslz4_element_size_other_than_the_pixel_type_is_a_size_mismatch():
    image = pixels(SHAPE, "uint32")
    assert rejection(v1_image(7, 3, image, meta={"encoding": "bs16-lz4<"})) == "size_mismatch"


def test_raw_frame_of_the_wrong_length_is_a_size_mismatch():
    image = pixels(SHAPE)
    assert rejection(v1_image(7, 3, image, "raw", blob=image.tobytes()[:-2])) == "size_mismatch"


@pytest.mark.parametrize(
    "meta",
    [{"encoding": ">"}, {"encoding": "bs16-lz4>"}, {"encoding": "zstd<"}, {"type": "int16"}, {"type": "float32"}],
    ids=["big_endian", "big_endian_bslz4", "zstd", "int16", "float32"],
)
def test_unknown_encoding_or_pixel_type_is_rejected(meta):
    assert rejection(v1_image(7, 3, pixels(SHAPE), meta=meta)) == "unknown_encoding"


@pytest.mark.parametrize("shape", [[96], [96, 0], [96, -64], [96, 64, 1], "96x64", [96.0, 64]])
def test_malformed_shape_is_rejected(shape):
    assert rejection(v1_image(7, 3, pixels(SHAPE), meta={"shape": shape})) == "bad_shape"
