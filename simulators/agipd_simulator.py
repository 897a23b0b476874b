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
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from functools import partial
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
    ``group_ports`` serves the modules in that many equal groups (2: modules 0–7 and 8–15), each on its own
    bridge at its port instead of ``port``, with per-module sources (``sources`` must be ``modules``): as
    EuXFEL bridges configured per module group feed the receivers of a module-group topology
    (docs/scale_out.md). Every group's bridge sends train ``i`` as its ``i``-th train, built once for all.
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
        group_ports: Sequence[int] = (),
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
        problems += _check_groups(group_ports, self.sources)
        if problems:
            raise ValueError("; ".join(problems))
        self.cells = cells
        self.seed = seed
        self.module_groups = module_groups(len(group_ports) or 1)
        self._built = _LastTrains(self._build)
        # Bind first: a busy port is the likeliest failure, and it should not wait for the constants.
        self._servers: list[KaraboBridgeServer] = []
        try:
            for group, group_port in zip(self.module_groups, group_ports or [port]):
                self._servers.append(KaraboBridgeServer(
                    partial(self._encode_train, modules=group),
                    socket_type=self.socket_type,
                    host=host,
                    port=group_port,
                    paced=paced,
                    period_s=TRAIN_PERIOD_S,
                    n_trains=n_trains,
                    reply_delay_s=reply_delay_s,
                ))
        except BaseException:
            self.stop()
            raise
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
            self.stop()
            raise
        self.truth = AgipdTruth(self._scene, self._frames)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> AgipdSimulator:
        self._frames.warm_up()
        for server in self._servers:
            server.start()
        log.info(
            "AGIPD simulator %s: %s %s %s, %d cells, protocol %s, %s, difficulty %s",
            " ".join(self.endpoints), self.product.value, self.layout.value, self.sources.value, self.cells,
            self.protocol.value, self.socket_type.value, self.difficulty.name,
        )
        return self

    def stop(self) -> None:
        """Stop sending (a train in flight is dropped), join the threads, close the sockets; idempotent."""
        for server in self._servers:
            server.stop()

    def __enter__(self) -> AgipdSimulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- what tests and benchmarks read --------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """The bridge's endpoint (the first module group's with ``group_ports``)."""
        return self._servers[0].endpoint

    @property
    def endpoints(self) -> list[str]:
        """One endpoint per module group (``module_groups``, in the same order); one without ``group_ports``."""
        return [server.endpoint for server in self._servers]

    @property
    def trains_sent(self) -> int:
        """Trains every module group's bridge has sent."""
        return min(server.trains_sent for server in self._servers)

    @property
    def error(self) -> BaseException | None:
        """Why a sender thread ended early, if one did (it also logged it)."""
        return next((server.error for server in self._servers if server.error is not None), None)

    def train(self, index: int) -> AgipdTrainArrays:
        """The arrays train ``index`` encodes, in canonical file order (``AgipdTrainArrays``)."""
        return self._frames.build(index)

    def write_constants(self, path: str | Path) -> Path:
        """The docs/agipd_constants.md file that corrects this simulator's raw data to ``truth.photons``."""
        return self.constants.write(path)

    def _build(self, index: int) -> AgipdTrainArrays:
        t0 = time.perf_counter()
        arrays = self._frames.build(index)
        log.debug("train %d (%d) built in %.0f ms", index, arrays.train_id, 1e3 * (time.perf_counter() - t0))
        return arrays

    def _encode_train(self, index: int, *, modules: tuple[int, ...]) -> list[Part]:
        arrays = self._built(index)
        data = bridge_sources(arrays, layout=self.layout, sources=self.sources, modules=modules)
        now_ns = time.time_ns()
        metadata = {source: source_metadata(source, arrays.train_id, now_ns) for source in data}
        return encode_train(data, metadata, self.protocol)


def module_groups(count: int) -> list[tuple[int, ...]]:
    """The 16 modules in ``count`` equal groups of consecutive modules (2: 0–7 and 8–15)."""
    size = MODULES // count
    return [tuple(range(g * size, (g + 1) * size)) for g in range(count)]


class _LastTrains:
    """The last two trains built, shared by the module groups' sender threads: each group's bridge sends train
    ``i`` as its ``i``-th, and one group may be a train ahead of another, so a train is built once, not per group
    (a 64-cell raw train takes 0.2-0.8 s to build on a 2-core machine). A group asking for a train already built
    never waits for another's build; builds run one at a time. A group further behind rebuilds, the same arrays."""

    def __init__(self, build: Callable[[int], AgipdTrainArrays]) -> None:
        self._build = build
        self._trains: dict[int, Future[AgipdTrainArrays]] = {}
        self._lock = threading.Lock()
        self._building = threading.Lock()

    def __call__(self, index: int) -> AgipdTrainArrays:
        with self._lock:
            train = self._trains.get(index)
            builder = train is None
            if train is None:
                train = self._trains[index] = Future()
                for old in sorted(self._trains)[:-2]:
                    del self._trains[old]
        if builder:
            try:
                with self._building:
                    train.set_result(self._build(index))
            except BaseException as err:  # the groups waiting for this train see the same failure
                train.set_exception(err)
                raise
        return train.result()


def _check_groups(group_ports: Sequence[int], sources: AgipdSources) -> list[str]:
    problems = []
    if group_ports and (MODULES % len(group_ports) or len(group_ports) < 2):
        problems.append(f"group_ports gives {len(group_ports)} module groups; 16 modules split into 2, 4, 8 or 16")
    if group_ports and sources is not AgipdSources.MODULES:
        problems.append("module groups are served as per-module sources: set sources to 'modules'")
    return problems


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
