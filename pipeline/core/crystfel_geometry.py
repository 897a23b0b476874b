"""CrystFEL geometry files (``.geom``, crystfel_geometry(5)): read the parts peak finding needs, write them back.

A geometry file is how serial-crystallography tools (CrystFEL, OM, Cheetah, extra-geom) describe a detector:
panels (a data range plus the lab position of its corner and its fast/slow-scan vectors), bad regions and
bad-pixel masks. detpipe reads one to triage with a measured layout and mask instead of the detector's
built-in one (``HitFinder.GeometryFile``), and writes one next to a run's master for CrystFEL
(``detpipe geom``). CrystFEL's own rules are followed:

- ``key = value`` lines, ``;`` starts a comment; ``panel/key = value`` sets one panel's parameter, a bare
  panel parameter is the default of every panel *first mentioned later* in the file;
- ``min_fs``/``max_fs``/``min_ss``/``max_ss`` are inclusive; ``corner_x``/``corner_y`` are the lab position
  of the first pixel's outer corner, in pixels, so pixel (fs, ss) of a panel has its centre at
  ``corner + (fs − min_fs + ½)·fs_vec + (ss − min_ss + ½)·ss_vec``; the beam is at lab (0, 0);
- names beginning ``bad`` are bad regions, in lab x/y (pixels) or in a panel's fs/ss (inclusive);
- ``maskN_data``/``maskN_file``/``maskN_goodbits``/``maskN_badbits`` (and the older ``mask``,
  ``mask_file``, ``mask_good``, ``mask_bad``): a pixel is bad unless all good bits are set, or when any bad
  bit is set; ``no_index = 1`` drops a panel, ``mask_edge_pixels = n`` its n outer rows and columns.

Keys that do not concern peak finding (wavelength, clen, adu_per_eV, groups, …) are kept as text and
written back; unknown keys are listed in ``ignored`` rather than refused, since CrystFEL versions differ.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from .errors import ConfigError

Vector = tuple[float, float, float]

_PANEL_INTS = ("min_fs", "max_fs", "min_ss", "max_ss", "mask_edge_pixels")
_PANEL_FLOATS = ("corner_x", "corner_y", "coffset", "res")
_PANEL_TEXT = ("data", "adu_per_eV", "adu_per_photon", "max_adu", "clen", "photon_energy", "saturation_map",
               "saturation_map_file", "flag_lessthan", "flag_morethan", "flag_equal")
_REQUIRED = ("min_fs", "max_fs", "min_ss", "max_ss", "corner_x", "corner_y", "fs", "ss")
# Global keys that mean something to CrystFEL but nothing to peak finding: kept and written back as they are.
_GLOBAL_TEXT = frozenset({
    "wavelength", "photon_energy", "electron_voltage", "bandwidth", "clen", "res", "adu_per_eV",
    "adu_per_photon", "max_adu", "peak_list", "peak_list_type", "detector_shift_x", "detector_shift_y",
    "data", "coffset", "photon_energy_bandwidth", "photon_energy_scale", "saturation_map", "saturation_map_file",
})
_OLD_MASK_KEYS = {"mask": "data", "mask_file": "file", "mask_good": "goodbits", "mask_bad": "badbits"}
_MASK_KEY = re.compile(r"^mask(?P<number>[0-7])_(?P<part>data|file|goodbits|badbits)$")
_DIM_KEY = re.compile(r"^dim(?P<axis>\d+)$")
_VECTOR_TERM = re.compile(r"([+-]?)\s*(\d*\.?\d*(?:[eE][+-]?\d+)?)\s*([xyz])")
_BAD_FSSS = ("min_fs", "max_fs", "min_ss", "max_ss")
_BAD_XY = ("min_x", "max_x", "min_y", "max_y")


@dataclass(frozen=True, slots=True)
class GeomPanel:
    """One panel. ``dims`` is the data block's axis layout, slowest first: ``%`` (the frame), ``ss``, ``fs``
    or a fixed index (a module number in EuXFEL's module-indexed layout)."""

    name: str
    min_fs: int
    max_fs: int
    min_ss: int
    max_ss: int
    corner_x: float
    corner_y: float
    fs: Vector
    ss: Vector
    dims: tuple[str, ...] = ("ss", "fs")
    data: str = "/data/data"
    coffset: float = 0.0
    res: float | None = None
    no_index: bool = False
    mask_edge_pixels: int = 0

    @property
    def fixed_index(self) -> int | None:
        """The panel's fixed index along a data axis other than frame/ss/fs (EuXFEL's module number)."""
        fixed = [int(d) for d in self.dims if d not in ("%", "ss", "fs")]
        return fixed[0] if fixed else None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.max_ss - self.min_ss + 1, self.max_fs - self.min_fs + 1)

    def pixel_centres(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Lab (x, y) of every pixel centre of the panel, each shaped (ss, fs), in pixels from the beam."""
        ss = np.arange(self.shape[0], dtype=np.float64)[:, None] + 0.5
        fs = np.arange(self.shape[1], dtype=np.float64)[None, :] + 0.5
        x = self.corner_x + fs * self.fs[0] + ss * self.ss[0]
        y = self.corner_y + fs * self.fs[1] + ss * self.ss[1]
        return x, y


@dataclass(frozen=True, slots=True)
class BadRegion:
    """``panel`` and inclusive fs/ss bounds (data coordinates), or lab ``x``/``y`` bounds in pixels."""

    name: str
    panel: str | None = None
    fs: tuple[int, int] | None = None
    ss: tuple[int, int] | None = None
    x: tuple[float, float] | None = None
    y: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class GeomMask:
    """Bad-pixel mask N: ``data`` path, in ``file`` (None: in each image's own file)."""

    number: int
    data: str
    file: str | None = None
    goodbits: int = 0
    badbits: int = 0

    def bad(self, values: NDArray[np.integer]) -> NDArray[np.bool_]:
        """CrystFEL's rule: bad unless every good bit is set, or when any bad bit is set."""
        values = np.asarray(values).astype(np.uint64)
        return ((values & np.uint64(self.goodbits)) != np.uint64(self.goodbits)) | (
            (values & np.uint64(self.badbits)) != 0
        )


@dataclass(frozen=True, slots=True)
class CrystfelGeometry:
    """A geometry file's panels, bad regions and masks; ``settings`` the other global keys as written
    (clen, photon_energy, peak_list…); ``ignored`` the keys detpipe does not know, with their line."""

    panels: tuple[GeomPanel, ...]
    bad_regions: tuple[BadRegion, ...] = ()
    masks: tuple[GeomMask, ...] = ()
    settings: Mapping[str, str] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()
    source: str = "<geometry>"

    def panel(self, name: str) -> GeomPanel:
        for panel in self.panels:
            if panel.name == name:
                return panel
        raise KeyError(name)


def read_crystfel_geometry(path: str | Path) -> CrystfelGeometry:
    """The geometry file at ``path``; a missing or unreadable file or any syntax problem is a ``ConfigError``
    naming every problem with its line number."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise ConfigError([f"CrystFEL geometry file {file} cannot be read: {err.strerror or err}"]) from err
    return parse_crystfel_geometry(text, str(file))


def parse_crystfel_geometry(text: str, source: str = "<geometry>") -> CrystfelGeometry:
    parser = _Parser(source)
    for number, raw in enumerate(text.splitlines(), start=1):
        parser.line(number, raw.split(";", 1)[0].strip())
    return parser.result()


def format_crystfel_geometry(geometry: CrystfelGeometry, header: Iterable[str] = ()) -> str:
    """The geometry as a ``.geom`` text: ``header`` lines as comments, then the global keys, the masks,
    the bad regions and every panel written out in full (no defaults), which every CrystFEL version and
    extra-geom read alike. Numbers are written exactly (shortest round-trip form)."""
    lines = [f"; {line}" if line else ";" for line in header]
    lines += [f"{key} = {value}" for key, value in geometry.settings.items()]
    for mask in geometry.masks:
        lines.append(f"mask{mask.number}_data = {mask.data}")
        if mask.file is not None:
            lines.append(f"mask{mask.number}_file = {mask.file}")
        lines += [f"mask{mask.number}_goodbits = {mask.goodbits:#x}", f"mask{mask.number}_badbits = {mask.badbits:#x}"]
    for region in geometry.bad_regions:
        lines.append("")
        lines += [f"{region.name}/{key} = {value}" for key, value in _bad_region_items(region)]
    for panel in geometry.panels:
        lines.append("")
        lines += [f"{panel.name}/dim{axis} = {dim}" for axis, dim in enumerate(panel.dims)]
        lines += [
            f"{panel.name}/data = {panel.data}",
            f"{panel.name}/min_fs = {panel.min_fs}",
            f"{panel.name}/max_fs = {panel.max_fs}",
            f"{panel.name}/min_ss = {panel.min_ss}",
            f"{panel.name}/max_ss = {panel.max_ss}",
            f"{panel.name}/fs = {_format_vector(panel.fs)}",
            f"{panel.name}/ss = {_format_vector(panel.ss)}",
            f"{panel.name}/corner_x = {panel.corner_x!r}",
            f"{panel.name}/corner_y = {panel.corner_y!r}",
            f"{panel.name}/coffset = {panel.coffset!r}",
        ]
        if panel.res is not None:
            lines.append(f"{panel.name}/res = {panel.res!r}")
        if panel.no_index:
            lines.append(f"{panel.name}/no_index = 1")
        if panel.mask_edge_pixels:
            lines.append(f"{panel.name}/mask_edge_pixels = {panel.mask_edge_pixels}")
    return "\n".join(lines) + "\n"


def _bad_region_items(region: BadRegion) -> list[tuple[str, object]]:
    if region.x is not None and region.y is not None:
        return [("min_x", region.x[0]), ("max_x", region.x[1]), ("min_y", region.y[0]), ("max_y", region.y[1])]
    assert region.fs is not None and region.ss is not None
    return [("min_fs", region.fs[0]), ("max_fs", region.fs[1]), ("min_ss", region.ss[0]),
            ("max_ss", region.ss[1]), ("panel", region.panel)]


def _format_vector(vector: Vector) -> str:
    terms = [f"{value:+}{axis}" for value, axis in zip(vector, "xyz", strict=True) if value != 0 or axis != "z"]
    return " ".join(terms)


class _Parser:
    """One pass over the lines; panels collect their own keys and, when first mentioned, the defaults in
    force at that line (CrystFEL's rule)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.defaults: dict[str, object] = {}
        self.panels: dict[str, dict[str, object]] = {}
        self.bad: dict[str, dict[str, object]] = {}
        self.masks: dict[int, dict[str, object]] = {}
        self.settings: dict[str, str] = {}
        self.ignored: list[str] = []
        self.problems: list[str] = []
        self.first_line: dict[str, int] = {}

    def line(self, number: int, text: str) -> None:
        if not text:
            return
        key, sep, value = text.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            self.problems.append(f"line {number}: {text!r} is not 'key = value'")
            return
        try:
            if "/" in key:
                self._scoped(number, key, value)
            else:
                self._global(number, key, value)
        except ValueError as err:
            self.problems.append(f"line {number}: {key} = {value!r}: {err}")

    def _global(self, number: int, key: str, value: str) -> None:
        if key.startswith(("group_", "rigid_group")):
            return  # panel hierarchy: geometry refinement only
        if (mask := _mask_key(key)) is not None:
            self.masks.setdefault(mask[0], {})[mask[1]] = _mask_value(mask[1], value)
        elif (parsed := _panel_value(key, value)) is not None:
            self.defaults[key] = parsed
            if key in _GLOBAL_TEXT:
                self.settings[key] = value
        elif key in _GLOBAL_TEXT:
            self.settings[key] = value
        else:
            self.ignored.append(f"line {number}: {key}")

    def _scoped(self, number: int, key: str, value: str) -> None:
        name, _, param = key.partition("/")
        if name.startswith("bad"):
            region = self.bad.setdefault(name, {})
            if param == "panel":
                region[param] = value
            elif param in _BAD_FSSS:
                region[param] = _integer(value)
            elif param in _BAD_XY:
                region[param] = float(value)
            else:
                self.ignored.append(f"line {number}: {key}")
            return
        if name.startswith(("group", "rigid_group")):
            return
        panel = self.panels.get(name)
        if panel is None:
            panel = self.panels[name] = dict(self.defaults)
            self.first_line[name] = number
        if _mask_key(param) is not None:
            raise ValueError("detpipe reads bad-pixel masks given once for all panels; move it above the panels")
        if param in _PANEL_TEXT and param != "data":
            return  # per-panel detector response (adu_per_eV, max_adu…): not peak finding's business
        parsed = _panel_value(param, value)
        if parsed is None:
            self.ignored.append(f"line {number}: {key}")
        else:
            panel[param] = parsed

    def result(self) -> CrystfelGeometry:
        panels = [self._panel(name, keys) for name, keys in self.panels.items()]
        regions = [self._region(name, keys) for name, keys in self.bad.items()]
        masks = [self._mask(number, keys) for number, keys in sorted(self.masks.items())]
        if not self.panels and not self.problems:
            self.problems.append("it describes no panel (no 'name/min_fs = …' lines)")
        if self.problems:
            raise ConfigError([f"CrystFEL geometry {self.source}: {p}" for p in self.problems])
        return CrystfelGeometry(
            panels=tuple(p for p in panels if p is not None),
            bad_regions=tuple(r for r in regions if r is not None),
            masks=tuple(m for m in masks if m is not None),
            settings=self.settings,
            ignored=tuple(self.ignored),
            source=self.source,
        )

    def _panel(self, name: str, keys: dict[str, object]) -> GeomPanel | None:
        missing = [k for k in _REQUIRED if k not in keys]
        if missing:
            self.problems.append(f"panel {name} (line {self.first_line[name]}) has no {', '.join(missing)}")
            return None
        dims = _dims(keys)
        if dims is None:
            self.problems.append(f"panel {name}: its dim0, dim1, … keys leave a gap")
            return None
        if dims.count("ss") != 1 or dims.count("fs") != 1 or dims.index("fs") < dims.index("ss"):
            self.problems.append(f"panel {name}: data layout {dims} needs one ss axis before one fs axis")
            return None
        values = {k: v for k, v in keys.items() if not _DIM_KEY.match(k) and k in GeomPanel.__slots__}
        panel = GeomPanel(name=name, dims=dims, **values)  # type: ignore[arg-type]
        if panel.max_fs < panel.min_fs or panel.max_ss < panel.min_ss or min(panel.min_fs, panel.min_ss) < 0:
            self.problems.append(f"panel {name}: fs {panel.min_fs}…{panel.max_fs}, ss {panel.min_ss}…{panel.max_ss} "
                                 "is empty or negative")
            return None
        return panel

    def _region(self, name: str, keys: dict[str, object]) -> BadRegion | None:
        fsss = [k for k in _BAD_FSSS if k in keys]
        xy = [k for k in _BAD_XY if k in keys]
        if fsss and xy:
            self.problems.append(f"bad region {name} mixes x/y and fs/ss bounds (CrystFEL allows one kind)")
        elif len(xy) == 4:
            return BadRegion(name, x=(keys["min_x"], keys["max_x"]), y=(keys["min_y"], keys["max_y"]))  # type: ignore[arg-type]
        elif len(fsss) == 4 and "panel" in keys:
            if keys["panel"] not in self.panels:
                self.problems.append(f"bad region {name} names panel {keys['panel']!r}, which the file does not "
                                     "define")
                return None
            return BadRegion(name, panel=str(keys["panel"]), fs=(keys["min_fs"], keys["max_fs"]),  # type: ignore[arg-type]
                             ss=(keys["min_ss"], keys["max_ss"]))
        else:
            self.problems.append(f"bad region {name} needs min_x, max_x, min_y, max_y, or min_fs, max_fs, "
                                 "min_ss, max_ss and panel")
        return None

    def _mask(self, number: int, keys: dict[str, object]) -> GeomMask | None:
        if "data" not in keys:
            self.problems.append(f"mask {number} has no data location (mask{number}_data or mask)")
            return None
        return GeomMask(number, **keys)  # type: ignore[arg-type]


def _mask_key(key: str) -> tuple[int, str] | None:
    if key in _OLD_MASK_KEYS:
        return 0, _OLD_MASK_KEYS[key]
    match = _MASK_KEY.match(key)
    return (int(match["number"]), match["part"]) if match else None


def _mask_value(part: str, value: str) -> object:
    return _integer(value) if part in ("goodbits", "badbits") else value


def _panel_value(key: str, value: str) -> object | None:
    """The parsed value of a panel parameter, or None when ``key`` is none."""
    if key in _PANEL_INTS:
        return _integer(value)
    if key in _PANEL_FLOATS:
        return float(value.split()[0])  # "res = 5000 ; pixels per metre", "clen = 0.1 m"
    if key in ("fs", "ss"):
        return _vector(value)
    if key == "no_index":
        return _flag(value)
    if _DIM_KEY.match(key):
        return value
    if key in _PANEL_TEXT:
        return value if key == "data" else None
    return None


def _dims(keys: Mapping[str, object]) -> tuple[str, ...] | None:
    """The panel's data axes, slowest first (CrystFEL's default: ss, fs); None when the dimN keys leave a gap."""
    axes = {int(m["axis"]): str(v) for k, v in keys.items() if (m := _DIM_KEY.match(k))}
    if not axes:
        return ("ss", "fs")
    if sorted(axes) != list(range(len(axes))):
        return None
    return tuple(axes[a] for a in range(len(axes)))


def _integer(value: str) -> int:
    text = value.split()[0] if value.split() else value
    try:
        return int(text, 0)
    except ValueError:
        number = float(text)
        if number != int(number):
            raise ValueError("expected a whole number") from None
        return int(number)


def _flag(value: str) -> bool:
    text = value.lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise ValueError("expected 1/true or 0/false")


def _vector(value: str) -> Vector:
    """``-0.001x +0.9999y``, ``-x``, ``+1.0y +0.1z`` → (x, y, z)."""
    compact = value.replace(" ", "")
    terms = list(_VECTOR_TERM.finditer(compact))
    if not terms or "".join(m.group(0) for m in terms) != compact:
        raise ValueError("expected a vector such as '+1.0x -0.0y'")
    components = {"x": 0.0, "y": 0.0, "z": 0.0}
    for sign, number, axis in (m.groups() for m in terms):
        components[axis] += (-1.0 if sign == "-" else 1.0) * (float(number) if number else 1.0)
    return components["x"], components["y"], components["z"]

