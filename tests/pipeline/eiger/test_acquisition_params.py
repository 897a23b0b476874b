"""LImA acquisition settings and their SIMPLON mapping; every bad value is reported at once."""

from __future__ import annotations

import pytest

from detpipe.pipeline.core.errors import ConfigError
from detpipe.pipeline.eiger.acquisition_params import AcquisitionParams, TriggerMode


@pytest.mark.parametrize(
    ("mode", "simplon", "nimages", "ntrigger"),
    [("INTERNAL_TRIGGER", "ints", 10, 1), ("INTERNAL_TRIGGER_MULTI", "ints", 1, 10),
     ("EXTERNAL_TRIGGER", "exts", 10, 1), ("EXTERNAL_TRIGGER_MULTI", "exts", 1, 10), ("EXTERNAL_GATE", "exte", 1, 10)],
)
def test_lima_trigger_modes_map_to_simplon_images_and_triggers(mode, simplon, nimages, ntrigger) -> None:
    params = AcquisitionParams.from_mapping({"nb_frames": 10, "trigger_mode": mode})
    settings = params.detector_settings()
    assert (settings["trigger_mode"], settings["nimages"], settings["ntrigger"]) == (simplon, nimages, ntrigger)
    assert params.trigger_mode is TriggerMode(mode)


def test_count_time_is_put_before_frame_time() -> None:
    keys = list(AcquisitionParams(expo_time_s=0.1, latency_time_s=0.01).detector_settings())
    assert keys.index("count_time") < keys.index("frame_time")


def test_every_bad_value_is_reported_in_one_error() -> None:
    with pytest.raises(ConfigError) as err:
        AcquisitionParams.from_mapping({"nb_frames": 0, "expo_time_s": -1, "compression": "zip"})
    assert len(err.value.problems) == 3


def test_unknown_keys_and_trigger_modes_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown key 'frames'"):
        AcquisitionParams.from_mapping({"frames": 3})
    with pytest.raises(ConfigError, match="SOFTWARE"):
        AcquisitionParams.from_mapping({"trigger_mode": "SOFTWARE"})
