"""Replaying a recorded HDF5 file: shape and dtype come from the file, frames wrap around."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from detpipe.simulators import DatasetFrames, EigerSimulator
from tests.simulators.eiger_sim_client import SimplonClient, StreamReceiver
from tests.simulators.eiger_sim_wire import decode_v1_image

SHAPE = (100, 120)  # deliberately no EIGER size: everything must come from the file


def recorded_stack(n: int, dtype: type) -> np.ndarray:
    return np.random.default_rng(1).poisson(3.0, size=(n, *SHAPE)).astype(dtype)


@pytest.fixture
def bslz4_file(tmp_path: Path) -> tuple[Path, np.ndarray]:
    path, stack = tmp_path / "run.h5", recorded_stack(3, np.uint32)
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "/entry/data/data", data=stack, chunks=(1, *SHAPE), **hdf5plugin.Bitshuffle(nelems=0, cname="lz4")
        )
    return path, stack


def test_frames_wrap_around_the_file_and_have_no_known_truth(bslz4_file: tuple[Path, np.ndarray]) -> None:
    path, stack = bslz4_file
    frames = DatasetFrames(path)
    try:
        assert frames.shape == SHAPE and frames.dtype == np.uint32 and frames.n_frames == 3
        for i in range(7):
            np.testing.assert_array_equal(frames.pixels(i), stack[i % 3])
            truth = frames.truth(i)
            assert truth.index == i and truth.is_hit is None and truth.peaks == ()
    finally:
        frames.close()


def test_a_dataset_path_and_a_group_of_data_files_can_be_chosen(tmp_path: Path) -> None:
    path, stack = tmp_path / "master.h5", recorded_stack(5, np.uint16)
    with h5py.File(path, "w") as f:
        f["/entry/data/data_000001"] = stack[:2]
        f["/entry/data/data_000002"] = stack[2:]
        f["/elsewhere/frames"] = stack[::-1]
    grouped, chosen = DatasetFrames(f"{path}::/entry/data"), DatasetFrames(f"{path}::/elsewhere/frames")
    try:
        assert grouped.n_frames == 5 and chosen.n_frames == 5
        for i in range(5):
            np.testing.assert_array_equal(grouped.pixels(i), stack[i])
            np.testing.assert_array_equal(chosen.pixels(i), stack[4 - i])
    finally:
        grouped.close()
        chosen.close()


def test_a_missing_dataset_names_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "empty.h5"
    h5py.File(path, "w").close()
    with pytest.raises(KeyError, match="FILE::/path"):
        DatasetFrames(path)


def test_the_simulator_streams_the_file_and_reports_its_size_and_depth(
    make_sim: Callable[..., EigerSimulator], bslz4_file: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, stack = bslz4_file
    sim = make_sim("500K", dataset=str(path))
    rest = SimplonClient(sim.rest_url)
    assert rest.value("detector", "config/x_pixels_in_detector") == SHAPE[1]
    assert rest.value("detector", "config/y_pixels_in_detector") == SHAPE[0]
    assert rest.value("detector", "config/bit_depth_image") == 32
    rest.put("detector", "config/count_time", 0.001)  # would mean 16 bit for the sensor; the file says 32
    assert rest.value("detector", "config/bit_depth_image") == 32
    rest.configure(nimages=4, frame_time=0.001)
    rest.enable_stream(header_detail="none")
    receiver = StreamReceiver(sim.stream_endpoint)
    try:
        rest.command("initialize")
        rest.command("arm")
        rest.command("trigger")
        rest.command("disarm")
        images = receiver.receive_until(lambda m: json.loads(m[0])["htype"] == "dseries_end-1.0")[1:-1]
    finally:
        receiver.close()
    for i, parts in enumerate(images):
        descriptor, pixels = decode_v1_image(parts)
        assert descriptor["shape"] == [SHAPE[1], SHAPE[0]] and descriptor["encoding"] == "bs32-lz4<"
        np.testing.assert_array_equal(pixels, stack[i % 3])
    truth = json.loads(sim.frames.write_truth(tmp_path / "truth.json", 2).read_text())
    assert truth["source"] == "dataset" and [f["is_hit"] for f in truth["frames"]] == [None, None]
