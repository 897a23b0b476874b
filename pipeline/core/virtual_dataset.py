"""Virtual datasets without a modification time, so a master written twice from the same input is the same bytes."""

from __future__ import annotations

from typing import Any

import h5py


def create_untimed_virtual_dataset(group: h5py.Group, name: str, layout: h5py.VirtualLayout,
                                   fillvalue: Any = None) -> h5py.Dataset:
    """``group.create_virtual_dataset`` with HDF5's object time tracking off. h5py turns it off for the
    datasets it creates (``track_times=False``) but not for virtual ones, whose header would otherwise hold the
    second they were written: the one byte by which a reduction repeated with ``SOURCE_DATE_EPOCH`` differed.
    Every source here lies in another file, so the layout's own property list is the one HDF5 gets."""
    layout.dcpl.set_obj_track_times(False)
    return group.create_virtual_dataset(name, layout, fillvalue=fillvalue)
