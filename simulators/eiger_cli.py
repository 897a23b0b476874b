"""``detpipe sim eiger``: run a simulated EIGER2 DCU until SIGTERM or SIGINT.

Prints exactly one line to stdout once both servers listen, so a parent process (a test, ``make demo``)
can wait for it and read the ports:
``EIGER simulator ready rest=http://127.0.0.1:PORT stream=tcp://127.0.0.1:PORT``.
"""

from __future__ import annotations

import argparse
import logging

from .cli_options import tcp_port
from .detector_models import DetectorModel
from .eiger_simulator import EigerSimulator
from .sfx_difficulty import PRESETS
from .signal_stop import configure_cli_logging, stop_on_signal
from .simplon_parameters import API_1_8, API_VERSIONS

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detpipe sim eiger", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DetectorModel.EIGER2_4M.value, choices=[m.value for m in DetectorModel])
    parser.add_argument("--host", default="127.0.0.1", help="address both servers bind (default: loopback)")
    parser.add_argument("--rest-port", type=tcp_port, default=8000, help="SIMPLON REST port; 0 = any free port")
    parser.add_argument("--stream-port", type=tcp_port, default=9999, help="ZMQ PUSH port; 0 = any free port")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hit-fraction", type=float, default=0.1)
    parser.add_argument("--peaks-per-hit", type=int, nargs=2, default=(15, 60), metavar=("MIN", "MAX"))
    parser.add_argument("--difficulty", default="easy", choices=list(PRESETS),
                        help="easy: bright peaks on 0.5 photons/pixel; realistic: low flux, SNR 3-300 peaks as close "
                             "as 3 px, saturation, hot/dead pixels, an ice ring, a jet streak, a shadow; hard: more "
                             "of each (docs/simulators.md)")
    parser.add_argument("--unpaced", action="store_true", help="send images as fast as possible, not at frame_time")
    parser.add_argument("--dataset", help="replay frames from FILE or FILE::/path (default path /entry/data/data)")
    parser.add_argument("--truth", help="write the ground-truth JSON sidecar to this file before serving")
    parser.add_argument("--truth-frames", type=int, default=1000, help="frames described by --truth")
    parser.add_argument("--api-version", default=API_1_8, choices=API_VERSIONS)
    parser.add_argument("--distinct-frames", type=int, help="frame i repeats frame i %% N (benchmarks)")
    parser.add_argument("--arm-delay", type=float, default=0.0, metavar="SECONDS",
                        help="time arm takes to answer, as on a real DCU (default 0)")
    parser.add_argument("--send-timeout", type=float, default=2.0, metavar="SECONDS",
                        help="a message no receiver takes within this time is dropped and counted (default 2)")
    parser.add_argument("--no-version-endpoint", action="store_true",
                        help="answer /detector/api/version/ with 404 and serve only --api-version, as some DCUs do")
    parser.add_argument("--log-level", default="INFO", help="logging level of the messages on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_cli_logging(args.log_level)
    with stop_on_signal() as stop:
        simulator = _build(args)
        if simulator is None:
            return 2
        with simulator:
            if args.truth:
                try:
                    simulator.frames.write_truth(args.truth, args.truth_frames)
                except OSError as err:
                    log.error("cannot write the truth file: %s", err)
                    return 2
                log.info("truth of %d frames written to %s", args.truth_frames, args.truth)
            print(f"EIGER simulator ready rest={simulator.rest_url} stream={simulator.stream_endpoint}", flush=True)
            stop.wait()
    return 0


def _build(args: argparse.Namespace) -> EigerSimulator | None:
    """The simulator, or None after logging why not (busy port, bad option, unreadable dataset)."""
    try:
        simulator = EigerSimulator(
            args.model,
            host=args.host,
            rest_port=args.rest_port,
            stream_port=args.stream_port,
            seed=args.seed,
            hit_fraction=args.hit_fraction,
            peaks_per_hit=tuple(args.peaks_per_hit),
            difficulty=args.difficulty,
            paced=not args.unpaced,
            dataset=args.dataset,
            distinct_frames=args.distinct_frames,
            api_version=args.api_version,
            arm_delay_s=args.arm_delay,
            send_timeout_s=args.send_timeout,
        )
    except (OSError, ValueError, KeyError) as err:
        log.error("cannot start the EIGER simulator: %s", err)
        return None
    if args.no_version_endpoint:
        simulator.rest_deviations(version_endpoint=False)
    return simulator


if __name__ == "__main__":
    raise SystemExit(main())
