"""Open Inference Protocol tensors ⇄ numpy: raw bytes (what tritonclient sends and reads) or typed contents."""

from __future__ import annotations

import math
import struct

import numpy as np

from .errors import InvalidArgument

DTYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
          "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
          "FP32": np.float32, "FP64": np.float64}
CONTENTS = {"BOOL": "bool_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
            "UINT64": "uint64_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
            "INT64": "int64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def datatype_of(array: np.ndarray) -> str:
    return next(name for name, dtype in DTYPES.items() if np.dtype(dtype) == array.dtype)


MAX_DIMS = 8  # no model here takes more; numpy itself stops at 64


def element_count(shape: list[int], name: str) -> int:
    """Elements a declared shape holds, computed exactly (a shape from outside may overflow int64)."""
    if len(shape) > MAX_DIMS:
        raise InvalidArgument(f"input '{name}' has {len(shape)} dimensions; at most {MAX_DIMS} are accepted.")
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"input '{name}' has a negative dimension in shape {shape}.")
    return math.prod(shape)


def decode_bytes(raw: bytes, name: str) -> list[bytes]:
    """BYTES tensor from raw: each element is a 4-byte little-endian length, then the bytes."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidArgument(f"input '{name}': truncated BYTES element length at byte {offset}.")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidArgument(f"input '{name}': BYTES element of {length} bytes overruns the tensor.")
        items.append(raw[offset:offset + length])
        offset += length
    return items


def encode_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def to_numpy(tensor, raw: bytes | None) -> np.ndarray | list[bytes]:
    """One input tensor as numpy (BYTES: a list of bytes), checked against its declared shape."""
    name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
    count = element_count(shape, name)
    if datatype == "BYTES":
        items = decode_bytes(raw, name) if raw is not None else list(tensor.contents.bytes_contents)
        if len(items) != count:
            raise InvalidArgument(f"input '{name}' declares shape {shape} ({count} elements) but holds {len(items)}.")
        return items
    if datatype not in DTYPES:
        raise InvalidArgument(f"input '{name}' has datatype {datatype!r}; use one of {sorted(DTYPES)} or BYTES.")
    dtype = np.dtype(DTYPES[datatype]).newbyteorder("<")
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise InvalidArgument(f"input '{name}' declares {datatype} {shape} ({count * dtype.itemsize} bytes) but "
                                  f"raw_input_contents holds {len(raw)} bytes.")
        array = np.frombuffer(raw, dtype=dtype)
    else:
        if datatype == "FP16":
            raise InvalidArgument(f"input '{name}': FP16 travels only in raw_input_contents.")
        values = getattr(tensor.contents, CONTENTS[datatype])
        if len(values) != count:
            raise InvalidArgument(f"input '{name}' declares shape {shape} ({count} elements) but its contents hold "
                                  f"{len(values)}.")
        array = np.asarray(values, dtype=dtype)
    return array.reshape(shape).astype(DTYPES[datatype], copy=False)


def to_raw(array: np.ndarray) -> bytes:
    """Row-major little-endian bytes of an output tensor."""
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
