"""``detpipe db start``, ``detpipe register`` and ``detpipe export``: the Tango database side of a deployment.

``register`` and ``export`` talk to the database named by TANGO_HOST (production's, or one started with
``detpipe db start`` for a lab without one); docs/tango_database.md describes the file format and the diff.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

import tango

from detpipe.pipeline.core.errors import ConfigError

from ..tangodb.config_model import load_database_config
from ..tangodb.export import DETPIPE_SERVERS, dsconfig_json, export_servers
from ..tangodb.sync import apply_changes, plan_changes
from .embedded_database import EmbeddedTangoDatabase
from .managed_process import ProcessNotReady
from .port_holder import refuse_busy_port
from .tango_host import database, database_error, tango_host
from .user_error import UserError, make_output_directory


def run_db_start(*, host: str, port: int, sqlite: Path) -> int:
    """Run the embedded database in the foreground until Ctrl-C (or SIGTERM), its normal end (exit 0); it
    stops with this command. A busy port or an unusable sqlite folder is refused before it starts."""
    if port:
        refuse_busy_port(host, port)
    sqlite = make_output_directory(sqlite.parent, "--sqlite") / sqlite.name
    if sqlite.is_dir():
        raise UserError(f"--sqlite {sqlite} is a directory; give the database file's name")
    embedded = EmbeddedTangoDatabase(sqlite, host=host, port=port)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` must not orphan the database process
    try:
        embedded.start()
        print(f"TANGO_HOST={embedded.tango_host}", flush=True)
        print(f"Tango database on {embedded.tango_host} (sqlite {sqlite}); Ctrl-C stops it", flush=True)
        exit_code = embedded.wait()
    except KeyboardInterrupt:
        embedded.stop()
        print(f"detpipe db start: stopped; the database on {embedded.tango_host} is down", file=sys.stderr)
        return 0
    except ProcessNotReady as err:
        print(f"detpipe db start: {err}", file=sys.stderr)
        return 1
    finally:
        embedded.stop()
    print(f"detpipe db start: the database exited with {exit_code}:\n{''.join(embedded.output[-20:])}", file=sys.stderr)
    return 1


def run_register(path: Path, *, variables: Mapping[str, str], dry_run: bool) -> int:
    """Print the diff between ``path`` and the database, then write it unless ``dry_run``."""
    try:
        config = load_database_config(path, variables)
        db = database()
        changes = plan_changes(db, config)
        for change in changes:
            print(change.line())
        if not changes:
            print(f"no changes ({', '.join(config.servers)} as in {path})")
        elif dry_run:
            print(f"{len(changes)} changes; dry run, nothing written")
        else:
            apply_changes(db, changes)
            print(f"{len(changes)} changes written to {db.get_db_host()}:{db.get_db_port()}")
    except ConfigError as err:  # load_database_config validates the whole file before the database is opened
        print("\n".join(f"detpipe register: {problem}" for problem in err.problems), file=sys.stderr)
        count = len(err.problems)
        print(f"detpipe register: {count} problem{'s' * (count != 1)} in {path}; nothing written", file=sys.stderr)
        return 2
    except OSError as err:
        raise UserError(f"{path}: {err.strerror or err}") from err
    except tango.DevFailed as err:
        raise database_error(tango_host(), err) from err
    return 0


def run_export(servers: Sequence[str], *, output: Path | None) -> int:
    """dsconfig JSON of the servers matching ``servers`` (default every ``detpipe/*``), to ``output`` or stdout."""
    try:
        text = dsconfig_json(export_servers(database(), servers or (DETPIPE_SERVERS,)))
    except tango.DevFailed as err:
        raise database_error(tango_host(), err) from err
    if output is None:
        sys.stdout.write(text)
        return 0
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as err:
        raise UserError(f"-o {output}: {err.strerror or err}; choose a file you can write") from err
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
