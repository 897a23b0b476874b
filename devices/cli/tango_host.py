"""The Tango database a command needs, or one line saying why it cannot be reached and what to do."""

from __future__ import annotations

import tango

from .user_error import UserError


def tango_host() -> str:
    """TANGO_HOST as the Tango kernel looks it up (``ApiUtil.get_env_var``), so no check refuses a setting the
    kernel would accept."""
    host = tango.ApiUtil.get_env_var("TANGO_HOST")
    if not host:
        raise UserError("TANGO_HOST is not set; export TANGO_HOST=<host>:<port> of your Tango database "
                        "(`detpipe db start` runs one for a lab without)")
    return host


def database() -> tango.Database:
    """A client of TANGO_HOST's database, checked to answer."""
    host = tango_host()
    try:
        return tango.Database()
    except tango.DevFailed as err:
        raise database_error(host, err) from err


def database_error(host: str, err: tango.DevFailed) -> UserError:
    reason = err.args[0].desc.strip().splitlines()[0]
    return UserError(f"Tango database at TANGO_HOST={host}: {reason}; is it running, and is TANGO_HOST right?")
