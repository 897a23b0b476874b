"""The acquisition sequence against the simulator, without Tango: REST order, handshake, faults."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from detpipe.pipeline.core.errors import AcquisitionStateError, DetectorRefused, DetectorUnreachable, TargetFileExists
from detpipe.pipeline.core.frame import Frame
from detpipe.pipeline.core.frame_queue import FrameQueue, FullPolicy
from detpipe.pipeline.core.series import EndOfSeries, EndReason, SeriesStart
from detpipe.pipeline.eiger.acquisition import EigerAcquisition, Phase, StreamSilent
from detpipe.pipeline.eiger.acquisition_params import AcquisitionParams
from detpipe.pipeline.eiger.simplon_client import SimplonClient
from detpipe.pipeline.eiger.stream_receiver import StreamReceiver
from detpipe.simulators import EigerSimulator


class QueueSink:
    """A writer stand-in: its queue is the receiver's outbox; it can refuse a series like a writer does."""

    def __init__(self, refuse: bool = False) -> None:
        self.inbox: FrameQueue = FrameQueue(1000, FullPolicy.DROP)
        self.refuse = refuse
        self.prepared: list[int] = []

    def claim(self, series_id: int) -> FrameQueue:
        if self.refuse:
            raise TargetFileExists(Path(f"/data/series_{series_id}_master.h5"))
        self.prepared.append(series_id)
        return self.inbox

    def items(self) -> list:
        return [self.inbox.get(timeout_s=1) for _ in range(self.inbox.size)]


@pytest.fixture
def sim() -> Iterator[EigerSimulator]:
    with EigerSimulator(model="500K", seed=2, paced=False) as s:
        yield s


@pytest.fixture
def acquisition(sim: EigerSimulator) -> Iterator[EigerAcquisition]:
    client = SimplonClient(sim.rest_url)
    client.command("initialize")
    receiver = StreamReceiver(sim.stream_endpoint)
    receiver.start()
    yield EigerAcquisition(client, receiver, stream_timeout_s=1.0, end_timeout_s=1.0)
    receiver.close()


def test_a_series_is_configured_armed_triggered_and_disarmed_in_order(sim, acquisition) -> None:
    sink = QueueSink()
    series_id = acquisition.prepare(AcquisitionParams(nb_frames=12, expo_time_s=0.001), sink.claim)
    assert sink.prepared == [series_id] and acquisition.phase is Phase.PREPARED
    end = acquisition.acquire()
    assert end.reason is EndReason.END_MESSAGE and acquisition.phase is Phase.IDLE
    items = sink.items()
    assert isinstance(items[0], SeriesStart) and items[0].config.frames_expected == 12
    assert [f.index for f in items if isinstance(f, Frame)] == list(range(12))
    assert isinstance(items[-1], EndOfSeries)
    commands = [path.rsplit("/", 1)[-1] for method, path in sim.rest_log if "/command/" in path]
    assert commands[-3:] == ["arm", "trigger", "disarm"]
    puts = [path.rsplit("/", 1)[-1] for method, path in sim.rest_log if method == "PUT" and "/config/" in path]
    assert puts.index("count_time") < puts.index("frame_time")


def test_a_writer_refusal_disarms_the_detector_and_nothing_is_forwarded(sim, acquisition) -> None:
    sink = QueueSink(refuse=True)
    with pytest.raises(TargetFileExists):
        acquisition.prepare(AcquisitionParams(nb_frames=3, expo_time_s=0.001), sink.claim)
    assert acquisition.phase is Phase.IDLE
    assert acquisition.client.detector_status() == "idle"
    assert sink.inbox.size == 0


def test_start_without_prepare_is_refused(acquisition) -> None:
    with pytest.raises(AcquisitionStateError, match="call Prepare first"):
        acquisition.acquire()


def test_a_detector_killed_mid_series_ends_the_series_in_the_sink(sim, acquisition) -> None:
    sim.paced = True
    sink = QueueSink()
    acquisition.prepare(AcquisitionParams(nb_frames=500, expo_time_s=0.01), sink.claim)
    sim.kill()
    with pytest.raises((DetectorUnreachable, StreamSilent)):
        acquisition.acquire()
    items = sink.items()
    assert isinstance(items[-1], EndOfSeries) and items[-1].reason in (EndReason.ERROR, EndReason.TIMEOUT)


def test_an_unreachable_detector_gives_a_clear_error() -> None:
    with pytest.raises(DetectorUnreachable, match="unreachable"):
        SimplonClient("http://127.0.0.1:9", timeout_s=1).api_version


def test_an_out_of_range_value_is_refused_with_the_detectors_reason(acquisition) -> None:
    with pytest.raises(DetectorRefused, match="count_time"):
        acquisition.client.set_config("count_time", -1.0)
