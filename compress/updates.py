"""Compression of federated client updates (a dict of float tensors) into what a client sends:
`none` (float32), `int8` (symmetric, one float32 scale per tensor, all scales in one array) or
`topk` (the largest |values| of each tensor: float32 values and int32 flat indices).

A pure transform: encode on the client, decode on the server. Decoding never trusts the payload
to be small: the DP mechanism (privacy.federated.DPAggregator) clips the *decoded* update, so
its sensitivity does not depend on what the compression did.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

COMPRESSIONS: tuple[str, ...] = ("none", "int8", "topk")
SCALES = "__scales__"


def encode(
    update: Mapping[str, np.ndarray], *, method: str, topk_fraction: float = 0.1
) -> dict[str, np.ndarray]:
    """The arrays a client sends for `update` (names are the tensors', with suffixes)."""
    if method == "none":
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in update.items()}
    if method == "int8":
        payload: dict[str, np.ndarray] = {}
        scales = []
        for k, v in update.items():
            flat = np.asarray(v, dtype=np.float32)
            peak = float(np.max(np.abs(flat))) if flat.size else 0.0
            scale = peak / 127.0 if peak > 0 else 1.0
            payload[k] = np.clip(np.rint(flat / scale), -127, 127).astype(np.int8)
            scales.append(scale)
        payload[SCALES] = np.asarray(scales, dtype=np.float32)
        return payload
    if method == "topk":
        if not 0 < topk_fraction <= 1:
            raise ValueError(f"topk_fraction must be in (0, 1], got {topk_fraction}")
        payload = {}
        for k, v in update.items():
            flat = np.asarray(v, dtype=np.float32).ravel()
            keep = min(flat.size, max(1, math.ceil(topk_fraction * flat.size)))
            idx = np.sort(np.argpartition(np.abs(flat), flat.size - keep)[flat.size - keep :])
            payload[k + ".values"] = flat[idx].astype(np.float32)
            payload[k + ".indices"] = idx.astype(np.int32)
        return payload
    raise ValueError(f"unknown update compression '{method}' (known: {', '.join(COMPRESSIONS)})")


def decode(
    payload: Mapping[str, np.ndarray], *, method: str, shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """The float32 update a payload stands for (ValueError when it does not fit `shapes`)."""
    out: dict[str, np.ndarray] = {}
    if method == "none":
        for k, shape in shapes.items():
            out[k] = np.asarray(payload[k], dtype=np.float32).reshape(shape)
    elif method == "int8":
        scales = np.asarray(payload[SCALES], dtype=np.float32)
        if scales.shape != (len(shapes),):
            raise ValueError("int8 update: one scale per tensor expected")
        for (k, shape), scale in zip(shapes.items(), scales, strict=True):
            out[k] = (np.asarray(payload[k], dtype=np.float32) * float(scale)).reshape(shape)
    elif method == "topk":
        for k, shape in shapes.items():
            flat = np.zeros(int(np.prod(shape)), dtype=np.float32)
            idx = np.asarray(payload[k + ".indices"], dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= flat.size):
                raise ValueError(f"top-k update: an index of '{k}' is out of range")
            flat[idx] = np.asarray(payload[k + ".values"], dtype=np.float32)
            out[k] = flat.reshape(shape)
    else:
        known = ", ".join(COMPRESSIONS)
        raise ValueError(f"unknown update compression '{method}' (known: {known})")
    return out


def payload_nbytes(payload: Mapping[str, np.ndarray]) -> int:
    """Raw bytes of a payload's arrays (the serialised size adds a header per array)."""
    return int(sum(np.asarray(v).nbytes for v in payload.values()))
