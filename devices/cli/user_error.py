"""A mistake the user can fix, reported as one line by ``detpipe``'s main() (exit 2; the traceback only with
``--debug``), and the check that turns an unusable output path into one."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Its message says what is wrong and what to do, in one line, without the program's prefix."""


def make_output_directory(path: Path, option: str) -> Path:
    """``path`` resolved and created (with its parents). Creating it is the only reliable test: permission bits
    say nothing to root, and /proc or a read-only mount refuse whatever they say."""
    path = path.resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{option} {path}: {err.strerror or err}; choose a directory you can write") from err
    return path
