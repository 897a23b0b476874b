"""Every AGIPD wire layout becomes the same canonical Train (SPB's and karabo-bridge's), and bad sources are named."""

from __future__ import annotations

import numpy as np
import pytest

from detpipe.pipeline.agipd.bridge_decoder import decode_bridge_message
from detpipe.pipeline.agipd.layout import COMBINED_AXES, MODULE_AXES, Layout, matching_axes
from detpipe.pipeline.agipd.train_assembler import AgipdTrainAssembler, AssembledTrain
from detpipe.pipeline.core.errors import FrameRejected
from detpipe.pipeline.core.train import Product
from tests.pipeline.karabo_messages import (
    COMBINED_CORRECTED,
    COMBINED_RAW,
    DETECTOR,
    Sources,
    TrainTruth,
    combined_sources,
    make_truth,
    metadata,
    module_sources,
    online,
    v1_0,
    v2_2,
)


def assemble(sources: Sources, *, layout: Layout = Layout.AUTO, protocol: str = "2.2") -> AssembledTrain:
    parts = v2_2(sources) if protocol == "2.2" else v1_0(sources)
    message = decode_bridge_message([memoryview(p) for p in parts])
    return AgipdTrainAssembler(layout=layout).assemble(message, series_id=3, index=5, received_s=123.0)


def assert_train_is(assembled: AssembledTrain, truth: TrainTruth) -> None:
    train = assembled.train
    assert train.product is (Product.RAW if truth.raw else Product.CORRECTED)
    assert (train.series_id, train.index, train.train_id) == (3, 5, truth.train_id)
    assert train.data.dtype == truth.data.dtype and train.data.flags.c_contiguous
    np.testing.assert_array_equal(train.data, truth.data)
    np.testing.assert_array_equal(train.cell_ids, truth.cell_ids)
    np.testing.assert_array_equal(train.pulse_ids, truth.pulse_ids)
    assert train.cell_ids.dtype == np.uint16 and train.pulse_ids.dtype == np.uint64
    assert train.modules_present == tuple(m not in truth.missing for m in range(16))
    if truth.raw:
        assert train.gain is None and train.mask is None
    else:
        assert train.gain.dtype == np.uint8 and train.mask.dtype == np.uint32
        np.testing.assert_array_equal(train.gain, truth.gain)
        np.testing.assert_array_equal(train.mask, truth.mask)


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "corrected"])
@pytest.mark.parametrize("layout", ["file", "online"])
@pytest.mark.parametrize("shape", ["combined", "per_module"])
def test_every_layout_gives_the_same_canonical_train(raw: bool, layout: str, shape: str) -> None:
    truth = make_truth(raw=raw, frames=2, missing={5} if shape == "per_module" else ())
    sources = combined_sources(truth, layout) if shape == "combined" else module_sources(truth, layout)
    assembled = assemble(sources)
    assert_train_is(assembled, truth)
    assert assembled.layout is Layout(layout) and assembled.notes == ()


def test_protocol_1_0_gives_the_same_train_as_2_2() -> None:
    truth = make_truth(raw=False, frames=2)
    assert_train_is(assemble(combined_sources(truth, "online"), protocol="1.0"), truth)


def test_file_layout_combined_train_is_the_received_buffer_without_a_copy() -> None:
    truth = make_truth(raw=True, frames=1)
    parts = [bytearray(p) for p in v2_2(combined_sources(truth, "file"))]
    message = decode_bridge_message([memoryview(p) for p in parts])
    train = AgipdTrainAssembler().assemble(message, series_id=1, index=0, received_s=0.0).train
    assert any(np.shares_memory(train.data, np.frombuffer(p, np.uint8)) for p in parts)


def test_modules_absent_from_modules_present_read_as_zero_and_are_reported() -> None:
    truth = make_truth(raw=False, frames=2)
    sources = combined_sources(truth, "file")
    keys = sources[COMBINED_CORRECTED][1]
    keys["modulesPresent"] = [m not in (2, 11) for m in range(16)]  # data still has pixels there
    train = assemble(sources).train
    assert [m for m, p in enumerate(train.modules_present) if not p] == [2, 11]
    assert not train.data[:, [2, 11]].any()
    np.testing.assert_array_equal(train.data[:, 3], truth.data[:, 3])


def test_simulator_raw_without_gain_axis_becomes_analog_with_digital_zero() -> None:
    """karabo-bridge's simulator sends raw (module, fs, ss, pulse) uint16 with no analog/digital axis."""
    truth = make_truth(raw=True, frames=2)
    for layout in ("file", "online"):
        assembled = assemble(combined_sources(truth, layout, raw_without_gain_axis=True))
        np.testing.assert_array_equal(assembled.train.data[:, :, 0], truth.data[:, :, 0])
        assert not assembled.train.data[:, :, 1].any()
        assert assembled.notes == ("raw_without_gain_axis",)


def test_simulator_single_module_gain_is_ignored_and_noted() -> None:
    truth = make_truth(raw=False, frames=2)
    sources = combined_sources(truth, "online")
    keys = sources[COMBINED_CORRECTED][1]
    keys["image.gain"] = np.ones((128, 512, 2), np.uint16)  # one module, online order, as the simulator sends
    del keys["image.mask"]
    assembled = assemble(sources)
    assert assembled.notes == ("gain_shape_quirk",)
    assert not assembled.train.gain.any() and not assembled.train.mask.any()
    np.testing.assert_array_equal(assembled.train.data, truth.data)


def test_forced_layout_that_does_not_fit_is_a_wrong_shape() -> None:
    truth = make_truth(raw=False, frames=2)
    with pytest.raises(FrameRejected, match="wrong_shape"):
        assemble(combined_sources(truth, "online"), layout=Layout.FILE)
    assert_train_is(assemble(combined_sources(truth, "online"), layout=Layout.ONLINE), truth)


def test_only_a_128_cell_single_module_array_fits_two_layouts() -> None:
    """(128, 512, 128) is (pulse, ss, fs) and (fs, ss, pulse) at once; a forced layout settles it, AUTO
    takes the last layout seen (ONLINE at first). Every other shape fits one layout at most."""
    both = matching_axes((128, 512, 128), MODULE_AXES, Layout.AUTO)
    assert [lay for _, lay in both] == [Layout.FILE, Layout.ONLINE]
    assert matching_axes((128, 512, 128), MODULE_AXES, Layout.FILE) == [("pyx", Layout.FILE)]
    for frames in (1, 2, 16, 64, 127, 129, 352):
        for shape in ((frames, 512, 128), (128, 512, frames), (frames, 2, 512, 128), (2, 128, 512, frames)):
            assert len(matching_axes(shape, MODULE_AXES, Layout.AUTO)) == 1 or frames == 128
        combined = ((frames, 16, 512, 128), (16, 128, 512, frames),
                    (frames, 16, 2, 512, 128), (16, 2, 128, 512, frames))
        for shape in combined:
            assert len(matching_axes(shape, COMBINED_AXES, Layout.AUTO)) == 1


def _bad(sources: Sources, reason: str) -> None:
    with pytest.raises(FrameRejected) as raised:
        assemble(sources)
    assert raised.value.reason == reason


def test_unknown_sources_are_rejected() -> None:
    _bad({"XMPL/DET/CAM": (metadata("XMPL/DET/CAM", 1), {"image.data": np.zeros((2, 3), np.uint8)})},
         "unknown_source")


@pytest.mark.parametrize("key", ["image.data", "image.cellId", "image.pulseId", "timestamp.tid"])
def test_missing_keys_are_rejected(key: str) -> None:
    sources = combined_sources(make_truth(raw=False, frames=1), "file")
    meta, keys = sources[COMBINED_CORRECTED]
    if key == "timestamp.tid":
        del meta[key], keys["image.trainId"]
    else:
        del keys[key]
    _bad(sources, "missing_key")


def test_train_id_comes_from_image_train_id_when_metadata_lacks_it() -> None:
    truth = make_truth(raw=False, frames=1, train_id=42)
    sources = combined_sources(truth, "file")
    del sources[COMBINED_CORRECTED][0]["timestamp.tid"]
    assert assemble(sources).train.train_id == 42


def test_wrong_shapes_and_dtypes_are_rejected() -> None:
    truth = make_truth(raw=True, frames=2)
    sources = combined_sources(truth, "file")
    sources[COMBINED_RAW][1]["image.data"] = np.zeros((2, 16, 2, 500, 128), np.uint16)
    _bad(sources, "wrong_shape")
    sources[COMBINED_RAW][1]["image.data"] = truth.data.astype(np.float32)  # float under the RAW name
    _bad(sources, "wrong_dtype")
    sources[COMBINED_RAW][1]["image.data"] = truth.data.astype(np.int32)
    _bad(sources, "wrong_dtype")
    sources = combined_sources(truth, "file")
    sources[COMBINED_RAW][1]["image.cellId"] = np.arange(3, dtype=np.uint16)
    _bad(sources, "wrong_shape")


def test_per_module_sources_of_different_trains_are_rejected() -> None:
    sources = module_sources(make_truth(raw=True, frames=1), "file")
    meta = sources[f"{DETECTOR}/DET/7CH0:xtdf"][0]
    meta["timestamp.tid"] += 1
    _bad(sources, "train_id_mismatch")


def test_per_module_sources_of_different_shapes_are_rejected() -> None:
    sources = module_sources(make_truth(raw=True, frames=2), "online")
    keys = sources[f"{DETECTOR}/DET/3CH0:xtdf"][1]
    keys["image.data"] = online(np.zeros((1, 2, 512, 128), np.uint16))
    _bad(sources, "wrong_shape")


def test_sources_of_another_detector_are_ignored_when_a_detector_id_is_set() -> None:
    truth = make_truth(raw=False, frames=1)
    sources = combined_sources(truth, "file")
    sources["MID_DET_AGIPD1M-1/CAL/APPEND_CORRECTED"] = sources[COMBINED_CORRECTED]
    parts = v2_2(sources)
    assembler = AgipdTrainAssembler(detector_id="SPB_DET_AGIPD1M-1")
    assembled = assembler.assemble(decode_bridge_message(parts), series_id=1, index=0, received_s=0.0)
    assert assembled.source == COMBINED_CORRECTED
    with pytest.raises(FrameRejected, match="unknown_source"):
        AgipdTrainAssembler(detector_id="FXE_DET_LPD1M-1").assemble(
            decode_bridge_message(parts), series_id=1, index=0, received_s=0.0)
