"""Every detpipe device class explains itself in Jive and Taurus: property descriptions and defaults, attribute
labels, units, formats, descriptions and limits, choices as DevEnum drop-downs, read from a running server the way
Jive reads them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tango
from tango.server import Device
from tango.test_context import MultiDeviceTestContext
from tango.utils import is_float_type, is_int_type

from detpipe.devices.agipd_detector import AgipdDetector
from detpipe.devices.cli.embedded_database import free_tcp_port
from detpipe.devices.data_policy import DataPolicy
from detpipe.devices.eiger_detector import TRIGGER_MODES, EigerDetector
from detpipe.devices.eiger_receiver import EigerReceiver
from detpipe.devices.hit_finder import HitFinder
from detpipe.devices.nexus_writer import NexusWriter
from detpipe.devices.server import DEVICE_CLASSES
from tests.device_servers import device_server

WRITER = "test/nexuswriter/1"
NOT_SET = "Not specified"  # what Tango reports for a format, min_value or max_value nobody declared
TANGO_DEFAULT_DESCRIPTION = "No description"

# Numeric attributes without a physical unit, and why; every other int or float attribute must set `unit`.
DIMENSIONLESS = {
    "series_id": "an identifier", "run_number": "an identifier", "last_train_id": "an identifier",
    "miss_seed": "a random seed", "binning": "a factor (1 or 2)",
    "mantissa_bits": "a bit count, kept unitless as in the RED files' NXnote (reduction_params.UNITS)",
    "compression_ratio": "a ratio", "reduction_ratio": "a ratio", "miss_fraction": "a fraction",
    "pixels_dropped_fraction": "a fraction", "minimum_snr": "a signal-to-noise ratio",
    "rms_error_sigma": "a multiple of the Poisson sigma", "live_view_cell": "a frame's position in the train",
    "live_view_module": "a module number (-1: all 16)", "sparse_threshold_sigma": "a multiple of the noise sigma",
}
# Writable numeric settings where every value is meaningful (thresholds in detector units may be negative on
# corrected data); every other writable int or float attribute must set min_value.
UNBOUNDED = {"adc_threshold", "lit_pixel_threshold"}
# Settings with a natural ceiling, which must set max_value as well.
BOUNDED = {"photon_energy", "run_number", "miss_fraction", "mantissa_bits", "binning"}
# Every setting with a fixed set of values is a DevEnum (Taurus shows a drop-down), labels in the spelling of
# LImA (trigger mode, overwrite policy), SIMPLON (compression) and the RED policy files.
ENUMERATED = {
    EigerDetector: {"acq_trigger_mode": TRIGGER_MODES, "compression_type": ["bslz4", "lz4"]},
    NexusWriter: {"saving_overwrite_policy": ["Abort", "Overwrite"]},
    DataPolicy: {"policy": ["raw", "red", "raw+red"]},
}
# Writable strings, and why they are free text rather than a choice.
FREE_TEXT_SETTINGS = {"saving_directory": "a path", "saving_prefix": "a file name pattern",
                      "modules": "a JSON list", "rois": "a JSON list", "embargo_date": "an ISO date or empty"}


def start_properties(data_root: Path) -> dict[type[Device], dict[str, object]]:
    """The mandatory properties each class needs to start; nothing on the other end needs to answer."""
    return {
        NexusWriter: {"DataRoots": [str(data_root)]},
        DataPolicy: {"WriterDevice": WRITER},
        HitFinder: {"Workers": 1},
        EigerDetector: {"DetectorUrl": f"http://127.0.0.1:{free_tcp_port()}",
                        "StreamEndpoint": f"tcp://127.0.0.1:{free_tcp_port()}", "WriterDevice": WRITER},
        EigerReceiver: {"StreamEndpoint": f"tcp://127.0.0.1:{free_tcp_port()}", "WriterDevice": WRITER},
        AgipdDetector: {"BridgeEndpoint": f"tcp://127.0.0.1:{free_tcp_port()}", "WriterDevice": WRITER},
    }


def device_name(device_class: type[Device]) -> str:
    return f"test/{device_class.__name__.lower()}/1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiDeviceTestContext]:
    """One server process running every class of ``detpipe server``."""
    properties = start_properties(tmp_path_factory.mktemp("data"))
    assert set(properties) == set(DEVICE_CLASSES), "give start_properties an entry for every class in DEVICE_CLASSES"
    devices = [{"class": cls, "devices": [{"name": device_name(cls), "properties": properties[cls]}]}
               for cls in DEVICE_CLASSES]
    with device_server(devices, timeout_s=60) as ctx:
        yield ctx


def attribute_configs(server: MultiDeviceTestContext, device_class: type[Device]) -> list[tango.AttributeInfoEx]:
    configs = server.get_device(device_name(device_class)).attribute_list_query_ex()
    return [config for config in configs if config.name not in ("State", "Status")]


def numeric(config: tango.AttributeInfoEx) -> bool:
    return is_int_type(config.data_type) or is_float_type(config.data_type)


parametrize_classes = pytest.mark.parametrize("device_class", DEVICE_CLASSES, ids=lambda cls: cls.__name__)


@parametrize_classes
def test_every_device_property_has_a_description_and_a_default_unless_mandatory(
        server: MultiDeviceTestContext, device_class: type[Device]) -> None:
    admin = tango.DeviceProxy(server.get_device(device_name(device_class)).adm_name())
    wizard = admin.QueryWizardDevProperty(device_class.__name__)  # what Jive shows: name, description, default
    shown = {name: (doc, default) for name, doc, default in zip(wizard[::3], wizard[1::3], wizard[2::3])}
    declared = device_class.TangoClassClass.device_property_list  # name: [type, doc, default, mandatory]
    assert set(shown) == set(declared)
    for name, (doc, default) in shown.items():
        mandatory = declared[name][3]
        assert doc.strip(), f"{name} has no description"
        if mandatory:
            assert "mandatory" in doc.lower(), f"{name} is mandatory but its description does not say so: {doc!r}"
        else:
            assert declared[name][2] is not None, f"{name} has no default_value"


@parametrize_classes
def test_every_attribute_has_a_description_and_a_format(
        server: MultiDeviceTestContext, device_class: type[Device]) -> None:
    for config in attribute_configs(server, device_class):
        assert config.description.strip() not in ("", TANGO_DEFAULT_DESCRIPTION), f"{config.name} has no description"
        assert config.format not in ("", NOT_SET), f"{config.name} has no format"
        if is_int_type(config.data_type):  # Tango's default "%6.2f" would show counters as 12.00
            assert config.format == "%d", f"{config.name} is an integer shown as {config.format!r}"


@parametrize_classes
def test_numeric_attributes_have_a_unit(server: MultiDeviceTestContext, device_class: type[Device]) -> None:
    unitless = [config.name for config in attribute_configs(server, device_class)
                if numeric(config) and not config.unit and config.name not in DIMENSIONLESS]
    assert not unitless, f"set unit= (or list them in DIMENSIONLESS with a reason): {unitless}"


@parametrize_classes
def test_numeric_settings_have_limits(server: MultiDeviceTestContext, device_class: type[Device]) -> None:
    settings = [config for config in attribute_configs(server, device_class)
                if numeric(config) and config.writable != tango.AttrWriteType.READ]
    no_min = [c.name for c in settings if c.min_value == NOT_SET and c.name not in UNBOUNDED]
    no_max = [c.name for c in settings if c.max_value == NOT_SET and c.name in BOUNDED]
    assert not no_min, f"set min_value= (or list them in UNBOUNDED): {no_min}"
    assert not no_max, f"set max_value=: {no_max}"


@parametrize_classes
def test_every_attribute_has_a_label(server: MultiDeviceTestContext, device_class: type[Device]) -> None:
    """Tango's default label is the attribute's name; Jive and Taurus forms show the label."""
    unlabelled = [config.name for config in attribute_configs(server, device_class)
                  if config.label.strip() in ("", config.name)]
    assert not unlabelled, f"set label=: {unlabelled}"


@parametrize_classes
def test_settings_with_a_fixed_set_of_values_are_devenums(
        server: MultiDeviceTestContext, device_class: type[Device]) -> None:
    configs = attribute_configs(server, device_class)
    enums = {config.name: list(config.enum_labels) for config in configs
             if config.data_type == tango.CmdArgType.DevEnum}
    assert enums == ENUMERATED.get(device_class, {})
    text = {config.name for config in configs
            if config.data_type == tango.CmdArgType.DevString and config.writable != tango.AttrWriteType.READ}
    assert text <= set(FREE_TEXT_SETTINGS), f"a choice should be a DevEnum, or list it in FREE_TEXT_SETTINGS: {text}"


def test_a_devenum_is_written_by_label_or_index_and_anything_else_is_refused_unchanged(
        server: MultiDeviceTestContext) -> None:
    writer = server.get_device(device_name(NexusWriter))
    writer.saving_overwrite_policy = "Overwrite"  # by label: pytango's attribute syntax, Taurus' drop-down
    assert writer.saving_overwrite_policy.name == "Overwrite"
    writer.write_attribute("saving_overwrite_policy", 0)  # by index: write_attribute(s), Sardana, C++ clients
    assert writer.saving_overwrite_policy.name == "Abort"
    with pytest.raises(AttributeError, match="Abort.*Overwrite"):
        writer.saving_overwrite_policy = "Append"  # LImA has it; detpipe never appends to a finished file
    with pytest.raises(tango.DevFailed):
        writer.write_attribute("saving_overwrite_policy", 2)
    assert writer.saving_overwrite_policy.name == "Abort"
