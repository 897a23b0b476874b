"""Layouts and sources: file vs online order, one source per module, and modules missing from a train."""

from __future__ import annotations

import numpy as np
import pytest

from detpipe.simulators import AgipdSimulator
from tests.simulators.agipd_bridge_helpers import (
    COMBINED_CORRECTED,
    COMBINED_RAW,
    bridge_client,
    module_source,
    to_file_order,
)


def received_train(**options: object) -> dict:
    sim = AgipdSimulator(cells=3, seed=11, paced=False, hit_fraction=1.0, **options)  # type: ignore[arg-type]
    with sim, bridge_client(sim.endpoint) as client:
        data, _ = client.next()
    return data


@pytest.mark.parametrize("product", ["raw", "corrected"])
def test_file_and_online_layouts_are_transposes_of_each_other(product: str) -> None:
    source = COMBINED_RAW if product == "raw" else COMBINED_CORRECTED
    in_file = received_train(product=product, layout="file")[source]
    online = received_train(product=product, layout="online")[source]
    if product == "raw":  # (pulse, module, 2, ss, fs) → (module, 2, fs, ss, pulse)
        np.testing.assert_array_equal(online["image.data"], np.transpose(in_file["image.data"], (1, 2, 4, 3, 0)))
    else:  # (pulse, module, ss, fs) → (module, fs, ss, pulse), the online order
        for key in ("image.data", "image.gain", "image.mask"):
            np.testing.assert_array_equal(online[key], np.transpose(in_file[key], (1, 3, 2, 0)), err_msg=key)
    for key in ("image.cellId", "image.pulseId", "image.trainId"):
        np.testing.assert_array_equal(online[key], in_file[key])


@pytest.mark.parametrize(
    ("product", "layout", "shape"),
    [
        ("raw", "file", (3, 2, 512, 128)),
        ("raw", "online", (2, 128, 512, 3)),
        ("corrected", "file", (3, 512, 128)),
        ("corrected", "online", (128, 512, 3)),
    ],
)
def test_each_module_source_carries_its_modules_slice(product: str, layout: str, shape: tuple[int, ...]) -> None:
    with AgipdSimulator(
        product=product, layout=layout, sources="modules", cells=3, seed=11, paced=False, hit_fraction=1.0
    ) as sim, bridge_client(sim.endpoint) as client:
        data, meta = client.next()
        expected = sim.train(0)
    assert sorted(data) == sorted(module_source(m) for m in range(16))
    kind = f"module_{product}"
    for module in range(16):
        source = data[module_source(module)]
        assert source["image.data"].shape == shape
        np.testing.assert_array_equal(to_file_order(source["image.data"], kind, layout), expected.data[:, module])
        if product == "corrected":
            for key, full in (("image.gain", expected.gain), ("image.mask", expected.mask)):
                assert source[key].shape == shape
                np.testing.assert_array_equal(to_file_order(source[key], kind, layout), full[:, module])
        np.testing.assert_array_equal(source["image.cellId"], expected.cell_ids)
        assert meta[module_source(module)]["timestamp.tid"] == expected.train_id


def test_a_missing_module_leaves_its_source_out_of_that_train_only() -> None:
    with AgipdSimulator(
        sources="modules", cells=2, seed=11, paced=False, missing_modules={1: {3, 12}}
    ) as sim, bridge_client(sim.endpoint) as client:
        trains = [client.next()[0] for _ in range(3)]
    assert len(trains[0]) == len(trains[2]) == 16
    assert sorted(trains[1]) == sorted(module_source(m) for m in range(16) if m not in (3, 12))


@pytest.mark.parametrize("product", ["raw", "corrected"])
def test_a_missing_module_is_flagged_and_zeroed_in_the_combined_source(product: str) -> None:
    source_name = COMBINED_RAW if product == "raw" else COMBINED_CORRECTED
    with AgipdSimulator(
        product=product, cells=2, seed=11, paced=False, hit_fraction=1.0, missing_modules={0: {5}}
    ) as sim, bridge_client(sim.endpoint) as client:
        first, second = (client.next()[0][source_name] for _ in range(2))
        assert sim.truth.train(0).modules_present[5] is False
    assert first["modulesPresent"] == [m != 5 for m in range(16)]
    assert second["modulesPresent"] == [True] * 16
    for key in [k for k in ("image.data", "image.gain", "image.mask") if k in first]:
        assert not first[key][:, 5].any(), key
    assert first["image.data"][:, 4].any() and second["image.data"][:, 5].any()
