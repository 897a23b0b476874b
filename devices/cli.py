"""The ``detpipe`` command: demo, simulators and the device server behind one entry point."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(output=args.output, frames=args.frames, model=args.model, detector=args.detector,
                    trains=args.trains, cells=args.cells)


def _sim(args: argparse.Namespace) -> int:
    if args.detector == "eiger":
        from detpipe.simulators.eiger_cli import main as eiger_main

        return eiger_main(args.sim_args)
    from detpipe.simulators.agipd_cli import main as agipd_main

    return agipd_main(args.sim_args)


def _server(args: argparse.Namespace) -> int:
    from .server import run_server

    run_server(args.instance, args.tango_args)
    return 0


def _reduce(args: argparse.Namespace) -> int:
    from .reduce_command import run_reduce

    return run_reduce(args.raw, policy_file=args.policy, config_from=args.config_from, output=args.output)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detpipe", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="Python logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="simulator -> devices -> files on an embedded Tango database")
    demo.add_argument("--output", type=Path, default=None, help="folder for the run (default: ./detpipe-demo/<time>)")
    demo.add_argument("--frames", type=int, default=200, help="frames to acquire (default 200)")
    demo.add_argument("--detector", choices=["eiger", "agipd"], default="eiger", help="which slice to run")
    demo.add_argument("--model", default="4M", help="EIGER2 model of the simulator (default 4M)")
    demo.add_argument("--trains", type=int, default=20, help="AGIPD: trains to acquire (default 20)")
    demo.add_argument("--cells", type=int, default=64, help="AGIPD: memory cells per train (default 64)")
    demo.set_defaults(func=_demo)

    sim = sub.add_parser("sim", help="run a detector simulator (eiger, agipd)")
    sim.add_argument("detector", choices=["eiger", "agipd"])
    sim.add_argument("sim_args", nargs=argparse.REMAINDER, help="simulator options (see detpipe sim eiger --help)")
    sim.set_defaults(func=_sim)

    reduce = sub.add_parser("reduce", help="apply a data policy to an archived raw series or run (same code as online)")
    reduce.add_argument("raw", type=Path, help="Eiger series master <stem>_master.h5, or AGIPD run directory r<run>")
    source = reduce.add_mutually_exclusive_group(required=True)
    source.add_argument("--policy", type=Path, help="YAML/JSON data policy (DataPolicy attribute names)")
    source.add_argument("--config-from", type=Path, help="a RED file: reuse the policy stored in its NXnote")
    reduce.add_argument("-o", "--output", type=Path, required=True, help="run directory for red/ and the manifest")
    reduce.set_defaults(func=_reduce)

    server = sub.add_parser("server", help="run the detpipe device server instance registered in TANGO_HOST")
    server.add_argument("instance")
    server.add_argument("tango_args", nargs=argparse.REMAINDER, help="options for the Tango kernel, e.g. -v4")
    server.set_defaults(func=_server)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
