"""A simulated AGIPD-1M behind a Karabo bridge (EuXFEL AGIPD docs), with ground truth and correction constants.

    with AgipdSimulator(product="raw", cells=8, seed=7) as sim:
        Client(sim.endpoint, sock="REQ").next()   # one train, as SPB's bridge sends it
        sim.train(0), sim.truth.photons(0)         # what was encoded, and what the detector saw
        sim.write_constants(path)                  # docs/agipd_constants.md file for correcting raw data

Train ``i`` (0-based, id ``first_train_id + i``) is the same whoever asks and whenever: the bridge
thread, ``train(i)`` and ``truth`` all derive it from (settings, seed, i). The socket binds at
construction (127.0.0.1 unless told otherwise; port 0 lets the OS choose), so a busy port fails before
``start``; the one sender thread is joined by ``stop``. Layouts and sources are described in
``agipd_layout`` and ``agipd_bridge_sources``; the physics in ``agipd_scene`` and ``agipd_constants``.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import numpy as np

from .agipd_bridge_sources import bridge_sources
from .agipd_constants import AgipdConstants, agipd_constants
from .agipd_difficulty import agipd_difficulty
from .agipd_frames import AgipdFrames, AgipdTrainArrays
from .agipd_layout import MEMORY_CELLS, MODULES, AgipdLayout, AgipdProduct, AgipdSources
from .agipd_pixel_pool import pixel_pool
from .agipd_scene import DEFAULT_LIT_PATTERN, AgipdScene
from .agipd_truth import AgipdTruth
from .karabo_bridge_messages import BridgeProtocol, Part, encode_train, source_metadata
from .karabo_bridge_server import BridgeSocketType, KaraboBridgeServer
from .sfx_difficulty import SfxDifficulty

log = logging.getLogger(__name__)

TRAIN_PERIOD_S = 0.1  # EuXFEL's 10 Hz train rate
FIRST_TRAIN_ID = 10_000_000_000  # as karabo-bridge's simulator starts
E = TypeVar("E", bound=enum.Enum)


def _choice(kind: type[E], value: E | str, name: str, problems: list[str]) -> E:
    if isinstance(value, kind):
        return value
    text = str(value)
    for member in kind:
        if text.lower() == str(member.value).lower():
            return member
    problems.append(f"{name} {value!r} is not one of {[m.value for m in kind]}")
    return next(iter(kind))


class AgipdSimulator:
    """A Karabo bridge server streaming AGIPD-1M trains; a context manager (``start``/``stop``).

    ``socket_type`` REP answers ``b"next"`` requests, PUSH deals trains to pullers; ``paced`` holds trains
    to 10 Hz (False: as fast as they are built and taken); ``n_trains`` None streams forever.
    ``missing_modules`` maps a train index to module numbers whose data are lost for that train.
    ``lit_pattern`` repeats over frame positions (False = no pulse); see ``agipd_scene``.
    ``reply_delay_s`` (REP) answers each request that long after it came: a bridge slower than the trains.
    ``difficulty`` is a preset name (``easy``, ``realistic``, ``hard``) or a scene of one's own
    (``agipd_difficulty``, docs/simulators.md).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        socket_type: BridgeSocketType | str = BridgeSocketType.REP,
        protocol: BridgeProtocol | str = BridgeProtocol.V2_2,
        product: AgipdProduct | str = AgipdProduct.RAW,
        layout: AgipdLayout | str = AgipdLayout.FILE,
        sources: AgipdSources | str = AgipdSources.COMBINED,
        cells: int = 64,
        paced: bool = True,
        first_train_id: int = FIRST_TRAIN_ID,
        n_trains: int | None = None,
        seed: int = 0,
        hit_fraction: float = 0.1,
        peaks_per_hit: tuple[int, int] = (15, 60),
        lit_pattern: Sequence[bool] = DEFAULT_LIT_PATTERN,
        missing_modules: Mapping[int, set[int]] | None = None,
        reply_delay_s: float = 0.0,
        difficulty: SfxDifficulty | str = "easy",
    ) -> None:
        problems: list[str] = []
        try:
            self.difficulty = agipd_difficulty(difficulty)
        except ValueError as err:
            problems.append(str(err))
        self.socket_type = _choice(BridgeSocketType, socket_type, "socket_type", problems)
        self.protocol = _choice(BridgeProtocol, protocol, "protocol", problems)
        self.product = _choice(AgipdProduct, product, "product", problems)
        self.layout = _choice(AgipdLayout, layout, "layout", problems)
        self.sources = _choice(AgipdSources, sources, "sources", problems)
        missing = {int(k): {int(m) for m in v} for k, v in (missing_modules or {}).items()}
        problems += _check_values(cells, first_train_id, n_trains, hit_fraction, peaks_per_hit, lit_pattern, missing)
        if problems:
            raise ValueError("; ".join(problems))
        self.cells = cells
        self.seed = seed
        # Bind first: a busy port is the likeliest failure, and it should not wait for the constants.
        self._server = KaraboBridgeServer(
            self._encode_train,
            socket_type=self.socket_type,
            host=host,
            port=port,
            paced=paced,
            period_s=TRAIN_PERIOD_S,
            n_trains=n_trains,
            reply_delay_s=reply_delay_s,
        )
        try:
            self.constants: AgipdConstants = agipd_constants(seed)
            pool = pixel_pool(seed, self.product, self.difficulty)
            self._scene = AgipdScene(
                seed=seed,
                cells=cells,
                first_train_id=first_train_id,
                hit_fraction=hit_fraction,
                peaks_per_hit=(int(peaks_per_hit[0]), int(peaks_per_hit[1])),
                lit_pattern=lit_pattern,
                missing_modules=missing,
                bad_pixels=np.concatenate([self.constants.bad_pixels, pool.hot_pixels, pool.dead_pixels]),
                difficulty=self.difficulty,
            )
            self._frames = AgipdFrames(
                self._scene,
                pool,
                layout=self.layout,
                module_major=self.sources is AgipdSources.MODULES,
            )
        except BaseException:
            self._server.stop()
            raise
        self.truth = AgipdTruth(self._scene, self._frames)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> AgipdSimulator:
        self._frames.warm_up()
        self._server.start()
        log.info(
            "AGIPD simulator %s: %s %s %s, %d cells, protocol %s, %s, difficulty %s",
            self.endpoint, self.product.value, self.layout.value, self.sources.value, self.cells,
            self.protocol.value, self.socket_type.value, self.difficulty.name,
        )
        return self

    def stop(self) -> None:
        """Stop sending (a train in flight is dropped), join the thread, close the socket; idempotent."""
        self._server.stop()

    def __enter__(self) -> AgipdSimulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- what tests and benchmarks read --------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return self._server.endpoint

    @property
    def trains_sent(self) -> int:
        return self._server.trains_sent

    @property
    def error(self) -> BaseException | None:
        """Why the sender thread ended early, if it did (it also logged it)."""
        return self._server.error

    def train(self, index: int) -> AgipdTrainArrays:
        """The arrays train ``index`` encodes, in canonical file order (``AgipdTrainArrays``)."""
        return self._frames.build(index)

    def write_constants(self, path: str | Path) -> Path:
        """The docs/agipd_constants.md file that corrects this simulator's raw data to ``truth.photons``."""
        return self.constants.write(path)

    def _encode_train(self, index: int) -> list[Part]:
        t0 = time.perf_counter()
        arrays = self._frames.build(index)
        data = bridge_sources(arrays, layout=self.layout, sources=self.sources)
        now_ns = time.time_ns()
        metadata = {source: source_metadata(source, arrays.train_id, now_ns) for source in data}
        parts = encode_train(data, metadata, self.protocol)
        log.debug("train %d (%d) built in %.0f ms", index, arrays.train_id, 1e3 * (time.perf_counter() - t0))
        return parts


def _check_values(
    cells: int,
    first_train_id: int,
    n_trains: int | None,
    hit_fraction: float,
    peaks_per_hit: tuple[int, int],
    lit_pattern: Sequence[bool],
    missing: Mapping[int, set[int]],
) -> list[str]:
    """Every problem with the numeric options, so one error lists them all."""
    problems = []
    if not 1 <= cells <= MEMORY_CELLS:
        problems.append(f"cells {cells} is not within 1 … {MEMORY_CELLS} (AGIPD's memory cells)")
    if first_train_id < 0:
        problems.append(f"first_train_id {first_train_id} is negative")
    if n_trains is not None and n_trains < 0:
        problems.append(f"n_trains {n_trains} must be >= 0 or None (endless)")
    if not 0.0 <= hit_fraction <= 1.0:
        problems.append(f"hit_fraction {hit_fraction} is not within [0, 1]")
    if len(peaks_per_hit) != 2 or not 0 <= peaks_per_hit[0] <= peaks_per_hit[1]:
        problems.append(f"peaks_per_hit {peaks_per_hit} is not a (low, high) range with 0 <= low <= high")
    if len(lit_pattern) == 0:
        problems.append("lit_pattern is empty; give at least one bool")
    for index, modules in missing.items():
        if index < 0:
            problems.append(f"missing_modules key {index} is not a train index (>= 0)")
        if bad := sorted(m for m in modules if not 0 <= m < MODULES):
            problems.append(f"missing_modules[{index}] names modules {bad} outside 0 … {MODULES - 1}")
    return problems
