"""``detpipe db start``, ``detpipe register`` and ``detpipe export``: the Tango database side of a deployment.

``register`` and ``export`` talk to the database named by TANGO_HOST (production's, or one started with
``detpipe db start`` for a lab without one); docs/tango_database.md describes the file format and the diff.
"""

from __future__ import annotations

import os
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


def run_db_start(*, host: str, port: int, sqlite: Path) -> int:
    """Run the embedded database in the foreground until Ctrl-C (or SIGTERM); it stops with this command."""
    database = EmbeddedTangoDatabase(sqlite.resolve(), host=host, port=port)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` must not orphan the database process
    try:
        database.start()
        print(f"TANGO_HOST={database.tango_host}", flush=True)
        print(f"Tango database on {database.tango_host} (sqlite {sqlite.resolve()}); Ctrl-C stops it", file=sys.stderr)
        exit_code = database.wait()
    except KeyboardInterrupt:
        return 0
    except ProcessNotReady as err:
        print(f"detpipe db start: {err}", file=sys.stderr)
        return 1
    finally:
        database.stop()
    print(f"detpipe db start: the database exited with {exit_code}:\n{''.join(database.output[-20:])}", file=sys.stderr)
    return 1


def run_register(path: Path, *, variables: Mapping[str, str], dry_run: bool) -> int:
    """Print the diff between ``path`` and the database, then write it unless ``dry_run``."""
    try:
        config = load_database_config(path, variables)
        db = tango.Database()
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
        print(f"detpipe register: {err}", file=sys.stderr)
        return 2
    except tango.DevFailed as err:
        return _database_error("register", err)
    return 0


def run_export(servers: Sequence[str], *, output: Path | None) -> int:
    """dsconfig JSON of the servers matching ``servers`` (default every ``detpipe/*``), to ``output`` or stdout."""
    try:
        text = dsconfig_json(export_servers(tango.Database(), servers or (DETPIPE_SERVERS,)))
    except tango.DevFailed as err:
        return _database_error("export", err)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
    return 0


def _database_error(command: str, err: tango.DevFailed) -> int:
    host = os.environ.get("TANGO_HOST", "unset; `detpipe db start` runs a database")
    print(f"detpipe {command}: Tango database (TANGO_HOST={host}): {err.args[0].desc.strip()}", file=sys.stderr)
    return 1


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
