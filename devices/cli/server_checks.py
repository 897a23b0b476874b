"""What ``detpipe server`` and ``DetpipeServer`` check before handing over to the Tango kernel, whose own
messages for the same mistakes are a bare line and exit 255, or a stack of CORBA errors."""

from __future__ import annotations

from collections.abc import Sequence

import tango

from .port_holder import refuse_busy_port
from .tango_host import database, database_error, tango_host
from .user_error import UserError

_NO_DATABASE = "-nodb"  # the Tango kernel's option for a server without database (devices from -dlist/-file)


def check_server_can_start(server_name: str, instance: str, tango_args: Sequence[str], *, host: str | None,
                           port: int) -> None:
    """A fixed ``port`` must be free on ``host`` (every interface without one), and ``<server_name>/<instance>``
    must be registered in TANGO_HOST's database, unless the Tango options say there is none."""
    if port:
        refuse_busy_port(host or "0.0.0.0", port)
    if _NO_DATABASE in tango_args:
        return
    server = f"{server_name}/{instance}"
    db = database()
    try:
        registered = db.get_device_class_list(server).value_string
    except tango.DevFailed as err:
        raise database_error(tango_host(), err) from err
    if not registered:
        raise UserError(f"server {server} is not registered in the Tango database at TANGO_HOST={tango_host()}; "
                        "register it first (`detpipe register <config.yaml>`, or Jive's server wizard)")
