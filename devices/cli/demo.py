"""``detpipe demo``: simulator → devices → NXmx files, on an embedded Tango database.

Everything it starts (database, simulator, device server) is a child process stopped by PID at the
end, whatever happens. Prints a summary a beamline user can check against the files.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import tango

from detpipe.pipeline.crystfel.run_geometry import write_run_geometry
from detpipe.pipeline.report.quick_look import write_quick_look

from ..state_wait import AcquisitionFailed, prepare, wait_until_saved, wait_while_state
from ..tangodb.config_model import load_database_config
from ..tangodb.server_config import register
from .embedded_database import EmbeddedTangoDatabase, free_tcp_port
from .managed_process import ManagedProcess
from .progress import Progress
from .user_error import UserError, make_output_directory

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"  # the checkout's config/, next to devices/
DETECTOR, WRITER, HIT_FINDER = "eiger/detector/1", "eiger/writer/1", "eiger/hitfinder/1"
RECEIVER_WRITER = "eiger/receiver-writer/{}"  # config/demo-eiger-receivers.yaml
DEMO_RECEIVERS = (1, 2)  # the whole stream in one server, or the two-receiver topology
AGIPD, AGIPD_WRITER = "spb/agipd1m/1", "spb/writer/1"
AGIPD_GROUP_WRITER = "spb/writer/2"  # config/demo-agipd-groups.yaml: the second module group's writer
EXPO_TIME_S = 0.002
AGIPD_RAW_FRAME_BYTES = 16 * 2 * 512 * 128 * 2  # 16 modules of analog + digital uint16 512 × 128 pixels
PROGRESS_EVERY_S = 1.0
ACQUISITION_TIMEOUT_S = 600.0
CONNECT_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class DemoSummary:
    """What the demo prints: (label, value) rows; ``ok`` decides the exit code."""

    rows: tuple[tuple[str, str], ...]
    ok: bool
    run: Path  # what ``detpipe report`` reads: the series master or the AGIPD run directory

    def lines(self) -> list[str]:
        width = max(len(label) for label, _ in self.rows)
        return [f"{label:<{width}} {value}" for label, value in self.rows]


def config_file(name: str) -> Path:
    """A demo YAML: next to the sources in a checkout, else in the working directory."""
    for candidate in (CONFIG_DIR / name, Path.cwd() / "config" / name):
        if candidate.exists():
            return candidate
    raise UserError(f"config/{name} not found (looked in {CONFIG_DIR} and ./config); run the demo from a detpipe "
                    "checkout, or where its config/ folder is")


def check_counts(**counts: int) -> None:
    """Every count the user gave is at least one: checked before anything starts."""
    for option, value in counts.items():
        if value < 1:
            raise UserError(f"--{option} must be at least 1, got {value}")


def new_output_directory(output: Path | None) -> Path:
    """The run's folder, created; a folder holding an earlier demo run is refused, since its files would be
    claimed again (the writer never overwrites) and its database reused."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    output = (output or Path.cwd() / "detpipe-demo" / stamp).resolve()
    earlier = [path for path in (output / "tango_database.db", output / "data") if path.exists()]
    if earlier:
        raise UserError(f"--output {output} already holds a demo run ({earlier[0].name}); give a new --output "
                        "or remove that folder")
    return make_output_directory(output, "--output")


def demo_config(detector: str, receivers: int) -> Path:
    spread = "demo-agipd-groups.yaml" if detector == "agipd" else "demo-eiger-receivers.yaml"
    if receivers not in DEMO_RECEIVERS:
        raise UserError(f"--receivers {receivers}: the demo runs 1 or 2 receivers (config/{spread} is the "
                        "two-receiver topology; copy it for more)")
    return config_file(spread if receivers > 1 else f"demo-{detector}.yaml")


def demo_servers(detector: str, receivers: int) -> list[str]:
    """The device server instances of the demo's topology, the controlling one last (its devices reach the
    others at start-up): an EIGER's receivers, or an AGIPD's second module group (the first is the demo's own)."""
    if receivers == 1:
        return ["demo"]
    first = 2 if detector == "agipd" else 1
    return [*(f"receiver-{k}" for k in range(first, receivers + 1)), "demo"]


def run_demo(*, output: Path | None, frames: int = 200, model: str = "4M", detector: str = "eiger",
             trains: int = 20, cells: int = 64, receivers: int = 1) -> int:
    check_counts(frames=frames, trains=trains, cells=cells)
    config = demo_config(detector, receivers)
    output = new_output_directory(output)
    data_root = output / "data"
    data_root.mkdir()
    detpipe = [sys.executable, "-m", "detpipe.devices.cli"]
    ports = {"EIGER_REST_PORT": free_tcp_port(), "EIGER_STREAM_PORT": free_tcp_port(),
             "AGIPD_BRIDGE_PORT": free_tcp_port(), "AGIPD_BRIDGE_PORT_2": free_tcp_port(),
             "FAN_OUT_PORT_1": free_tcp_port(), "FAN_OUT_PORT_2": free_tcp_port()}
    if detector == "eiger":
        simulator = [*detpipe, "sim", "eiger", "--model", model, "--rest-port", str(ports["EIGER_REST_PORT"]),
                     "--stream-port", str(ports["EIGER_STREAM_PORT"]), "--seed", "1", "--hit-fraction", "0.1"]
        ready = "EIGER simulator ready"
    else:
        bridges = ["--port", str(ports["AGIPD_BRIDGE_PORT"])] if receivers == 1 else \
            ["--group-ports", str(ports["AGIPD_BRIDGE_PORT"]), str(ports["AGIPD_BRIDGE_PORT_2"])]
        simulator = [*detpipe, "sim", "agipd", *bridges, "--socket", "REP",
                     "--product", "raw", "--cells", str(cells), "--seed", "1", "--hit-fraction", "0.1"]
        ready = "AGIPD simulator ready"
    with ExitStack() as stack:
        print(f"[demo] starting embedded Tango database (sqlite in {output})", flush=True)
        db = stack.enter_context(EmbeddedTangoDatabase(output / "tango_database.db"))
        register(db.client(), load_database_config(config, {
            **{name: str(port) for name, port in ports.items()}, "DATA_ROOT": str(data_root)}))
        print(f"[demo] TANGO_HOST={db.tango_host}; starting the {detector} simulator", flush=True)
        stack.enter_context(ManagedProcess(simulator, ready_marker=ready))
        for instance in demo_servers(detector, receivers):
            print(f"[demo] starting device server detpipe/{instance} (listening on 127.0.0.1 only)", flush=True)
            stack.enter_context(ManagedProcess([*detpipe, "server", instance, "--host", "127.0.0.1"],
                                               ready_marker="Ready to accept request",
                                               env={"TANGO_HOST": db.tango_host}))
        os.environ["TANGO_HOST"] = db.tango_host
        if detector == "agipd":
            summary = acquire_agipd(trains, cells, data_root, receivers)
        elif receivers > 1:
            summary = acquire_spread(frames, receivers, data_root)
        else:
            summary = acquire(frames, data_root)
    print(f"[demo] writing the quick-look report of {summary.run.name}", flush=True)
    progress = Progress("[demo] report", "frame", sys.stdout)
    try:
        report = write_quick_look(summary.run, output / "report", progress)
    finally:
        progress.close()
    rows = (*summary.rows, ("report", str(report.page)))
    if detector == "eiger":  # CrystFEL reads photons: the AGIPD demo's raw run gets its geometry once corrected
        rows = (*rows, ("CrystFEL geometry", str(write_run_geometry(summary.run))))
    print("[demo] summary")
    for line in dataclasses.replace(summary, rows=rows).lines():
        print(f"  {line}")
    return 0 if summary.ok else 1


def set_up_series(detector: tango.DeviceProxy, writer: tango.DeviceProxy, frames: int, directory: Path) -> None:
    configure_writer(writer, directory)
    detector.acq_nb_frames = frames
    detector.acq_expo_time = EXPO_TIME_S
    detector.compression_type = "bslz4"


def configure_writer(writer: tango.DeviceProxy, directory: Path) -> None:
    writer.saving_directory = str(directory)
    writer.saving_prefix = "demo_$id"
    writer.saving_frame_per_file = 100


def acquire(frames: int, data_root: Path) -> DemoSummary:
    detector, writer, hit_finder = (tango.DeviceProxy(name) for name in (DETECTOR, WRITER, HIT_FINDER))
    set_up_series(detector, writer, frames, data_root)
    progress = Progress("[demo] series", "frame", sys.stdout)
    elapsed = prepare_and_run(detector, lambda: progress(writer.frames_written, frames,
                                                          f"{writer.bytes_written / 1e6:.0f} MB written"))
    progress.close()
    _say(f"hit finder: {hit_finder.Status()}")  # how long its workers took to start (compiling peakfinder8)
    received, written = detector.frames_received, writer.frames_written
    return DemoSummary(rows=(
        ("frames acquired", str(received)),
        ("frames written", str(written)),
        ("frames lost", str(frames - written)),
        ("frames triaged", str(hit_finder.frames_triaged)),
        ("hits", f"{hit_finder.hits} ({100.0 * hit_finder.hits / max(frames, 1):.1f}%; simulated 10%)"),
        ("MB written", f"{writer.bytes_written / 1e6:.1f}"),
        ("compression ratio", f"{writer.compression_ratio:.2f}"),
        ("frames/s", f"{written / elapsed if elapsed > 0 else 0.0:.1f}"),
        ("master file", writer.master_file),
    ), ok=written == frames, run=Path(writer.master_file))


def acquire_spread(frames: int, receivers: int, data_root: Path) -> DemoSummary:
    """The two-receiver topology: each receiver's writer in its own folder, the master in ``data_root``."""
    detector, writer = tango.DeviceProxy(DETECTOR), tango.DeviceProxy(WRITER)
    set_up_series(detector, writer, frames, data_root)
    for k in range(1, receivers + 1):
        configure_writer(tango.DeviceProxy(RECEIVER_WRITER.format(k)), data_root / f"receiver-{k}")
    progress = Progress("[demo] series", "frame", sys.stdout)
    elapsed = prepare_and_run(detector, lambda: progress(detector.receivers_frames_written, frames,
                                                          f"over {receivers} receivers"))
    progress.close()
    for line in detector.receivers_status:
        _say(line)
    received, written, hits = detector.frames_received, detector.receivers_frames_written, detector.receivers_hits
    return DemoSummary(rows=(
        ("receivers", str(receivers)),
        ("frames acquired", str(received)),
        ("frames written", str(written)),
        ("frames lost", str(frames - written)),
        ("hits", f"{hits} ({100.0 * hits / max(frames, 1):.1f}%; simulated 10%)"),
        ("frames/s", f"{written / elapsed if elapsed > 0 else 0.0:.1f}"),
        ("master file", writer.master_file),
    ), ok=written == frames, run=Path(writer.master_file))


def acquire_agipd(trains: int, cells: int, data_root: Path, receivers: int) -> DemoSummary:
    """One run; with two receivers, each module group's writer writes its modules into the same run directory."""
    detector, writer = tango.DeviceProxy(AGIPD), tango.DeviceProxy(AGIPD_WRITER)
    writers = [writer, *([tango.DeviceProxy(AGIPD_GROUP_WRITER)] if receivers > 1 else [])]
    for each in writers:
        each.saving_directory = str(data_root)
    detector.run_number = 1
    detector.acq_nb_trains = trains
    print(f"[demo] run 1: {trains} trains × {cells} cells = {trains * cells} frames, "
          f"{trains * cells * AGIPD_RAW_FRAME_BYTES / 1e9:.1f} GB of raw pixels to write (uncompressed, as the "
          f"European XFEL DAQ writes raw data){' by two module groups' if receivers > 1 else ''}", flush=True)

    def on_disk() -> tuple[int, float]:
        """Frames of the run every writer has written (each holds its modules of every frame), and MB in all."""
        return min(w.frames_written for w in writers), sum(w.bytes_written for w in writers) / 1e6

    progress = Progress("[demo] run 1", "train", sys.stdout)

    def report() -> None:
        frames, megabytes = on_disk()
        progress(frames // cells, trains, f"{megabytes:.0f} MB written")

    elapsed = prepare_and_run(detector, report)
    progress.close()
    for line in detector.module_groups_status:
        _say(line)
    received, (written, megabytes) = detector.frames_received, on_disk()
    groups = (("module groups", f"{receivers} (modules 0-7 here, 8-15 in detpipe/receiver-2)"),) * (receivers > 1)
    return DemoSummary(rows=(
        *groups,
        ("trains", str(detector.trains_received)),
        ("frames", str(received)),
        ("frames lost", str(received - written)),
        ("MB written", f"{megabytes:.1f}"),
        ("trains/s", f"{detector.trains_received / elapsed if elapsed > 0 else 0.0:.1f}"),
        ("run directory", str(Path(writer.master_file).parent)),
    ), ok=written == received == trains * cells and detector.State() == tango.DevState.ON,
        run=Path(writer.master_file).parent)


def prepare_and_run(detector: tango.DeviceProxy, on_progress: Callable[[], None]) -> float:
    """Prepare, Start, wait until everything is saved; returns the seconds from Start to saved. Every command
    returns at once (Tango's default 3 s client timeout is enough); the demo waits on State and acq_status.
    ``on_progress`` reports what is written, once more when all of it is, so the last line has the final sizes."""
    wait_while_state(detector, {tango.DevState.INIT}, CONNECT_TIMEOUT_S, _say)
    prepare(detector, on_status=_say)
    t0 = time.monotonic()
    detector.Start()
    status = wait_until_saved(detector, ACQUISITION_TIMEOUT_S, on_progress=on_progress,
                              progress_every_s=PROGRESS_EVERY_S)
    elapsed = time.monotonic() - t0
    if status != "Ready":
        raise AcquisitionFailed(detector, "acquisition", detector.State(), detector.Status())
    on_progress()
    _say(detector.Status())
    return elapsed


def _say(status: str) -> None:
    print(f"[demo] {status}", flush=True)
