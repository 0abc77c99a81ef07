"""The shared weights file of a bundle version (safetensors layout), read with numpy alone (torch- and onnx-free:
the server reads it). Written by export/shared_weights.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WEIGHTS_FILE = "shared_weights.safetensors"
ALIGN = 64  # bytes: every tensor starts aligned in the file and in memory
SAFETENSORS_DTYPES = {"F32": np.dtype(np.float32), "F16": np.dtype(np.float16), "I64": np.dtype(np.int64),
                      "I32": np.dtype(np.int32), "U8": np.dtype(np.uint8)}
ONNX_DATA_TYPES = frozenset({1, 2, 6, 7, 10})  # FLOAT, UINT8, INT32, INT64, FLOAT16: what the file can hold


class WeightsFileError(ValueError):
    """A shared weights file that is not what the bundle says; the message names the file and the fix."""


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of the file by name, as read-only views of ONE buffer read from disk (kept alive by them)."""
    path = Path(path)
    buffer = np.fromfile(path, dtype=np.uint8)
    try:
        length = int.from_bytes(buffer[:8].tobytes(), "little")
        header = json.loads(buffer[8:8 + length].tobytes())
        start = 8 + length
        tensors = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            begin, end = entry["data_offsets"]
            dtype = SAFETENSORS_DTYPES[entry["dtype"]]
            view = buffer[start + begin:start + end].view(dtype).reshape(entry["shape"])
            view.flags.writeable = False
            tensors[name] = view
    except (ValueError, KeyError, TypeError) as error:
        raise WeightsFileError(f"'{path}' is not a shared weights file this version reads ({error}): export the "
                               "bundle again.") from None
    return tensors
