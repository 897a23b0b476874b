"""The ``detpipe`` command: demo, simulators, the device server and its Tango database behind one entry point."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from detpipe.pipeline.core.software_version import detpipe_version
from detpipe.pipeline.report.run_digest import MAX_PROJECTED_FRAMES
from detpipe.simulators.cli_options import tcp_port
from detpipe.simulators.detector_models import DetectorModel

from ..server_names import STARTER_SERVER_NAME
from .user_error import UserError


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(output=args.output, frames=args.frames, model=args.model, detector=args.detector,
                    trains=args.trains, cells=args.cells, receivers=args.receivers)


def _sim(args: argparse.Namespace) -> int:
    if args.detector == "eiger":
        from detpipe.simulators.eiger_cli import main as eiger_main

        return eiger_main(args.sim_args)
    from detpipe.simulators.agipd_cli import main as agipd_main

    return agipd_main(args.sim_args)


def _server(args: argparse.Namespace) -> int:
    from ..server import run_server
    from ..server_names import SERVER_NAME
    from .huge_page_buffers import restart_with_huge_page_buffers
    from .server_checks import check_server_can_start

    restart_with_huge_page_buffers()  # before any check opens a socket: the process is replaced
    server_name = getattr(args, "server_name", SERVER_NAME)
    check_server_can_start(server_name, args.instance, args.tango_args, host=args.host, port=args.port)
    run_server(args.instance, args.tango_args, host=args.host, port=args.port, server_name=server_name)
    return 0


def _reduce(args: argparse.Namespace) -> int:
    from .reduce_command import run_reduce

    return run_reduce(args.raw, policy_file=args.policy, config_from=args.config_from, output=args.output,
                      workers=args.workers, scheduler=args.scheduler)


def _report(args: argparse.Namespace) -> int:
    from .report_command import run_report

    return run_report(args.run, output=args.output, max_frames=args.max_frames)


def _geom(args: argparse.Namespace) -> int:
    from .geom_command import run_geom

    return run_geom(args.run, output=args.output, clen_m=args.clen, photon_energy_ev=args.photon_energy)


def _recover(args: argparse.Namespace) -> int:
    from .recover_command import run_recover

    return run_recover(args.path)


def _db_start(args: argparse.Namespace) -> int:
    from .db_commands import run_db_start

    return run_db_start(host=args.host, port=args.port, sqlite=args.sqlite)


def _register(args: argparse.Namespace) -> int:
    from .db_commands import run_register

    return run_register(args.file, variables=dict(args.var), dry_run=args.dry_run)


def _export(args: argparse.Namespace) -> int:
    from .db_commands import run_export

    return run_export(args.server, output=args.output)


def _ip_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"needs an IP address such as 127.0.0.1, got {text!r}") from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"needs a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs a whole number of at least 1, got {text!r}")
    return value


def _variable(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` of ``register --var``; the value may itself contain ``=``."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"needs NAME=VALUE, got {text!r}")
    return name, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detpipe", description=__doc__)
    parser.add_argument("--version", action="version", version=f"detpipe {detpipe_version()}")
    _add_common_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="simulator -> devices -> files on an embedded Tango database")
    demo.add_argument("--output", type=Path, default=None, help="folder for the run (default: ./detpipe-demo/<time>)")
    demo.add_argument("--frames", type=int, default=200, help="frames to acquire (default 200)")
    demo.add_argument("--detector", choices=["eiger", "agipd"], default="eiger", help="which slice to run")
    demo.add_argument("--model", default=DetectorModel.EIGER2_4M.value, choices=[m.value for m in DetectorModel],
                      help="EIGER2 model of the simulator (default 4M)")
    demo.add_argument("--trains", type=int, default=20, help="AGIPD: trains to acquire (default 20)")
    demo.add_argument("--cells", type=int, default=64, help="AGIPD: memory cells per train (default 64)")
    demo.add_argument("--receivers", type=int, default=1,
                      help="2: EIGER, the stream spread over two receiver servers, each writing its own files, "
                           "under one stitched master (config/demo-eiger-receivers.yaml); AGIPD, two module groups "
                           "(modules 0-7, 8-15) on their own bridges and servers, writing one run "
                           "(config/demo-agipd-groups.yaml). Default 1")
    demo.set_defaults(func=_demo)

    sim = sub.add_parser("sim", help="run a detector simulator (eiger, agipd)")
    sim.add_argument("detector", choices=["eiger", "agipd"])
    sim.add_argument("sim_args", nargs=argparse.REMAINDER, help="simulator options (see detpipe sim eiger --help)")
    sim.set_defaults(func=_sim)

    reduce = sub.add_parser(
        "reduce", help="apply a data policy to archived raw series or runs (same code as online), many on Dask",
        description="Apply a data policy to archived raw series or runs. One RAW is reduced in this process into "
                    "the run directory -o. Several (RAW given more than once, or as a quoted glob pattern), or "
                    "--workers/--scheduler, run as one Dask task a series: each series goes to -o/<its name> "
                    "(the Eiger stem or the AGIPD run directory r<run>), exactly as reducing it alone there would "
                    "write it. A series that fails is reported with its reason; the others complete (exit 1).")
    reduce.add_argument("raw", nargs="+", help="Eiger series master <stem>_master.h5, or AGIPD run directory r<run>; "
                                               "a quoted glob pattern (e.g. 'data/*/raw/*_master.h5') for many")
    source = reduce.add_mutually_exclusive_group(required=True)
    source.add_argument("--policy", type=Path, help="YAML/JSON data policy (DataPolicy attribute names)")
    source.add_argument("--config-from", type=Path, help="a RED file: reuse the policy stored in its NXnote")
    reduce.add_argument("-o", "--output", type=Path, required=True,
                        help="run directory for red/ and the manifest; with many series, the directory of their run "
                             "directories")
    cluster = reduce.add_mutually_exclusive_group()
    cluster.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                         help="Dask workers of a local cluster on this computer, one process each (default with many "
                              "series: one per CPU core, at most 8)")
    cluster.add_argument("--scheduler", default=None, metavar="ADDRESS",
                         help="an existing Dask scheduler, e.g. tcp://host:8786 (its workers must have detpipe installed "
                              "and see the raw and output paths)")
    reduce.set_defaults(func=_reduce)

    report = sub.add_parser("report", help="quick-look HTML page and PNGs of a series or run: hit rate, peaks, "
                                           "maximum projection, virtual powder, strongest hit, RED metrics")
    report.add_argument("run", type=Path, help="an NXmx <stem>_master.h5 (raw or RED), or an AGIPD run directory r<run>")
    report.add_argument("-o", "--output", type=Path, default=None,
                        help="folder for index.html, the PNGs and report.json (default: <stem>_report beside the run)")
    report.add_argument("--max-frames", type=int, default=MAX_PROJECTED_FRAMES,
                        help=f"frames read for the maximum projection, spread evenly (default {MAX_PROJECTED_FRAMES})")
    report.set_defaults(func=_report)

    geom = sub.add_parser("geom", help="CrystFEL geometry file of a series or run, for indexamajig with its CXI peak "
                                       "list (panels, beam position, mask, peak list)")
    geom.add_argument("run", type=Path, help="an NXmx <stem>_master.h5, or a corrected AGIPD run directory r<run>")
    geom.add_argument("-o", "--output", type=Path, default=None,
                      help="file to write (default <master stem>.geom beside the master; never overwritten)")
    geom.add_argument("--clen", type=_positive_float, default=None, metavar="METRES",
                      help="detector distance, instead of the master's (AGIPD masters record none)")
    geom.add_argument("--photon-energy", type=_positive_float, default=None, metavar="EV",
                      help="photon energy in eV, instead of the master's (AGIPD masters record none)")
    geom.set_defaults(func=_geom)

    recover = sub.add_parser("recover", help="rebuild the master of an EIGER series or AGIPD run whose writer died "
                                             "(links, VDS, per-frame written flags, end time)")
    recover.add_argument("path", type=Path, help="EIGER: a <stem>_master.h5, or a directory (every master in it); "
                                                 "AGIPD: a run directory of module sequence files")
    recover.set_defaults(func=_recover)

    server = sub.add_parser("server", help="run the detpipe device server instance registered in TANGO_HOST",
                            epilog=_TANGO_OPTIONS)
    _add_server_arguments(server)

    db = sub.add_parser("db", help="the embedded Tango database, for labs without one (production: TANGO_HOST's)")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_start = db_sub.add_parser("start", help="run pytango's DataBaseds on sqlite in the foreground; Ctrl-C stops it")
    db_start.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    db_start.add_argument("--port", type=tcp_port, default=10000,
                          help="TCP port (default 10000, Tango's; 0 = any free one)")
    db_start.add_argument("--sqlite", type=Path, default=Path("tango_database.db"),
                          help="database file, created if missing (default ./tango_database.db)")
    db_start.set_defaults(func=_db_start)

    register = sub.add_parser("register", help="write a config/*.yaml (or exported JSON) to TANGO_HOST's database")
    register.add_argument("file", type=Path, help="YAML or dsconfig JSON: servers, devices, properties")
    register.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
    register.add_argument("--var", type=_variable, action="append", default=[], metavar="NAME=VALUE",
                          help="value of a ${NAME} placeholder in the file (repeat for several)")
    register.set_defaults(func=_register)

    export = sub.add_parser("export", help="dsconfig JSON of detpipe servers in TANGO_HOST's database")
    export.add_argument("--server", action="append", default=[], metavar="detpipe/INSTANCE",
                        help="server to export (repeat; wildcards allowed); default every detpipe/* server")
    export.add_argument("-o", "--output", type=Path, default=None, help="file to write (default stdout)")
    export.set_defaults(func=_export)
    return parser


_TANGO_OPTIONS = "Options not listed here go to the Tango kernel, e.g. -v4 for its trace level."


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="INFO", type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], help="Python logging level")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")


def _add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """``detpipe server`` and ``DetpipeServer`` take the same line: INSTANCE, the interface, Tango options."""
    parser.add_argument("instance", metavar="INSTANCE", help="server instance, as registered in TANGO_HOST's database")
    parser.add_argument("--host", type=_ip_address, default=None,
                        help="IP address of the one interface to listen on, for requests and events (e.g. 127.0.0.1 "
                             "for this computer only); default: Tango's convention, every interface unless "
                             "omniORB's ORBendPoint says otherwise")
    parser.add_argument("--port", type=tcp_port, default=0,
                        help="TCP port for requests (default 0: chosen by the system)")
    parser.set_defaults(func=_server, takes_tango_args=True)  # any other option goes to the Tango kernel (-v4)


def parse_command_line(argv: Sequence[str] | None = None,
                       parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """The command's arguments; ``tango_args`` holds the options meant for the Tango kernel (``server`` only),
    wherever they stand on the line."""
    parser = parser or build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "takes_tango_args", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.tango_args = extra
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_command_line(argv)
    command = " ".join(filter(None, ("detpipe", args.command, getattr(args, "db_command", None))))
    return run_command(args, command)


def server_main(argv: Sequence[str] | None = None) -> int:
    """``DetpipeServer INSTANCE``: the device server under an executable name of its own, as Tango's Starter
    wants it (Starter runs ``<server name> <instance>`` from its StartDsPath; docs/deployment.md). The server
    name is that executable's, so the database holds ``DetpipeServer/<instance>``."""
    parser = argparse.ArgumentParser(prog=STARTER_SERVER_NAME, epilog=_TANGO_OPTIONS,
                                     description="Run the detpipe device server DetpipeServer/INSTANCE registered "
                                                 "in TANGO_HOST's database.")
    _add_common_arguments(parser)
    _add_server_arguments(parser)
    parser.set_defaults(server_name=STARTER_SERVER_NAME)
    return run_command(parse_command_line(argv, parser), STARTER_SERVER_NAME)


def run_command(args: argparse.Namespace, command: str) -> int:
    """The one place errors become what a user reads: a UserError is one line and exit 2, Ctrl-C one line and
    exit 130 (whatever the command started is stopped on the way out), any other failure one line and exit 1;
    ``--debug`` lets the exception through with its traceback instead."""
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        if args.debug:
            raise
        return _say(f"{command}: error: {err}", 2)
    except KeyboardInterrupt:
        if args.debug:
            raise
        return _say(f"{command}: interrupted; everything it started is stopped", 130)
    except Exception as err:
        if args.debug:
            raise
        return _say(f"{command}: error: {type(err).__name__}: {_first_line(err)} (--debug shows the traceback)", 1)


def _first_line(err: Exception) -> str:
    import tango  # only here: most errors never need it

    text = err.args[0].desc if isinstance(err, tango.DevFailed) else str(err)  # a DevFailed's str is its whole stack
    return (text.strip().splitlines() or [""])[0]


def _say(line: str, exit_code: int) -> int:
    print(line, file=sys.stderr, flush=True)
    return exit_code

