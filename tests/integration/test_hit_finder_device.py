"""HitFinder in a real detpipe server between a simulated EIGER or AGIPD and the writer: hits and peaks in
the files and on the device match the simulators' ground truth, and nothing is lost when triage lags."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest
import tango

from detpipe.devices.agipd_detector import AgipdDetector
from detpipe.devices.eiger_detector import EigerDetector
from detpipe.devices.hit_finder import HitFinder
from detpipe.devices.nexus_writer import NexusWriter
from detpipe.simulators import AgipdSimulator, EigerSimulator
from tests.device_servers import device_server
from tests.integration.test_agipd_slice import run
from tests.integration.test_eiger_slice import acquire, configure
from tests.pipeline.core.test_settings_document import ALIAS_BOMB
from tests.waiting import wait_until

DETECTOR, HIT_FINDER, WRITER = "test/detector/1", "test/hitfinder/1", "test/writer/1"
WORKERS_START_S = 240.0  # first start on a fresh checkout compiles peakfinder8 in every worker


@contextmanager
def triage_server(detector_class: type, detector_props: dict, data_root: Path,
                  **finder_props: object) -> Iterator[tuple[tango.DeviceProxy, ...]]:
    devices = [
        {"class": detector_class, "devices": [{"name": DETECTOR, "properties": {
            "WriterDevice": WRITER, "HitFinderDevice": HIT_FINDER, **detector_props}}]},
        {"class": HitFinder, "devices": [{"name": HIT_FINDER, "properties": {"Workers": 2, **finder_props}}]},
        {"class": NexusWriter, "devices": [{"name": WRITER, "properties": {
            "DataRoots": [str(data_root)], "BufferFrames": 256, "TrainsPerSequence": 8}}]},
    ]
    with device_server(devices, timeout_s=60) as ctx:
        detector, finder, writer = (ctx.get_device(name) for name in (DETECTOR, HIT_FINDER, WRITER))
        wait_until(finder.State, lambda s: s != tango.DevState.INIT, WORKERS_START_S, "HitFinder State")
        writer.saving_directory = str(data_root)
        yield detector, finder, writer


def eiger_props(sim: EigerSimulator) -> dict:
    return {"DetectorUrl": sim.rest_url, "StreamEndpoint": sim.stream_endpoint, "StreamTimeout": 5.0}


def near(found: np.ndarray, x: float, y: float, tolerance_px: float = 1.0) -> bool:
    return bool(found.size) and bool(np.min(np.hypot(found[:, 0] - x, found[:, 1] - y)) <= tolerance_px)


def test_hits_and_peak_positions_in_the_master_match_the_simulated_truth(eiger_sim: EigerSimulator,
                                                                          data_root: Path) -> None:
    frames = 60
    with triage_server(EigerDetector, eiger_props(eiger_sim), data_root) as (detector, finder, writer):
        configure(detector, writer, data_root, frames, frames_per_file=25)
        assert acquire(detector) == "Ready", detector.Status()
        truth = [eiger_sim.frames.truth(i) for i in range(frames)]
        true_hits = sum(t.is_hit for t in truth)
        assert finder.frames_triaged == frames and finder.frames_not_triaged == 0
        assert finder.hits == true_hits and finder.misses == frames - true_hits
        assert sum(finder.peaks_histogram) == frames
        last_hit = max(i for i, t in enumerate(truth) if t.is_hit)
        hit_pixels = eiger_sim.frames.pixels(last_hit)
        gaps_at_zero = np.where(hit_pixels == eiger_sim.frames.masked_value, 0, hit_pixels).astype(np.float32)
        np.testing.assert_array_equal(finder.last_hit_image, gaps_at_zero)  # no 65535 to blind a viewer
        overlay = (finder.last_hit_peaks_x, finder.last_hit_peaks_y)
        assert json.loads(finder.active_config)["min_peaks"] == finder.min_peaks
        master = Path(writer.master_file)
    with h5py.File(master) as f:
        is_hit = f["/entry/process_01/results/is_hit"][()]
        n_stored = f["/entry_1/result_1/nPeaks"][()]
        xs, ys = f["/entry_1/result_1/peakXPosRaw"][()], f["/entry_1/result_1/peakYPosRaw"][()]
        assert f["/entry_1/data_1/data"].shape[0] == frames
    np.testing.assert_array_equal(is_hit, [int(t.is_hit) for t in truth])
    n_last = n_stored[last_hit]
    assert n_last > 0  # the overlay attributes hold the last hit's stored peaks
    np.testing.assert_array_equal(overlay, (xs[last_hit, :n_last], ys[last_hit, :n_last]))
    peaks = [(p, np.stack([xs[i, :n_stored[i]], ys[i, :n_stored[i]]], axis=1))
             for i, t in enumerate(truth) for p in t.peaks]
    recovered = sum(near(found, p.x, p.y) for p, found in peaks)
    assert recovered >= 0.95 * len(peaks), f"{recovered} of {len(peaks)} true peaks found within 1 px"
    assert all(n_stored[i] == 0 for i, t in enumerate(truth) if not t.is_hit)


def test_saturated_peaks_of_realistic_frames_veto_hits_at_the_detectors_count_cutoff(data_root: Path) -> None:
    """The simulator's realistic preset saturates 2 % of its peaks (their centre pixel at the count-rate cut-off,
    countrate_correction_count_cutoff); saturation_value 0 takes that cut-off from the series header."""
    frames = 40
    with EigerSimulator(model="1M", host="127.0.0.1", rest_port=0, stream_port=0, seed=6, paced=False,
                        hit_fraction=0.8, peaks_per_hit=(40, 60), difficulty="realistic") as sim:
        with triage_server(EigerDetector, eiger_props(sim), data_root) as (detector, finder, writer):
            finder.max_saturated_peaks = 0
            configure(detector, writer, data_root, frames, frames_per_file=100)
            assert acquire(detector) == "Ready", detector.Status()
            truth = [sim.frames.truth(i) for i in range(frames)]
            saturated = [any(p.saturated for p in t.peaks) for t in truth]
            assert 3 <= sum(saturated) < sum(t.is_hit for t in truth)  # enough of both kinds of hit
            assert json.loads(finder.active_config)["saturation_value"] == sim.frames.saturation_value
            assert finder.saturated_frames == sum(saturated)
            assert finder.hits == sum(t.is_hit and not s for t, s in zip(truth, saturated, strict=True))
            master = Path(writer.master_file)
    with h5py.File(master) as f:
        is_hit = f["/entry/process_01/results/is_hit"][()]
    np.testing.assert_array_equal(is_hit, [int(t.is_hit and not s) for t, s in zip(truth, saturated, strict=True)])


def test_frames_beyond_the_triage_backlog_are_written_untriaged_and_counted(data_root: Path) -> None:
    frames = 80
    with EigerSimulator(model="4M", host="127.0.0.1", rest_port=0, stream_port=0, seed=3, paced=False,
                        distinct_frames=4) as sim:
        with triage_server(EigerDetector, eiger_props(sim), data_root, Workers=1, BypassFill=2.0) as (
                detector, finder, writer):
            configure(detector, writer, data_root, frames, frames_per_file=100, expo_s=0.002)
            assert acquire(detector) == "Ready", detector.Status()
            assert writer.frames_written == frames and detector.frames_dropped == 0
            assert finder.frames_triaged + finder.frames_not_triaged == frames
            assert json.loads(finder.not_triaged_reasons).get("backlog", 0) == finder.frames_not_triaged > 0
            assert finder.State() == tango.DevState.ALARM, finder.Status()
            frames_triaged, master = finder.frames_triaged, Path(writer.master_file)
    with h5py.File(master) as f:
        triaged = f["/entry/process_01/results/n_peaks"][()] >= 0
        untriaged_rows = f["/entry_1/result_1/nPeaks"][()][~triaged]
    assert triaged.shape == (frames,) and int(triaged.sum()) == frames_triaged
    assert not untriaged_rows.any()  # rows of frames written untriaged carry no peaks


OM_MONITOR_YAML = """
crystallography:
  broadcast_ip: null
  min_num_peaks_for_hit: 8
  max_num_peaks_for_hit: 500
peakfinder8_peak_detection:
  adc_threshold: 25.0
  minimum_snr: 5
  bad_pixel_map_filename: null
  number_of_pixel_per_bin_in_radial_statistics: 50
"""


def test_bad_parameters_are_refused_and_leave_the_parameters_unchanged(eiger_sim: EigerSimulator,
                                                                      data_root: Path) -> None:
    with triage_server(EigerDetector, eiger_props(eiger_sim), data_root) as (_, finder, _writer):
        assert re.match(r"Idle, \d+ triage workers started in \d+\.\d s", finder.Status()), finder.Status()
        finder.min_peaks = 12
        with pytest.raises(tango.DevFailed, match="max_peaks .* is below min_peaks"):
            finder.max_peaks = 5
        assert (finder.min_peaks, finder.max_peaks) == (12, 2048)
        finder.min_res = 100.0
        with pytest.raises(tango.DevFailed, match="max_res 50.0 must exceed min_res 100.0"):
            finder.max_res = 50.0
        assert finder.max_res == 0.0
        # a whole document at once, here an OM monitor.yaml: its strict hit rule becomes the inclusive one
        answer = finder.LoadParameters(OM_MONITOR_YAML)
        assert (finder.min_peaks, finder.max_peaks, finder.adc_threshold, finder.pixels_per_ring) == (9, 499, 25.0, 50)
        assert "not taken: peakfinder8_peak_detection.bad_pixel_map_filename, crystallography.broadcast_ip" in answer
        for bad, reason in (("min_num_peaks_for_hit: 8\nmin_peaks: 3", "means min_peaks 9, but min_peaks is 3"),
                            ("minimum_snr: -1\nmin_peaks: 20", "minimum_snr must be > 0"),
                            (ALIAS_BOMB, "aliases")):
            with pytest.raises(tango.DevFailed, match=reason):
                finder.LoadParameters(bad)
            assert (finder.min_peaks, finder.minimum_snr) == (9, 5.0)  # nothing of a refused document applied


def test_each_new_hit_is_announced_by_a_data_ready_event(eiger_sim: EigerSimulator, data_root: Path) -> None:
    events: list[int] = []
    seen = threading.Event()

    def on_event(event: tango.DataReadyEventData) -> None:
        if not event.err:
            events.append(event.ctr)
            seen.set()

    with triage_server(EigerDetector, eiger_props(eiger_sim), data_root) as (detector, finder, writer):
        subscription = finder.subscribe_event("last_hit_image", tango.EventType.DATA_READY_EVENT, on_event)
        try:
            configure(detector, writer, data_root, 30)
            assert acquire(detector) == "Ready", detector.Status()
            assert seen.wait(5.0), "no data-ready event for last_hit_image"
            assert events[-1] <= finder.last_hit_number == finder.hits
        finally:
            finder.unsubscribe_event(subscription)


def test_corrected_agipd_cells_are_triaged_against_the_simulated_hits(data_root: Path) -> None:
    trains = 4
    with AgipdSimulator(cells=64, product="corrected", paced=False, seed=11, hit_fraction=0.15) as sim:
        props = {"BridgeEndpoint": sim.endpoint, "BridgeSocket": "REQ", "StreamTimeout": 30.0}
        # BypassFill 100: every cell waits for a worker, so a loaded CI box cannot turn cells into backlog skips.
        with triage_server(AgipdDetector, props, data_root, BypassFill=100.0) as (detector, finder, writer):
            assert run(detector, trains) == "Ready", detector.Status()
            truth = [sim.truth.train(k) for k in range(trains)]
            true_hits = np.concatenate([t.hits for t in truth])
            assert finder.frames_triaged == trains * 64 and writer.frames_written == trains * 64
            assert finder.hits == int(true_hits.sum())
            assert finder.last_hit_image.shape == (16 * 512, 128)
            master = Path(writer.master_file)
    with h5py.File(master) as f:
        np.testing.assert_array_equal(f["/entry/process_01/results/is_hit"][()], true_hits.astype(np.int8))
        n_stored, ss = f["/entry_1/result_1/nPeaks"][()], f["/entry_1/result_1/peakYPosRaw"][()]
    first_hit = int(np.argmax(true_hits))
    module_rows = ss[first_hit, :n_stored[first_hit]] // 512
    true_modules = {p.module for p in truth[first_hit // 64].peaks_in(first_hit % 64)}
    assert module_rows.size >= 15 and set(module_rows.astype(int)) <= true_modules


@pytest.mark.parametrize("prop", ["MaskFile", "GeometryFile"])
def test_a_mask_or_geometry_file_that_cannot_be_used_faults_the_hit_finder_alone(
        eiger_sim: EigerSimulator, data_root: Path, tmp_path: Path, prop: str) -> None:
    """A wrong mask used to be accepted: every frame then went untriaged, with the reason only in the log."""
    unusable = tmp_path / ("mask.npy" if prop == "MaskFile" else "detector.geom")
    unusable.write_text("not an array" if prop == "MaskFile" else "p0/min_fs = 0\np0/fs = sideways\n")
    with triage_server(EigerDetector, eiger_props(eiger_sim), data_root, **{prop: str(unusable)}) as (
            detector, finder, writer):
        assert finder.State() == tango.DevState.FAULT
        assert finder.Status().startswith(f"{prop} {unusable} cannot be used") and "\n" not in finder.Status()
        assert writer.State() == tango.DevState.ON and detector.State() != tango.DevState.FAULT


def test_a_crystfel_geometry_file_lays_out_the_detector_and_its_bad_region_hides_the_peaks_behind_it(
        eiger_sim: EigerSimulator, data_root: Path, tmp_path: Path) -> None:
    """A geometry file for the simulated detector: the beam where the simulator puts it (pixel index (bcx, bcy),
    i.e. half a pixel from the corner beyond it), fast scan along −x, and a bad region over the left half."""
    frames = 30
    (height, width), (bcx, bcy) = eiger_sim.frames.shape, eiger_sim.frames.beam_center
    half = width // 2
    geometry = tmp_path / "simulated-1M.geom"
    geometry.write_text("\n".join([
        "dim0 = %", "dim1 = ss", "dim2 = fs", "data = /entry/data/data",
        "p0/min_fs = 0", f"p0/max_fs = {width - 1}", "p0/min_ss = 0", f"p0/max_ss = {height - 1}",
        "p0/fs = -1.0x", "p0/ss = -1.0y", f"p0/corner_x = {bcx + 0.5}", f"p0/corner_y = {bcy + 0.5}",
        "badleft/min_fs = 0", f"badleft/max_fs = {half - 1}", "badleft/min_ss = 0", f"badleft/max_ss = {height - 1}",
        "badleft/panel = p0", ""]))
    with triage_server(EigerDetector, eiger_props(eiger_sim), data_root, GeometryFile=str(geometry)) as (
            detector, finder, writer):
        assert f"(from {geometry})" in finder.Status()
        configure(detector, writer, data_root, frames, frames_per_file=100)
        assert acquire(detector) == "Ready", detector.Status()
        assert finder.frames_triaged == frames and finder.frames_not_triaged == 0
        master = Path(writer.master_file)
    with h5py.File(master) as f:
        n_stored = f["/entry_1/result_1/nPeaks"][()]
        xs, ys = f["/entry_1/result_1/peakXPosRaw"][()], f["/entry_1/result_1/peakYPosRaw"][()]
    truth = [eiger_sim.frames.truth(i) for i in range(frames)]
    found = [np.stack([xs[i, :n], ys[i, :n]], axis=1) for i, n in enumerate(n_stored)]
    assert sum(n_stored) > 0 and all(f[:, 0].min(initial=half) >= half - 0.5 for f in found)  # none behind the region
    visible = [(p, found[i]) for i, t in enumerate(truth) for p in t.peaks if p.x >= half + 2]
    recovered = sum(near(where, p.x, p.y) for p, where in visible)
    assert recovered >= 0.95 * len(visible), f"{recovered} of {len(visible)} peaks outside the bad region found"
