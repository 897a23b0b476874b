"""The ``detpipe`` command: demo, simulators and the device server behind one entry point."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(output=args.output, frames=args.frames, model=args.model)


def _sim(args: argparse.Namespace) -> int:
    if args.detector == "eiger":
        from detpipe.simulators.eiger_cli import main as eiger_main

        return eiger_main(args.sim_args)
    raise SystemExit(f"unknown simulator {args.detector!r}")


def _server(args: argparse.Namespace) -> int:
    from .server import run_server

    run_server(args.instance, args.tango_args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detpipe", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="Python logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="simulator → devices → NXmx files on an embedded Tango database")
    demo.add_argument("--output", type=Path, default=None, help="folder for the run (default: ./detpipe-demo/<time>)")
    demo.add_argument("--frames", type=int, default=200, help="frames to acquire (default 200)")
    demo.add_argument("--model", default="4M", help="EIGER2 model of the simulator (default 4M)")
    demo.set_defaults(func=_demo)

    sim = sub.add_parser("sim", help="run a detector simulator (eiger)")
    sim.add_argument("detector", choices=["eiger"])
    sim.add_argument("sim_args", nargs=argparse.REMAINDER, help="simulator options (see detpipe sim eiger --help)")
    sim.set_defaults(func=_sim)

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
