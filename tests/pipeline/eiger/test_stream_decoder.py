"""The decoder across both formats: detection, series bookkeeping (2 PULL clients), fault tolerance, HDF5-readiness."""

from __future__ import annotations

import json
from collections.abc import Callable

import cbor2
import h5py
import hdf5plugin
import numpy as np
import pytest

from detpipe.pipeline.core.chunk_framing import decode_chunk_pixels
from detpipe.pipeline.core.errors import FrameRejected
from detpipe.pipeline.core.frame import Encoding, Frame
from detpipe.pipeline.core.series import EndOfSeries, SeriesStart
from detpipe.pipeline.core.stage_stats import StageStats
from detpipe.pipeline.eiger.stream_decoder import EigerStreamDecoder, StreamFormat
from tests.pipeline.stream_messages import (
    bslz4_blocks,
    bslz4_chunk,
    lz4_chunk,
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

SHAPE = (64, 96)
SERIES = 12
IMAGE = pixels(SHAPE, seed=9)
Message = list[bytes]


def v1_frame(index: int, series: int = SERIES, **kwargs) -> Message:
    return v1_image(series, index, IMAGE, **kwargs)


def v2_frame(index: int, series: int = SERIES, compression: str | None = "bslz4") -> Message:
    return [v2_message(v2_image(series, index, {"threshold_1": v2_array(IMAGE, compression)}))]


def header(fmt: StreamFormat, series: int = SERIES, shape: tuple[int, int] = SHAPE) -> Message:
    if fmt is StreamFormat.V1:
        return v1_header(series, "basic", v1_config(shape))
    return [v2_message(v2_start(series, shape))]


HEADERS = {fmt: header(fmt) for fmt in StreamFormat}
FRAMES: dict[StreamFormat, Callable[..., Message]] = {StreamFormat.V1: v1_frame, StreamFormat.V2: v2_frame}
ENDS: dict[StreamFormat, Callable[[int], Message]] = {
    StreamFormat.V1: v1_end,
    StreamFormat.V2: lambda series: [v2_message(v2_end(series))],
}


@pytest.fixture(params=[StreamFormat.V1, StreamFormat.V2], ids=["v1", "v2"])
def stream_format(request) -> StreamFormat:
    return request.param


@pytest.fixture
def decoder_mid_series(stream_format) -> EigerStreamDecoder:
    decoder = EigerStreamDecoder()
    decoder.decode(HEADERS[stream_format], 1.0)
    return decoder


def reason_of(decoder: EigerStreamDecoder, message: Message) -> str:
    with pytest.raises(FrameRejected) as err:
        decoder.decode(message, 2.0)
    return err.value.reason


# --- a whole series -----------------------------------------------------------------------------------


def test_a_series_decodes_to_start_frames_and_end(stream_format):
    decoder = EigerStreamDecoder()
    assert decoder.stream_format is None and decoder.series_id is None
    items = decoder.decode(HEADERS[stream_format], 1.0)
    for index in range(3):
        items += decoder.decode(FRAMES[stream_format](index), 2.0 + index)
    items += decoder.decode(ENDS[stream_format](SERIES), 9.0)
    assert [type(item) for item in items] == [SeriesStart, Frame, Frame, Frame, EndOfSeries]
    assert [item.series_id for item in items] == [SERIES] * 5
    assert [item.index for item in items[1:4]] == [0, 1, 2]
    assert decoder.stream_format is stream_format and decoder.series_id == SERIES
    for frame in items[1:4]:
        np.testing.assert_array_equal(decode_chunk_pixels(frame.encoding, frame.blob, frame.shape, frame.dtype), IMAGE)


def test_memoryview_parts_are_decoded_and_a_framed_blob_is_not_copied():
    """The receiver hands ZMQ frame buffers (memoryviews); the V1 bslz4 blob must be that very view."""
    decoder = EigerStreamDecoder()
    decoder.decode([memoryview(part) for part in HEADERS[StreamFormat.V1]], 1.0)
    message = [memoryview(part) for part in v1_frame(0)]
    (frame,) = decoder.decode(message, 2.0)
    assert frame.blob is message[2]
    decoder.reset()
    decoder.decode([memoryview(part) for part in HEADERS[StreamFormat.V2]], 1.0)
    (frame,) = decoder.decode([memoryview(part) for part in v2_frame(0)], 2.0)
    assert bytes(frame.blob) == bslz4_chunk(IMAGE)


def test_format_follows_the_stream_after_reset():
    decoder = EigerStreamDecoder()
    decoder.decode(HEADERS[StreamFormat.V1], 1.0)
    decoder.reset()
    assert decoder.stream_format is None and decoder.series_id is None
    decoder.decode(HEADERS[StreamFormat.V2], 1.0)
    assert decoder.stream_format is StreamFormat.V2


def test_v1_header_detail_none_frames_decode_without_config():
    decoder = EigerStreamDecoder()
    (start,) = decoder.decode(v1_header(SERIES, "none"), 1.0)
    assert start.config is None
    (frame,) = decoder.decode(v1_frame(0), 2.0)
    assert frame.shape == SHAPE


def test_v2_frames_without_typed_array_tag_take_the_start_image_dtype():
    decoder = EigerStreamDecoder()
    decoder.decode([v2_message(v2_start(SERIES, SHAPE, "uint16"))], 1.0)
    array = cbor2.CBORTag(40, [list(SHAPE), cbor2.CBORTag(56500, ["lz4", 0, lz4_chunk(IMAGE)])])
    (frame,) = decoder.decode([v2_message(v2_image(SERIES, 0, {"threshold_1": array}))], 2.0)
    assert frame.dtype == np.dtype("uint16")


def test_a_header_opens_the_next_series_even_when_the_end_was_lost(stream_format):
    """The end message may be missing; the next header still starts a series."""
    decoder = EigerStreamDecoder()
    decoder.decode(HEADERS[stream_format], 1.0)
    (start,) = decoder.decode(header(stream_format, SERIES + 1), 2.0)
    assert start.series_id == decoder.series_id == SERIES + 1
    (frame,) = decoder.decode(FRAMES[stream_format](0, series=SERIES + 1), 3.0)
    assert frame.series_id == SERIES + 1


# --- series bookkeeping rejections ---------------------------------------------------------------------


def test_frame_from_another_series_is_rejected_and_the_next_message_decodes(stream_format, decoder_mid_series):
    """Another PULL client took that series' header; its frames must not join this series."""
    assert reason_of(decoder_mid_series, FRAMES[stream_format](0, series=SERIES - 1)) == "other_series"
    assert reason_of(decoder_mid_series, ENDS[stream_format](SERIES - 1)) == "other_series"
    (frame,) = decoder_mid_series.decode(FRAMES[stream_format](1), 3.0)
    assert frame.series_id == decoder_mid_series.series_id == SERIES


def test_frame_before_header_is_rejected_and_the_header_then_decodes(stream_format):
    decoder = EigerStreamDecoder()
    assert reason_of(decoder, FRAMES[stream_format](0)) == "frame_before_header"
    assert reason_of(decoder, ENDS[stream_format](SERIES)) == "frame_before_header"
    decoder.decode(HEADERS[stream_format], 1.0)
    assert decoder.decode(FRAMES[stream_format](0), 2.0)[0].index == 0


def test_frame_after_the_end_of_its_series_is_rejected(stream_format, decoder_mid_series):
    decoder_mid_series.decode(ENDS[stream_format](SERIES), 2.0)
    assert reason_of(decoder_mid_series, FRAMES[stream_format](5)) == "frame_before_header"


def test_frame_whose_shape_differs_from_the_series_header_is_a_bad_shape(stream_format):
    decoder = EigerStreamDecoder()
    decoder.decode(header(stream_format, shape=(64, 97)), 1.0)
    assert reason_of(decoder, FRAMES[stream_format](0)) == "bad_shape"


# --- every fault, then a good frame -------------------------------------------------------------------


def _json_part(obj: object) -> bytes:
    return json.dumps(obj).encode()


V1_FAULTS: dict[str, tuple[str, Callable[[], Message]]] = {
    "v1_message_not_json": ("bad_json", lambda: [b"\x00\x01garbage", *v1_frame(0)[1:]]),
    "v1_message_unknown_htype": ("unknown_htype", lambda: [_json_part({"htype": "dstatus-1.0", "series": SERIES})]),
    "v1_message_missing_part": ("wrong_part_count", lambda: v1_frame(0)[:3]),
    "v1_message_size_mismatch": ("size_mismatch", lambda: v1_frame(0, meta={"size": len(bslz4_chunk(IMAGE)) - 1})),
    "v1_message_truncated_blob": ("truncated_blob", lambda: v1_frame(0, blob=bslz4_chunk(IMAGE)[:-100])),
    "v1_message_unknown_encoding": ("unknown_encoding", lambda: v1_frame(0, meta={"encoding": "bs16-zstd<"})),
    "v1_message_bad_shape": ("bad_shape", lambda: v1_frame(0, meta={"shape": [96]})),
    "v1_message_other_series": ("other_series", lambda: v1_frame(0, series=SERIES + 5)),
    "v1_message_headerless_truncated": ("truncated_blob", lambda: v1_frame(0, blob=bslz4_blocks(IMAGE)[:-100])),
}


def _v2_with(dims: list[int], payload: object) -> Message:
    """An image whose one channel is ``40([dims, 69(payload)])``; payload is bytes or a 56500 tag."""
    array = cbor2.CBORTag(40, [dims, cbor2.CBORTag(69, payload)])
    return [v2_message(v2_image(SERIES, 0, {"threshold_1": array}))]


def _compressed(algorithm: str, modifier: int, blob: bytes) -> cbor2.CBORTag:
    return cbor2.CBORTag(56500, [algorithm, modifier, blob])


V2_FAULTS: dict[str, tuple[str, Callable[[], Message]]] = {
    "v2_message_bad_cbor": ("bad_cbor", lambda: [v2_frame(0)[0][:200]]),
    "v2_message_missing_self_describe_tag": ("missing_self_describe_tag", lambda: [v2_frame(0)[0][3:]]),
    "v2_message_unknown_type": ("unknown_message_type", lambda: [v2_message({**v2_end(SERIES), "type": "x"})]),
    "v2_message_two_parts": ("wrong_part_count", lambda: [*v2_frame(0), b"extra"]),
    "v2_message_size_mismatch": ("size_mismatch", lambda: _v2_with(list(SHAPE), IMAGE.tobytes()[:-2])),
    "v2_message_truncated_blob": (
        "truncated_blob",
        lambda: _v2_with(list(SHAPE), _compressed("bslz4", 2, bslz4_chunk(IMAGE)[:-50])),
    ),
    "v2_message_unknown_encoding": (
        "unknown_encoding",
        lambda: _v2_with(list(SHAPE), _compressed("bszstd", 2, b"\x00" * 32)),
    ),
    "v2_message_bad_shape": ("bad_shape", lambda: _v2_with([-64, 96], IMAGE.tobytes())),
    "v2_message_other_series": ("other_series", lambda: v2_frame(0, series=SERIES + 5)),
}


@pytest.mark.parametrize(
    ("fmt", "fault"),
    [(StreamFormat.V1, name) for name in V1_FAULTS] + [(StreamFormat.V2, name) for name in V2_FAULTS],
    ids=list(V1_FAULTS) + list(V2_FAULTS),
)
def test_each_bad_message_is_counted_under_its_reason_and_the_next_frame_decodes(fmt, fault):
    reason, build = (V1_FAULTS if fmt is StreamFormat.V1 else V2_FAULTS)[fault]
    decoder = EigerStreamDecoder()
    decoder.decode(HEADERS[fmt], 1.0)
    stats = StageStats()
    for index, message in enumerate([FRAMES[fmt](0), build(), FRAMES[fmt](1)]):
        try:
            items = decoder.decode(message, 2.0 + index)
        except FrameRejected as err:
            stats.rejected[err.reason] += 1
            continue
        stats.processed += len(items)
    assert stats.rejected == {reason: 1}
    assert stats.processed == 2
    assert decoder.series_id == SERIES and decoder.stream_format is fmt


def test_truncated_blob_is_counted_and_the_next_message_decodes(stream_format, decoder_mid_series):
    faults = V1_FAULTS if stream_format is StreamFormat.V1 else V2_FAULTS
    _, truncated = faults[f"{stream_format.name.lower()}_message_truncated_blob"]
    assert reason_of(decoder_mid_series, truncated()) == "truncated_blob"
    (frame,) = decoder_mid_series.decode(FRAMES[stream_format](1), 3.0)
    assert frame.index == 1


def test_empty_message_is_a_wrong_part_count():
    assert reason_of(EigerStreamDecoder(), []) == "wrong_part_count"


def test_cbor_map_without_the_self_describe_tag_is_recognised_as_v2():
    assert reason_of(EigerStreamDecoder(), [cbor2.dumps(v2_end(SERIES))]) == "missing_self_describe_tag"


# --- HDF5 readiness ------------------------------------------------------------------------------------

V1, V2 = HEADERS[StreamFormat.V1], HEADERS[StreamFormat.V2]
BSLZ4_FILTER, LZ4_FILTER = hdf5plugin.Bitshuffle(nelems=0, cname="lz4"), hdf5plugin.LZ4()


@pytest.mark.parametrize(
    ("header_message", "message", "encoding", "filter_options"),
    [
        (V1, v1_frame(0), Encoding.BSLZ4, BSLZ4_FILTER),
        (V1, v1_frame(0, encoding="bslz4-headerless"), Encoding.BSLZ4, BSLZ4_FILTER),
        (V2, v2_frame(0), Encoding.BSLZ4, BSLZ4_FILTER),
        (V1, v1_frame(0, encoding="lz4"), Encoding.LZ4, LZ4_FILTER),
        (V2, v2_frame(0, compression="lz4"), Encoding.LZ4, LZ4_FILTER),
    ],
    ids=["v1_bslz4", "v1_headerless_bslz4", "v2_bslz4", "v1_lz4", "v2_lz4"],
)
def test_chunk_from_the_decoder_is_written_directly_and_read_back_by_hdf5(
    tmp_path, header_message, message, encoding, filter_options
):
    """``write_direct_chunk`` of the frame's blob, read back through the real HDF5 filter."""
    decoder = EigerStreamDecoder()
    decoder.decode(header_message, 1.0)
    frames = [decoder.decode(message, 2.0)[0] for _ in range(2)]
    assert all(frame.encoding is encoding for frame in frames)
    path = tmp_path / "direct.h5"
    with h5py.File(path, "w") as h5:
        dset = h5.create_dataset("data", shape=(2, *SHAPE), dtype=IMAGE.dtype, chunks=(1, *SHAPE), **filter_options)
        for i, frame in enumerate(frames):
            dset.id.write_direct_chunk((i, 0, 0), frame.blob, filter_mask=0)
    with h5py.File(path, "r") as h5:
        np.testing.assert_array_equal(h5["data"][:], np.stack([IMAGE, IMAGE]))
        if encoding is Encoding.BSLZ4:
            assert h5["data"].id.read_direct_chunk((1, 0, 0))[1] == bslz4_chunk(IMAGE)
