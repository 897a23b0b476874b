"""The data policy stage on an Eiger 4M series at a 5 % hit fraction: what is kept, how much it saves, and
that the RED files prove it (provenance, manifest) and can be redone offline byte for byte."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - reads bslz4 chunks
import numpy as np
import pytest

from detpipe.pipeline.core.chunk_framing import decode_chunk_pixels
from detpipe.pipeline.core.errors import ConfigError, TargetFileExists
from detpipe.pipeline.core.file_clock import SOURCE_DATE_EPOCH
from detpipe.pipeline.core.frame import Encoding
from detpipe.pipeline.policy.event_selection import KeepReason
from detpipe.pipeline.policy.offline_reduction import reduce_series
from detpipe.pipeline.policy.precision_rounding import round_precision
from detpipe.pipeline.policy.provenance import read_reduction_config
from detpipe.pipeline.policy.reduction_params import Policy, ReductionParams
from tests.pipeline.red_runs import SeriesFrames, online_run, reduce_twice_holding_h5py_objects, series_frames
from tests.pipeline.stream_messages import corrupt_first_match

FRAMES = 160
SEED = 8  # SfxFrames("4M", seed=8, hit_fraction=0.05): 7 true hits in 160 frames
HITS_AND_MISSES = ReductionParams(policy=Policy.RAW_RED, hits_only=True, miss_fraction=0.01, miss_seed=3)


@pytest.fixture(scope="module")
def series() -> SeriesFrames:
    return series_frames(FRAMES, seed=SEED, hit_fraction=0.05)


@pytest.fixture(scope="module")
def hits_run(series: SeriesFrames, tmp_path_factory: pytest.TempPathFactory):
    run_directory = tmp_path_factory.mktemp("data") / "run"
    stage, manifest = online_run(run_directory, series, HITS_AND_MISSES)
    return stage, manifest, run_directory


def red_chunks(master: Path) -> list[bytes]:
    """Every RED frame's stored chunk, in RED order, through the master's data file links."""
    chunks = []
    with h5py.File(master, "r") as handle:
        for name in sorted(k for k in handle["/entry/data"] if k.startswith("data_")):
            dataset = handle[f"/entry/data/{name}"]
            chunks += [bytes(dataset.id.read_direct_chunk((row, 0, 0))[1]) for row in range(dataset.shape[0])]
    return chunks


def test_hits_plus_one_percent_misses_keeps_every_true_hit_and_reduces_at_least_15x(hits_run, series):
    stage, _, _ = hits_run
    with h5py.File(stage.run.red_master, "r") as handle:
        kept = handle["/entry/process_02/kept_frames"][()]
        reasons = handle["/entry/process_02/keep_reason"][()]
    assert set(series.true_hits) <= set(kept.tolist())
    assert stage.stats.hits_kept == len(series.true_hits)
    assert stage.stats.misses_kept == 2  # 1 % of 153 misses, as drawn for miss_seed 3
    assert set(reasons.tolist()) == {KeepReason.HIT, KeepReason.SAMPLED_MISS}
    assert stage.stats.reduction_ratio >= 15.0, stage.stats.metrics()


def test_red_frames_are_the_raw_chunks_of_the_kept_frames_in_order(hits_run, series):
    stage, _, _ = hits_run
    with h5py.File(stage.run.red_master, "r") as handle:
        kept = handle["/entry/process_02/kept_frames"][()]
        n_peaks = handle["/entry_1/result_1/nPeaks"][()]
    assert red_chunks(stage.run.red_master) == [bytes(series.frames[i].blob) for i in kept]
    assert n_peaks.tolist() == [series.frames[i].triage.n_peaks for i in kept]


def test_manifest_numbers_equal_what_is_on_disk(hits_run, series):
    stage, manifest, run_directory = hits_run
    document = json.loads(manifest.read_text())
    files = {entry["path"]: entry for entry in document["files"]}
    for path, entry in files.items():
        assert (run_directory / path).stat().st_size == entry["size"], path
    raw = sum(e["size"] for e in files.values() if e["role"] == "raw")
    red = sum(e["size"] for e in files.values() if e["role"] == "red")
    assert document["DataPolicy_bytes_raw"] == raw and document["DataPolicy_bytes_red"] == red
    assert document["DataPolicy_frames_in"] == document["InstrumentDetector_frames"] == FRAMES
    assert document["DataPolicy_frames_kept"] == len(red_chunks(stage.run.red_master))
    assert document["DataPolicy_reduction_ratio"] == pytest.approx(document["DataPolicy_bytes_in"] / red)
    assert document["DataPolicy_bytes_in"] == sum(f.nbytes_encoded for f in series.frames)
    assert document["DataPolicy_policy"] == "raw+red" and document["DataPolicy_raw_retention_days"] == 60
    with h5py.File(run_directory / "raw" / f"{stage.run.stem}_master.h5", "r") as handle:
        assert handle["/entry/data_policy/raw_retention_days"][()] == 60


def test_red_file_records_raw_checksums_and_the_policy_it_was_made_with(hits_run):
    stage, manifest, _ = hits_run
    raw_in_manifest = {e["path"]: e["sha256"] for e in json.loads(manifest.read_text())["files"] if e["role"] == "raw"}
    with h5py.File(stage.run.red_master, "r") as handle:
        note = handle["/entry/process_02/raw_data"]
        stored = dict(zip(note["file_name"].asstr()[()], note["checksum"].asstr()[()]))
        assert handle["/entry/process_02/program"].asstr()[()] == "detpipe"
        assert handle["/entry/process_02/sequence_index"][()] == 2
    assert stored == raw_in_manifest
    params, triage = read_reduction_config(stage.run.red_master)
    assert params == HITS_AND_MISSES and triage is not None


def test_offline_reduction_from_the_red_files_config_gives_byte_identical_red_data(hits_run, tmp_path):
    stage, _, run_directory = hits_run
    params, _ = read_reduction_config(stage.run.red_master)
    raw_master = run_directory / "raw" / f"{stage.run.stem}_master.h5"
    manifest = reduce_series(raw_master, params, tmp_path / "offline")
    offline_master = tmp_path / "offline" / "red" / stage.run.red_master.name
    assert red_chunks(offline_master) == red_chunks(stage.run.red_master)
    with h5py.File(offline_master, "r") as offline, h5py.File(stage.run.red_master, "r") as online:
        for name in ("kept_frames", "keep_reason"):
            np.testing.assert_array_equal(offline[f"/entry/process_02/{name}"], online[f"/entry/process_02/{name}"])
    assert json.loads(manifest.read_text())["DataPolicy_frames_kept"] == stage.stats.frames_kept


def test_rounding_and_roi_change_pixels_only_as_configured(series, tmp_path):
    roi = [100, 200, 300, 150]
    params = ReductionParams.from_mapping(dict(policy="red", hits_only=True, miss_fraction=0.0, mantissa_bits=3,
                                               rois=[roi]))
    stage, _ = online_run(tmp_path / "run", series, params)
    with h5py.File(stage.run.red_master, "r") as handle:
        kept = handle["/entry/process_02/kept_frames"][()]
        mask = handle["/entry/instrument/detector/pixel_mask"][()]
        red = handle["/entry/data/data"][0]
    raw_frame = series.frames[int(kept[0])]
    raw = decode_chunk_pixels(Encoding.BSLZ4, raw_frame.blob, raw_frame.shape, raw_frame.dtype)
    x, y, w, h = roi
    inside = raw[y:y + h, x:x + w]
    valid = inside != series.sfx.masked_value
    assert np.all(np.abs(red[y:y + h, x:x + w][valid].astype(np.int64) - inside[valid]) <= inside[valid] / 8 + 1)
    outside = np.ones(raw.shape, bool)
    outside[y:y + h, x:x + w] = False
    assert np.all(red[outside] == series.sfx.masked_value)
    assert np.all(mask[outside] & (1 << 8))
    assert 0.9 < stage.stats.pixels_dropped_fraction < 1.0
    assert stage.stats.rounding.rms_photons > 0  # peak pixels above 8 counts lose bits
    assert not (tmp_path / "run" / "raw").exists()


def test_a_kept_frame_that_does_not_decode_is_counted_and_leaves_no_hole_in_the_red_stack(series, tmp_path):
    """Kept frames are reduced several at once (reduction_pool.py) and written in frame order: the second true hit
    arrives with a corrupt chunk, is counted ``corrupt_payload``, and every other hit is RED frame k, in order,
    its raw frame rounded to 8 significant bits."""
    corrupt = series.true_hits[1]
    frames = tuple(replace(f, blob=corrupt_first_match(bytes(f.blob))) if f.index == corrupt else f
                   for f in series.frames)
    params = ReductionParams.from_mapping(dict(policy="red", hits_only=True, miss_fraction=0.0, mantissa_bits=8))
    stage, _ = online_run(tmp_path / "run", replace(series, frames=frames), params)
    assert stage.stats.rejected == {"corrupt_payload": 1}
    expected = [i for i in series.true_hits if i != corrupt]
    with h5py.File(stage.run.red_master, "r") as handle:
        kept = handle["/entry/process_02/kept_frames"][()]
        red = handle["/entry/data/data"]
        assert list(kept) == expected and red.shape[0] == len(expected)
        for row, index in enumerate(kept):
            frame = series.frames[int(index)]
            raw = decode_chunk_pixels(frame.encoding, frame.blob, frame.shape, frame.dtype)
            rounded = round_precision(raw, mantissa_bits=8, step_exponent=params.rounding_exponent,
                                      masked_value=series.sfx.masked_value)
            np.testing.assert_array_equal(red[row], rounded, err_msg=f"RED frame {row} (raw frame {index})")


def test_policy_raw_writes_no_red_files_but_a_manifest(series, tmp_path):
    short = replace(series, frames=series.frames[:20])
    stage, manifest = online_run(tmp_path / "run", short, ReductionParams(policy=Policy.RAW))
    document = json.loads(manifest.read_text())
    assert {e["role"] for e in document["files"]} == {"raw"}
    assert document["DataPolicy_frames_kept"] == 20 and document["DataPolicy_bytes_red"] == 0
    assert not (tmp_path / "run" / "red").exists()


def test_a_second_run_into_the_same_files_is_refused_before_anything_is_written(hits_run, series):
    stage, manifest, run_directory = hits_run
    before = sorted(p.name for p in run_directory.rglob("*"))
    with pytest.raises(TargetFileExists):
        online_run(run_directory, series, HITS_AND_MISSES)
    assert sorted(p.name for p in run_directory.rglob("*")) == before


def test_offline_reduction_refuses_policy_raw_and_a_non_master_file(hits_run, tmp_path):
    stage, _, run_directory = hits_run
    raw_master = run_directory / "raw" / f"{stage.run.stem}_master.h5"
    with pytest.raises(ConfigError, match="keeps no RED data"):
        reduce_series(raw_master, ReductionParams(policy=Policy.RAW), tmp_path / "out")
    with pytest.raises(ConfigError, match="neither a series master"):
        reduce_series(run_directory / "raw" / f"{stage.run.stem}_data_000001.h5", HITS_AND_MISSES, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_sparse_policy_writes_pyfai_sparse_frames_of_the_kept_frames_with_provenance(series, tmp_path):
    params = ReductionParams(policy=Policy.RED, hits_only=True, miss_fraction=0.0, sparse=True)
    stage, _ = online_run(tmp_path / "run", replace(series, frames=series.frames[:60]), params)
    path = stage.run.red_master
    assert path.name.endswith("_sparse.h5")
    with h5py.File(path, "r") as handle:
        kept = handle["/entry/process_02/kept_frames"][()]
        frame_ptr = handle["/entry/sparse_frames/frame_ptr"][()]
        index = handle["/entry/sparse_frames/index"][()]
        intensity = handle["/entry/sparse_frames/intensity"][()]
    assert kept.tolist() == [i for i in range(60) if series.sfx.truth(i).is_hit]
    assert frame_ptr.size == kept.size + 1
    raw = series.frames[int(kept[0])]
    pixels = decode_chunk_pixels(Encoding.BSLZ4, raw.blob, raw.shape, raw.dtype).reshape(-1)
    np.testing.assert_array_equal(intensity[frame_ptr[0]:frame_ptr[1]], pixels[index[frame_ptr[0]:frame_ptr[1]]])
    assert stage.stats.pixels_dropped_fraction > 0.99


def test_bad_policy_values_are_all_reported_in_one_error():
    with pytest.raises(ConfigError) as err:
        ReductionParams.from_mapping({"policy": "everything", "rois": [[0, 0, 5]], "colour": "red"})
    assert len(err.value.problems) == 3
    for mapping, reason in (({"rounding_step": 0.3}, "power of two"), ({"mantissa_bits": 0}, "1..23"),
                            ({"binning": 3}, "binning"), ({"rois": [[0, 0, 0, 4]]}, "width, height >= 1"),
                            ({"modules": [1, 1]}, "distinct"), ({"embargo_date": "soon"}, "ISO date"),
                            ({"binning": 2, "sparse": True}, "exclude")):
        with pytest.raises(ConfigError, match=reason):
            ReductionParams.from_mapping(mapping)


@pytest.mark.parametrize("params", [HITS_AND_MISSES, replace(HITS_AND_MISSES, policy=Policy.RED, sparse=True)],
                         ids=["red", "sparse"])
def test_reduced_files_are_the_same_bytes_however_long_python_holds_their_h5py_objects(
        hits_run, params, tmp_path, monkeypatch):
    """A sampling profiler (every Dask worker runs one) holds the frames it samples, and with them any h5py
    dataset a line just dropped; the files, masters included, must not depend on when h5py closes an object."""
    stage, _, run_directory = hits_run
    raw_master = run_directory / "raw" / f"{stage.run.stem}_master.h5"
    monkeypatch.setenv(SOURCE_DATE_EPOCH, "1764806400")
    freed, kept_alive = reduce_twice_holding_h5py_objects(lambda out: reduce_series(raw_master, params, out),
                                                          tmp_path / "out", monkeypatch)
    assert sorted(freed) == sorted(kept_alive)
    assert [p for p in freed if freed[p] != kept_alive[p]] == []
