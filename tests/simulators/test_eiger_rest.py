"""SIMPLON REST as a client sees it: reply shapes, validation, side effects, states, versions."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from detpipe.simulators import EigerSimulator
from tests.simulators.eiger_sim_client import RestError, SimplonClient


@pytest.mark.parametrize("api_version", ["1.8.0", "1.6.0"])
def test_version_endpoints_report_the_configured_api_version(
    make_sim: Callable[..., EigerSimulator], api_version: str
) -> None:
    client = SimplonClient(make_sim(api_version=api_version).rest_url)
    for module in ("detector", "stream"):
        reply = client.request("GET", f"{client.base_url}/{module}/api/version/")
        assert reply == {"value": api_version, "value_type": "string"}


@pytest.mark.parametrize("version", ["1.8.0", "1.6.0"])
def test_both_api_versions_are_served_on_one_server(rest: SimplonClient, version: str) -> None:
    client = SimplonClient(rest.base_url, version=version)
    client.put("detector", "config/nimages", 3)
    assert client.value("detector", "config/nimages") == 3
    assert "count_time" in client.get("detector", "config/keys")


def test_incident_energy_and_stream_format_exist_only_in_1_8(rest: SimplonClient) -> None:
    old = SimplonClient(rest.base_url, version="1.6.0")
    assert rest.value("detector", "config/incident_energy") == rest.value("detector", "config/photon_energy")
    with pytest.raises(RestError) as err:
        old.get("detector", "config/incident_energy")
    assert err.value.status == 404
    assert "format" in rest.get("stream", "config/keys") and "format" not in old.get("stream", "config/keys")


def test_get_reply_carries_value_type_access_mode_and_limits(rest: SimplonClient) -> None:
    reply = rest.get("detector", "config/count_time")
    assert reply["value_type"] == "float" and reply["access_mode"] == "rw" and reply["unit"] == "s"
    assert reply["min"] < reply["value"] < reply["max"]
    mode = rest.get("detector", "config/trigger_mode")
    assert mode["allowed_values"] == ["ints", "inte", "exts", "exte"]
    width = rest.get("detector", "config/x_pixels_in_detector")
    assert width == {"value": 1028, "value_type": "int", "access_mode": "r"}
    assert rest.value("detector", "config/y_pixels_in_detector") == 512
    assert rest.value("detector", "config/x_pixel_size") == 75e-6
    assert rest.value("detector", "config/sensor_material") == "Si"
    assert rest.value("detector", "config/sensor_thickness") == 450e-6
    assert rest.value("detector", "config/description") == "Dectris EIGER2 Si 500K"


def test_count_time_put_lists_frame_time_and_bit_depth_it_changed(rest: SimplonClient) -> None:
    rest.put("detector", "config/frame_time", 0.01)
    changed = rest.put("detector", "config/count_time", 0.5)
    assert {"count_time", "frame_time", "bit_depth_image"} <= set(changed)
    assert rest.value("detector", "config/bit_depth_image") == 32
    assert rest.value("detector", "config/frame_time") >= 0.5 + rest.value("detector", "config/detector_readout_time")
    changed = rest.put("detector", "config/count_time", 0.001)
    assert "bit_depth_image" in changed and "frame_time" not in changed
    assert rest.value("detector", "config/bit_depth_image") == 16


def test_frame_time_shorter_than_count_time_shortens_count_time(rest: SimplonClient) -> None:
    rest.configure(count_time=0.05, frame_time=0.05 + 1e-7)
    changed = rest.put("detector", "config/frame_time", 0.01)
    assert "count_time" in changed
    assert rest.value("detector", "config/count_time") == pytest.approx(0.01 - 1e-7)


def test_energy_put_re_derives_wavelength_and_threshold(rest: SimplonClient) -> None:
    changed = rest.put("detector", "config/photon_energy", 8000.0)
    assert {"photon_energy", "incident_energy", "wavelength", "threshold_energy"} <= set(changed)
    assert rest.value("detector", "config/wavelength") == pytest.approx(12398.42 / 8000.0)
    assert rest.value("detector", "config/threshold_energy") == pytest.approx(4000.0)
    rest.put("detector", "config/wavelength", 1.0)
    assert rest.value("detector", "config/incident_energy") == pytest.approx(12398.42)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("count_time", 7200.0, "above the maximum"),
        ("nimages", 0, "below the minimum"),
        ("nimages", 1.5, "integer"),
        ("trigger_mode", "eies", "not one of"),
        ("compression", "zstd", "not one of"),
        ("pixel_mask_applied", 1, "true or false"),
        ("x_pixels_in_detector", 10, "read-only"),
    ],
)
def test_bad_values_are_refused_with_400_and_a_reason(
    rest: SimplonClient, key: str, value: object, reason: str
) -> None:
    before = rest.value("detector", f"config/{key}")
    with pytest.raises(RestError) as err:
        rest.put("detector", f"config/{key}", value)
    assert err.value.status == 400 and reason in err.value.reason
    assert rest.value("detector", f"config/{key}") == before


def test_compression_none_is_allowed_only_through_1_8(rest: SimplonClient) -> None:
    with pytest.raises(RestError):
        SimplonClient(rest.base_url, version="1.6.0").put("detector", "config/compression", "none")
    rest.put("detector", "config/compression", "none")


def test_unknown_paths_get_404(rest: SimplonClient) -> None:
    for url in (rest.url("detector", "config/no_such_key"), rest.url("nomodule", "config/x"),
                f"{rest.base_url}/detector/api/1.7.0/config/nimages"):
        with pytest.raises(RestError) as err:
            rest.request("GET", url)
        assert err.value.status == 404


def test_keys_listings_name_config_status_and_commands(rest: SimplonClient) -> None:
    assert {"arm", "trigger", "disarm", "cancel", "abort", "initialize"} <= set(rest.get("detector", "command/keys"))
    assert {"state", "error", "time"} <= set(rest.get("detector", "status/keys"))
    assert {"mode", "header_detail", "header_appendix", "image_appendix"} <= set(rest.get("stream", "config/keys"))
    assert set(rest.get("stream", "status/keys")) == {"state", "dropped"}


def test_stream_starts_disabled_as_on_real_dcus(rest: SimplonClient) -> None:
    assert rest.value("stream", "config/mode") == "disabled"
    assert rest.value("stream", "status/state") == "disabled"
    rest.put("stream", "config/mode", "enabled")
    assert rest.value("stream", "status/state") == "ready"


def test_state_runs_na_idle_ready_idle_through_initialize_arm_trigger_disarm(
    sim: EigerSimulator, rest: SimplonClient
) -> None:
    rest.configure(nimages=2, frame_time=0.002)
    states = [rest.value("detector", "status/state")]
    rest.command("initialize")
    states.append(rest.value("detector", "status/state"))
    assert rest.command("arm") == {"sequence id": 1}
    states.append(rest.value("detector", "status/state"))
    rest.command("trigger")
    states.append(rest.value("detector", "status/state"))
    assert rest.command("disarm") == {"sequence id": 1}
    states.append(rest.value("detector", "status/state"))
    assert states == ["na", "idle", "ready", "ready", "idle"]
    assert rest.command("arm") == {"sequence id": 2}
    commands = [path.rsplit("/", 1)[1] for method, path in sim.rest_log if "/command/" in path]
    assert commands == ["initialize", "arm", "trigger", "disarm", "arm"]
    assert all(method == "PUT" for method, path in sim.rest_log if "/command/" in path)


def test_arm_before_initialize_is_refused(rest: SimplonClient) -> None:
    with pytest.raises(RestError) as err:
        rest.command("arm")
    assert err.value.status == 400 and "na" in err.value.reason


def test_trigger_is_refused_when_not_armed_and_in_external_modes(rest: SimplonClient) -> None:
    rest.command("initialize")
    with pytest.raises(RestError) as err:
        rest.command("trigger")
    assert err.value.status == 400
    rest.configure(trigger_mode="exts")
    rest.command("arm")
    with pytest.raises(RestError) as err:
        rest.command("trigger")
    assert "external" in err.value.reason


def test_more_triggers_than_ntrigger_are_refused(rest: SimplonClient) -> None:
    rest.configure(ntrigger=1, nimages=1, frame_time=0.001)
    rest.command("initialize")
    rest.command("arm")
    rest.command("trigger")
    with pytest.raises(RestError) as err:
        rest.command("trigger")
    assert "disarm" in err.value.reason
