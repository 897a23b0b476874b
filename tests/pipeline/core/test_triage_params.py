"""Triage parameters under OM's names: OM's strict hit rule becomes detpipe's inclusive one, an OM monitor.yaml
gives its peakfinder8 and crystallography sections, and two spellings of one parameter must agree."""

from __future__ import annotations

import pytest

from detpipe.pipeline.core.errors import ConfigError
from detpipe.pipeline.core.triage_params import TriageParams, om_monitor_parameters


def test_om_hit_rule_names_mean_the_inclusive_bounds_one_inside() -> None:
    """OM: min < n_peaks < max; detpipe: min_peaks <= n_peaks <= max_peaks."""
    params = TriageParams.from_mapping({"min_num_peaks_for_hit": 8, "max_num_peaks_for_hit": 500,
                                        "number_of_pixel_per_bin_in_radial_statistics": 60})
    assert (params.min_peaks, params.max_peaks, params.pixels_per_ring) == (9, 499, 60)
    for n_peaks, om_hit in ((8, False), (9, True), (499, True), (500, False)):
        assert (params.min_peaks <= n_peaks <= params.max_peaks) == om_hit == (8 < n_peaks < 500)


def test_both_spellings_of_one_parameter_must_agree() -> None:
    assert TriageParams.from_mapping({"min_num_peaks_for_hit": 8, "min_peaks": 9}).min_peaks == 9
    with pytest.raises(ConfigError, match="min_num_peaks_for_hit 8 \\(OM\\) means min_peaks 9, but min_peaks is 8"):
        TriageParams.from_mapping({"min_num_peaks_for_hit": 8, "min_peaks": 8})
    with pytest.raises(ConfigError, match="max_num_peaks_for_hit must be an int"):
        TriageParams.from_mapping({"max_num_peaks_for_hit": "many"})


def test_an_om_monitor_yaml_gives_its_triage_sections_and_names_what_it_leaves() -> None:
    document = {
        "om": {"processing_layer": "crystallography"},
        "crystallography": {"min_num_peaks_for_hit": 10, "max_num_peaks_for_hit": 5000, "saturation_value": 14000,
                            "max_saturated_peaks": 3, "running_average_window_size": 200},
        "peakfinder8_peak_detection": {"max_num_peaks": 2048, "adc_threshold": 250.0, "minimum_snr": 7.0,
                                       "max_res": 900, "bad_pixel_map_hdf5_path": "/data/data"},
    }
    values, ignored = om_monitor_parameters(document)
    params = TriageParams.from_mapping(values)
    assert (params.min_peaks, params.max_peaks, params.adc_threshold, params.max_res) == (11, 4999, 250.0, 900.0)
    # OM's saturation_value bounds a peak's integrated intensity, detpipe's its brightest pixel: not taken
    assert (params.max_saturated_peaks, params.saturation_value) == (3, 0.0)
    assert ignored == ["peakfinder8_peak_detection.bad_pixel_map_hdf5_path", "crystallography.saturation_value",
                       "crystallography.running_average_window_size"]
    assert om_monitor_parameters({"min_peaks": 3}) == ({"min_peaks": 3}, [])  # a flat mapping, as it is
    with pytest.raises(ConfigError, match="OM section crystallography must be a mapping"):
        om_monitor_parameters({"crystallography": [1, 2]})
