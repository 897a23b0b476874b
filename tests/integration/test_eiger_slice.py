"""EIGER simulator → EigerDetector + NexusWriter server → NXmx files, checked against the simulator's truth."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers the bitshuffle/LZ4 filters for reading
import numpy as np
import nxmx
import pytest
import tango

from detpipe.devices.state_wait import prepare
from detpipe.simulators import EigerSimulator
from tests.device_servers import device_server
from tests.integration.conftest import DETECTOR, WRITER, server_devices
from tests.waiting import wait_until

FRAMES = 100


def configure(detector: tango.DeviceProxy, writer: tango.DeviceProxy, data_root: Path, frames: int,
              *, prefix: str = "series_$id", expo_s: float = 0.001, frames_per_file: int = 40) -> None:
    writer.saving_directory = str(data_root)
    writer.saving_prefix = prefix
    writer.saving_frame_per_file = frames_per_file
    detector.acq_nb_frames = frames
    detector.acq_expo_time = expo_s
    detector.compression_type = "bslz4"


def acquire(detector: tango.DeviceProxy, timeout_s: float = 120.0) -> str:
    prepare(detector, timeout_s)
    detector.Start()
    return wait_until(lambda: detector.acq_status, lambda s: s != "Running", timeout_s, "acq_status")


@pytest.mark.parametrize(
    "detpipe_server",
    [{"StreamFormat": "legacy"}, {"StreamFormat": "cbor"},
     {"StreamFormat": "legacy", "HeaderDetail": "none"}, {"StreamFormat": "cbor", "HeaderDetail": "all"}],
    ids=["stream_v1", "stream_v2", "stream_v1_header_none", "stream_v2_header_all"], indirect=True,
)
def test_every_pixel_and_chunk_of_a_series_reaches_the_nxmx_files(detpipe_server, eiger_sim: EigerSimulator,
                                                                    data_root: Path) -> None:
    detector, writer = detpipe_server
    configure(detector, writer, data_root, FRAMES)

    assert acquire(detector) == "Ready", detector.Status()

    assert detector.State() == tango.DevState.ON, detector.Status()
    assert detector.frames_received == FRAMES and detector.frames_dropped == 0
    assert writer.frames_written == FRAMES and writer.last_image_saved == FRAMES - 1
    master = Path(writer.master_file)
    with h5py.File(master) as f:
        stack = f["/entry/data/data"]
        assert stack.shape == (FRAMES, *eiger_sim.frames.shape)
        for i in range(FRAMES):
            np.testing.assert_array_equal(stack[i], eiger_sim.frames.pixels(i), err_msg=f"frame {i}")
        links = sorted(k for k in f["/entry/data"] if k.startswith("data_"))
        assert links == ["data_000001", "data_000002", "data_000003"]
        rows = 0
        for link in links:
            data = f["/entry/data"][link]
            for row in range(data.shape[0]):
                _, chunk = data.id.read_direct_chunk((row, 0, 0))
                assert chunk == eiger_sim.encoded_blob(rows + row), f"chunk of frame {rows + row}"
            rows += data.shape[0]
        assert rows == FRAMES
    with h5py.File(master) as f:
        entry = nxmx.NXmx(f).entries[0]
        assert entry.definition == "NXmx"
        module = entry.instruments[0].detectors[0].modules[0]
        assert tuple(module.data_size) == eiger_sim.frames.shape
        # V1 sends detector_distance, V2 the detector_translation: either way the detector sits at 0.12 m
        assert f["/entry/instrument/detector/distance"][()] == pytest.approx(0.12)
        assert f["/entry/instrument/detector/depends_on"][()] == b"/entry/instrument/detector/transformations/translation"


@contextmanager
def series_under_way(sim: EigerSimulator, data_root: Path, frames_first: int) -> Iterator[tuple]:
    """A paced 400-frame series through a fresh server, yielded once ``frames_first`` frames arrived."""
    sim.paced = True
    with device_server(server_devices(sim, data_root)) as ctx:
        detector, writer = ctx.get_device(DETECTOR), ctx.get_device(WRITER)
        configure(detector, writer, data_root, 400, expo_s=0.02)
        prepare(detector)
        detector.Start()
        wait_until(lambda: detector.frames_received, lambda n: n >= frames_first, 30, "frames_received")
        yield detector, writer


def test_stop_mid_series_keeps_exactly_the_frames_received(eiger_sim: EigerSimulator, data_root: Path) -> None:
    with series_under_way(eiger_sim, data_root, 20) as (detector, writer):
        detector.Stop()
        wait_until(lambda: detector.acq_status, lambda s: s != "Running", 30, "acq_status")
        received = detector.frames_received
        assert 20 <= received < 400
        assert writer.frames_written == received
        with h5py.File(writer.master_file) as f:
            stack = f["/entry/data/data"]
            assert stack.shape[0] == received
            for i in (0, received // 2, received - 1):
                np.testing.assert_array_equal(stack[i], eiger_sim.frames.pixels(i))
        for data_file in data_root.glob("*_data_*.h5"):
            with h5py.File(data_file) as f:
                assert f["/entry/data/data"].shape[0] > 0


def test_saving_directory_outside_data_roots_is_refused(detpipe_server, tmp_path: Path) -> None:
    _, writer = detpipe_server
    with pytest.raises(tango.DevFailed, match="not below any DataRoots"):
        writer.saving_directory = str(tmp_path / "elsewhere")


def test_detector_killed_mid_series_gives_fault_with_a_status_that_says_so(eiger_sim: EigerSimulator,
                                                                           data_root: Path) -> None:
    with series_under_way(eiger_sim, data_root, 10) as (detector, writer):
        eiger_sim.kill()
        state = wait_until(detector.State, lambda s: s in (tango.DevState.FAULT, tango.DevState.ALARM), 20, "State")
        assert state == tango.DevState.FAULT
        assert "unreachable" in detector.Status() or "no stream message" in detector.Status()
        wait_until(lambda: writer.State(), lambda s: s != tango.DevState.RUNNING, 20, "writer State")
        received = detector.frames_received
        with h5py.File(writer.master_file) as f:
            assert f["/entry/data/data"].shape[0] == writer.frames_written == received
