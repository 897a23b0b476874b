"""AGIPD simulator (Karabo bridge) → AgipdDetector + NexusWriter server → EuXFEL run files + VDS master."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import extra_data
import h5py
import hdf5plugin  # noqa: F401 - bitshuffle/LZ4 filters for reading
import numpy as np
import tango
from extra_data.components import AGIPD1M

from detpipe.devices.agipd_detector import AgipdDetector
from detpipe.devices.nexus_writer import NexusWriter
from detpipe.devices.state_wait import prepare
from detpipe.simulators.agipd_simulator import AgipdSimulator
from tests.device_servers import device_server
from tests.waiting import wait_until

AGIPD, WRITER = "test/agipd/1", "test/writer/1"


@contextmanager
def agipd_server(sim: AgipdSimulator, data_root: Path, *, writer_props: dict | None = None,
                 **props: object) -> Iterator[tuple]:
    devices = [
        {"class": AgipdDetector, "devices": [{"name": AGIPD, "properties": {
            "BridgeEndpoint": sim.endpoint, "BridgeSocket": "REQ", "WriterDevice": WRITER, "StreamTimeout": 20.0,
            **props}}]},
        {"class": NexusWriter, "devices": [{"name": WRITER, "properties": {
            "DataRoots": [str(data_root)], "BufferFrames": 8, "TrainsPerSequence": 8, **(writer_props or {})}}]},
    ]
    with device_server(devices, timeout_s=60) as ctx:
        detector, writer = ctx.get_device(AGIPD), ctx.get_device(WRITER)
        writer.saving_directory = str(data_root)
        yield detector, writer


def run(detector: tango.DeviceProxy, trains: int, run_number: int = 1, timeout_s: float = 300) -> str:
    detector.run_number = run_number
    detector.acq_nb_trains = trains
    prepare(detector, timeout_s)
    detector.Start()
    return wait_until(lambda: detector.acq_status, lambda s: s != "Running", timeout_s, "acq_status")


def readable_copy(run_dir: Path, tmp_path: Path) -> Path:
    """extra_data writes a cache file into a writable run directory; read a copy (extra-data documentation)."""
    copy = tmp_path / "copy" / run_dir.name
    shutil.copytree(run_dir, copy)
    return copy


SEQUENCE_EDGES = (0, 7, 8, 15, 16, 19)  # 20 trains, 8 per sequence: S00000 holds 0–7, S00001 8–15, S00002 16–19


def test_twenty_raw_trains_of_64_cells_land_in_a_run_extra_data_reads_pixel_exact(tmp_path: Path) -> None:
    data_root = tmp_path / "data"
    data_root.mkdir()
    with AgipdSimulator(cells=64, product="raw", paced=False, seed=5) as sim:
        with agipd_server(sim, data_root) as (detector, writer):
            assert run(detector, 20) == "Ready", detector.Status()
            assert detector.trains_received == 20 and detector.frames_received == 20 * 64
            assert writer.frames_written == 20 * 64 and detector.frames_dropped == 0
            master_path = Path(writer.master_file)
        run_dir = master_path.parent
        assert len(list(run_dir.glob("RAW-R0001-AGIPD*-S*.h5"))) == 16 * 3  # 20 trains, 8 per sequence
        agipd = AGIPD1M(extra_data.RunDirectory(str(readable_copy(run_dir, tmp_path))), raw=True)
        assert list(agipd.train_ids) == [sim.train(i).train_id for i in range(20)]
        with h5py.File(master_path) as master:
            stack = master["/entry/data/data"]
            assert stack.shape == (20 * 64, 16, 2, 512, 128)
            for k in SEQUENCE_EDGES:  # every sequence file, first and last train of each (5 GB read in all: minutes)
                truth = sim.train(k)
                one = agipd.select_trains(extra_data.by_index[k])
                data = one.get_array("image.data").values[:, 0]  # (module, train, pulse, 2, ss, fs) -> one train
                np.testing.assert_array_equal(np.moveaxis(data, 0, 1), truth.data, err_msg=f"train {k}")
                np.testing.assert_array_equal(one.get_array("image.cellId").values[0, 0].ravel(), truth.cell_ids)
                np.testing.assert_array_equal(stack[64 * k + 3], truth.data[3])
            assert list(master["/entry/data/trainId"][::64]) == [sim.train(i).train_id for i in range(20)]


def test_the_writer_stores_agipd_pixels_as_its_agipd_compression_property_says(tmp_path: Path) -> None:
    data_root = tmp_path / "data"
    data_root.mkdir()
    with AgipdSimulator(cells=4, product="raw", paced=False, seed=6) as sim:
        with agipd_server(sim, data_root, writer_props={"AgipdCompression": "bslz4"}) as (detector, writer):
            assert run(detector, 2) == "Ready", detector.Status()
            module_file = Path(writer.master_file).parent / "RAW-R0001-AGIPD05-S00000.h5"
        with h5py.File(module_file) as handle:
            data = handle["INSTRUMENT/SPB_DET_AGIPD1M-1/DET/5CH0:xtdf/image/data"]
            plist = data.id.get_create_plist()
            assert [plist.get_filter(i)[0] for i in range(plist.get_nfilters())] == [32008]
            np.testing.assert_array_equal(data[4:8], sim.train(1).data[:, 5])
        with agipd_server(sim, data_root, writer_props={"AgipdCompression": "zstd"}) as (detector, writer):
            assert writer.State() == tango.DevState.FAULT
            assert "AgipdCompression: compression must be one of none, deflate, bslz4, got 'zstd'" in writer.Status()
            detector.run_number = 2
            detector.Prepare()
            wait_until(detector.Status, lambda s: "AgipdCompression" in s, 20, "detector Status")  # Prepare is refused
            assert detector.State() == tango.DevState.FAULT and not list(data_root.glob("**/r0002"))
