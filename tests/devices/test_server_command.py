"""``detpipe server``: where it listens is the user's choice, given the way Tango users give it."""

from __future__ import annotations

import pytest

from detpipe.devices.cli.main import parse_command_line
from detpipe.devices.server import orb_endpoint


def test_the_interface_may_be_given_before_or_after_the_instance_and_tango_options_pass_through() -> None:
    for argv in (["server", "bl01", "--host", "127.0.0.1", "-v4"], ["server", "--host", "127.0.0.1", "bl01", "-v4"]):
        args = parse_command_line(argv)
        assert (args.instance, args.host, args.port, args.tango_args) == ("bl01", "127.0.0.1", 0, ["-v4"])


def test_a_host_that_is_not_an_ip_address_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        parse_command_line(["server", "bl01", "--host", "beamline-pc"])
    assert refused.value.code == 2
    assert "needs an IP address such as 127.0.0.1, got 'beamline-pc'" in capsys.readouterr().err


def test_options_other_commands_do_not_know_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_command_line(["demo", "--host", "127.0.0.1"])
    assert "unrecognized arguments: --host 127.0.0.1" in capsys.readouterr().err


@pytest.mark.parametrize(("host", "port", "endpoint"), [
    ("127.0.0.1", 0, "giop:tcp:127.0.0.1:"), ("10.0.3.7", 10100, "giop:tcp:10.0.3.7:10100"),
    ("::1", 0, "giop:tcp:[::1]:"), (None, 10100, "giop:tcp::10100"),
])
def test_the_omniorb_endpoint_names_one_interface_or_every_one(host: str | None, port: int, endpoint: str) -> None:
    assert orb_endpoint(host, port) == endpoint
