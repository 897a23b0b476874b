"""``detpipe sim agipd``: serve simulated AGIPD-1M trains on a Karabo bridge until SIGTERM or SIGINT.

Prints exactly one line to stdout once the socket listens, so a parent process (a test, ``make demo``)
can wait for it and read the port: ``AGIPD simulator ready endpoint=tcp://127.0.0.1:PORT`` (with
``--group-ports``, the groups' endpoints separated by spaces).
"""

from __future__ import annotations

import argparse
import logging

from .agipd_difficulty import PRESETS
from .agipd_layout import AgipdLayout, AgipdProduct, AgipdSources
from .agipd_simulator import FIRST_TRAIN_ID, AgipdSimulator
from .cli_options import tcp_port
from .karabo_bridge_messages import BridgeProtocol
from .karabo_bridge_server import BridgeSocketType
from .signal_stop import configure_cli_logging, stop_on_signal

log = logging.getLogger(__name__)


def _values(kind: type[BridgeSocketType | BridgeProtocol | AgipdProduct | AgipdLayout | AgipdSources]) -> list[str]:
    return [str(member.value) for member in kind]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detpipe sim agipd", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address the bridge binds (default: loopback)")
    parser.add_argument("--port", type=tcp_port, default=4545, help="bridge port (default 4545); 0 = any free port")
    parser.add_argument("--socket", default="REP", choices=_values(BridgeSocketType), help="REP (REQ clients) or PUSH")
    parser.add_argument("--protocol", default="2.2", choices=_values(BridgeProtocol))
    parser.add_argument("--product", default="raw", choices=_values(AgipdProduct))
    parser.add_argument("--layout", default="file", choices=_values(AgipdLayout))
    parser.add_argument("--sources", choices=_values(AgipdSources),
                        help="combined (one source of 16 modules, the default) or modules (one source each; the "
                             "default with --group-ports)")
    parser.add_argument("--group-ports", type=tcp_port, nargs="+", default=[], metavar="PORT",
                        help="serve the modules in equal groups, one bridge per PORT instead of --port (2 ports: "
                             "modules 0-7 and 8-15), as per-module sources: the module-group topology")
    parser.add_argument("--cells", type=int, default=64, help="memory cells (frames) per train, 1 … 352")
    parser.add_argument("--unpaced", action="store_true", help="send trains as fast as possible, not at 10 Hz")
    parser.add_argument("--reply-delay", type=float, default=0.0, metavar="SECONDS",
                        help="REP: answer each request SECONDS after it came (a bridge slower than the trains)")
    parser.add_argument("--first-train-id", type=int, default=FIRST_TRAIN_ID)
    parser.add_argument("--trains", type=int, default=None, help="stop sending after N trains (default: endless)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hit-fraction", type=float, default=0.1)
    parser.add_argument("--peaks-per-hit", type=int, nargs=2, default=(15, 60), metavar=("MIN", "MAX"))
    parser.add_argument("--difficulty", default="easy", choices=list(PRESETS),
                        help="easy: 50-2000-photon peaks on 0.1 photons/pixel; realistic: low flux, SNR 3-150 peaks "
                             "as close as 3 px (the brightest in medium and low gain), hot/dead pixels, an ice ring, a "
                             "jet streak, a shadow; hard: more of each (docs/simulators.md)")
    parser.add_argument("--write-constants", metavar="FILE", help="write the correction constants (HDF5) first")
    parser.add_argument("--log-level", default="INFO", help="logging level of the messages on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_cli_logging(args.log_level)
    with stop_on_signal() as stop:
        simulator = _build(args)
        if simulator is None:
            return 2
        try:
            if args.write_constants:
                simulator.write_constants(args.write_constants)
                log.info("correction constants written to %s", args.write_constants)
        except OSError as err:
            simulator.stop()
            log.error("cannot write the constants file: %s", err)
            return 2
        with simulator:
            print(f"AGIPD simulator ready endpoint={' '.join(simulator.endpoints)}", flush=True)
            stop.wait()
    return 0


def _build(args: argparse.Namespace) -> AgipdSimulator | None:
    """The simulator, or None after logging why not (busy port, bad option)."""
    try:
        return AgipdSimulator(
            host=args.host,
            port=args.port,
            socket_type=args.socket,
            protocol=args.protocol,
            product=args.product,
            layout=args.layout,
            sources=args.sources or (AgipdSources.MODULES if args.group_ports else AgipdSources.COMBINED),
            cells=args.cells,
            paced=not args.unpaced,
            first_train_id=args.first_train_id,
            n_trains=args.trains,
            seed=args.seed,
            hit_fraction=args.hit_fraction,
            peaks_per_hit=tuple(args.peaks_per_hit),
            reply_delay_s=args.reply_delay,
            difficulty=args.difficulty,
            group_ports=args.group_ports,
        )
    except (OSError, ValueError) as err:
        log.error("cannot start the AGIPD simulator: %s", err)
        return None


if __name__ == "__main__":
    raise SystemExit(main())
