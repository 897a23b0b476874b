"""The SIMPLON client against DCUs that deviate from the documented API (issue 15, items 1, 2, 3 and 5),
each deviation switched on in a real simulator: unreadable side-effect keys, HTTP 5xx answers, no version
endpoint, and a pixel mask that only REST can give."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from detpipe.pipeline.core.errors import DetectorFailed
from detpipe.pipeline.core.frame import Frame
from detpipe.pipeline.core.series import EndReason, SeriesStart
from detpipe.pipeline.eiger.acquisition import EigerAcquisition
from detpipe.pipeline.eiger.acquisition_params import AcquisitionParams
from detpipe.pipeline.eiger.simplon_client import SimplonClient
from detpipe.pipeline.eiger.stream_receiver import StreamReceiver
from detpipe.simulators import EigerSimulator, eiger_cli
from tests.pipeline.eiger.test_acquisition import QueueSink

UNREADABLE = {"threshold/2/energy": 404, "countrate_correction_count_cutoff": 500}


@pytest.fixture(params=["1.8.0", "1.6.0"])
def sim(request: pytest.FixtureRequest) -> Iterator[EigerSimulator]:
    with EigerSimulator(model="500K", seed=3, paced=False, api_version=request.param) as s:
        yield s


@pytest.fixture
def client(sim: EigerSimulator) -> SimplonClient:
    return SimplonClient(sim.rest_url, timeout_s=5)


@pytest.fixture
def acquisition(client: SimplonClient, sim: EigerSimulator) -> Iterator[EigerAcquisition]:
    client.command("initialize")
    receiver = StreamReceiver(sim.stream_endpoint)
    receiver.start()
    yield EigerAcquisition(client, receiver, stream_timeout_s=2.0, end_timeout_s=1.0)
    receiver.close()


def run_series(acquisition: EigerAcquisition, frames: int, **params: object) -> list:
    """Prepare and acquire one series into a queue; returns every item that reached it."""
    sink = QueueSink()
    acquisition.prepare(AcquisitionParams(nb_frames=frames, expo_time_s=0.001, **params), sink.claim)
    end = acquisition.acquire()
    assert end.reason is EndReason.END_MESSAGE
    return sink.items()


def test_side_effect_keys_the_dcu_cannot_read_are_listed_and_the_put_goes_through(sim, client) -> None:
    sim.rest_deviations(unreadable_changed_keys=UNREADABLE)
    change = client.set_config("count_time", 0.05)  # longer than frame_time: moves it too
    assert change.values["count_time"] == pytest.approx(0.05) == sim.detector_config["count_time"]
    assert change.values["frame_time"] == pytest.approx(sim.detector_config["frame_time"])
    assert set(change.unreadable) == set(UNREADABLE)
    assert "HTTP 500" in change.unreadable["countrate_correction_count_cutoff"]
    assert "HTTP 404" in change.unreadable["threshold/2/energy"]


def test_the_key_put_must_still_read_back(sim, client) -> None:
    sim.rest_deviations(unreadable_changed_keys={"count_time": 500})
    with pytest.raises(DetectorFailed, match="HTTP 500"):
        client.set_config("count_time", 0.002)


def test_a_prepare_against_unreadable_keys_succeeds_and_reports_them(sim, acquisition) -> None:
    sim.rest_deviations(unreadable_changed_keys=UNREADABLE)
    items = run_series(acquisition, 4)
    assert sum(isinstance(item, Frame) for item in items) == 4
    assert set(acquisition.unreadable_keys) == set(UNREADABLE)
    assert acquisition.detector_values["count_time"] == pytest.approx(0.001)


def test_a_5xx_answer_says_the_detector_answered_with_status_and_message(sim, client) -> None:
    sim.rest_deviations(failing_requests={"arm": "high voltage not ready"})
    with pytest.raises(DetectorFailed) as caught:
        client.command("arm")
    assert caught.value.http_status == 500 and caught.value.message == "high voltage not ready"
    assert "answered HTTP 500: high voltage not ready" in str(caught.value)
    assert "unreachable" not in str(caught.value) and "DetectorUrl" not in str(caught.value)


def test_a_dcu_without_the_version_endpoint_is_probed_for_its_version(sim, client) -> None:
    sim.rest_deviations(version_endpoint=False)
    assert client.api_version == sim.api_version
    assert client.version_probed
    assert client.detector_status() == "na"


def test_a_probed_version_whose_status_answers_a_server_error_is_still_found(sim, client) -> None:
    """Any answer but 404 proves the DCU serves that version, a 500 from a busy status/state too."""
    sim.rest_deviations(version_endpoint=False, failing_requests={"state": "status task busy"})
    assert client.api_version == sim.api_version and client.version_probed


def test_the_simulator_cli_can_leave_out_the_version_endpoint() -> None:
    args = eiger_cli._parser().parse_args(["--model", "500K", "--rest-port", "0", "--stream-port", "0",
                                           "--api-version", "1.6.0", "--no-version-endpoint"])
    simulator = eiger_cli._build(args)
    assert simulator is not None
    with simulator:
        client = SimplonClient(simulator.rest_url, timeout_s=5)
        assert client.api_version == "1.6.0" and client.version_probed


def test_a_dcu_with_the_version_endpoint_is_not_probed(sim, client) -> None:
    assert client.api_version == sim.api_version and not client.version_probed
    assert not any("/status/state" in path for _, path in sim.rest_log)


def test_the_pixel_mask_reads_over_rest_as_the_simulators_mask(sim, client) -> None:
    mask = client.detector_array("pixel_mask")
    assert mask.shape == sim.frames.shape
    np.testing.assert_array_equal(mask, sim.frames.pixel_mask)
    assert mask.any()  # the 500K has gap and dead pixels: an all-zero mask would prove nothing


@pytest.mark.parametrize("header_detail", ["basic", "none", "all"])
def test_every_series_start_carries_the_detectors_pixel_mask(sim, acquisition, header_detail: str) -> None:
    start = run_series(acquisition, 2, header_detail=header_detail)[0]
    assert isinstance(start, SeriesStart) and start.pixel_mask is not None
    np.testing.assert_array_equal(start.pixel_mask, sim.frames.pixel_mask)
    assert acquisition.pixel_mask_note == ""
    read_over_rest = any(path.endswith("/config/pixel_mask") for _, path in sim.rest_log)
    assert read_over_rest == (header_detail != "all")  # the header brings it with "all"


def test_a_pixel_mask_the_dcu_cannot_serve_is_noted_and_the_series_goes_on(sim, acquisition) -> None:
    sim.rest_deviations(failing_requests={"pixel_mask": "mask not loaded"})
    items = run_series(acquisition, 3, header_detail="basic")
    assert items[0].pixel_mask is None
    assert sum(isinstance(item, Frame) for item in items) == 3
    assert "answered HTTP 500: mask not loaded" in acquisition.pixel_mask_note
