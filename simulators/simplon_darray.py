"""SIMPLON's JSON form of a 2-D config value (``pixel_mask``, ``flatfield``): a "darray" object.

``{"__darray__": [1, 0, 0], "type": "<u4", "shape": [width, height], "filters": ["base64"], "data": …}``:
little-endian bytes of the row-major image, base64-encoded, with the shape listed width first, as DECTRIS's
DCUs send it next to the TIFF form (DECTRIS SIMPLON API documentation).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

DARRAY_VERSION = [1, 0, 0]


def darray(image: np.ndarray) -> dict[str, Any]:
    """The darray object of a 2-D ``image`` (height, width)."""
    if image.ndim != 2:
        raise ValueError(f"a darray holds a 2-D image, got shape {image.shape}")
    little = np.ascontiguousarray(image, dtype=image.dtype.newbyteorder("<"))
    return {
        "__darray__": DARRAY_VERSION,
        "type": little.dtype.str,
        "shape": [int(image.shape[1]), int(image.shape[0])],
        "filters": ["base64"],
        "data": base64.b64encode(little.tobytes()).decode("ascii"),
    }


def darray_reply(image: np.ndarray) -> dict[str, Any]:
    """The GET reply of a 2-D config key: the darray as ``value``, like any other key's."""
    element = "float" if image.dtype.kind == "f" else "uint" if image.dtype.kind == "u" else "int"
    return {"value": darray(image), "value_type": f"{element}[][]", "access_mode": "r"}
