"""``detpipe geom``: the CrystFEL geometry file of a series or run, written next to its master."""

from __future__ import annotations

from pathlib import Path

from detpipe.pipeline.crystfel.run_geometry import write_run_geometry

from .user_error import UserError


def run_geom(run: Path, *, output: Path | None, clen_m: float | None, photon_energy_ev: float | None) -> int:
    try:
        target = write_run_geometry(run, output, clen_m=clen_m, photon_energy_ev=photon_energy_ev)
    except (ValueError, OSError) as err:  # ConfigError and the NXmx reader's errors: each names the file, in one line
        raise UserError(str(err)) from err
    print(f"CrystFEL geometry written: {target}")
    return 0
