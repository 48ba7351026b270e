"""How class-gradient rows travel up: float, stochastic-rounded integers, or top-k entries.

A *row* is one class's gradient: every trainable parameter's gradient flattened and
concatenated in ``model.parameters()`` order. :class:`RowCodec` turns a matrix of rows into the
arrays a ``class_gradients`` reply carries and back; the engine meters those arrays, so the
ledger counts exactly what a codec sends. ``distill.grad_dtype`` picks the value type and
``distill.grad_topk`` the share of entries kept:

* ``float32`` / ``float16`` (dense): ``grads`` (rows × dim), the layout older clients sent.
* ``int8`` / ``int4`` / ``int2``: each value stochastically rounded to one of 2·L + 1 levels
  (L = 127, 7, 1) of its *segment*'s scale, the segment being one output row of a weight
  tensor (as DC's distance views it: out × rest) or a whole 1-D tensor: ``grads_q`` (codes
  packed 8 / 4 / 2 bits each, uint8) and ``grads_scale`` (rows × segments, float16, the
  largest magnitude ÷ L rounded *up*, so no value is clipped). Rounding up or down at random,
  with the fraction of the way to the upper level as its probability, makes every decoded
  value an unbiased estimate of the sent one. The uniform draws come from a generator per
  (step seed, client, class), so the same seed sends the same bytes.
* ``grad_topk`` = f < 1: of each tensor only the k = ⌈f · size⌉ largest magnitudes travel:
  their values (in the chosen type: ``grads``, or ``grads_q`` + ``grads_scale`` with one
  segment per tensor) in ascending position order, and ``topk_index`` (uint8 bytes per row):
  per tensor either a bitmap of its size or the k positions as uint16 (uint32 above 65,536
  entries), whichever is smaller — both sides know which from (size, k). What top-k leaves
  unsent is carried over by error feedback (:mod:`distdd_nas.distill.feedback`).

Scales are float16: a row whose largest magnitude exceeds 65,504 × L decodes to non-finite
values and is rejected by the server's guard, like any non-finite upload.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from distdd_nas.config import DistillSection
from distdd_nas.errors import ConfigError
from distdd_nas.federation.message import Scalar

#: Value types of uploaded gradients (``distill.grad_dtype``).
GRAD_DTYPES = ("float32", "float16", "int8", "int4", "int2")
#: Bits per code of the integer types.
INT_BITS = {"int8": 8, "int4": 4, "int2": 2}
#: Largest tensor whose top-k positions fit in uint16.
UINT16_POSITIONS = 2**16

Shapes = tuple[tuple[int, ...], ...]


class DecodeError(ValueError):
    """A reply whose arrays do not fit the codec (the server rejects it)."""


def segment_lengths(shapes: Shapes) -> np.ndarray:
    """Lengths of the scale segments of a dense row: one per output row of each tensor of
    rank ≥ 2 (out × rest), one per 1-D tensor (biases, norm affine parameters)."""
    lengths: list[int] = []
    for shape in shapes:
        size = math.prod(shape)
        rows = shape[0] if len(shape) >= 2 else 1
        lengths += [size // rows] * rows
    return np.asarray(lengths, dtype=np.int64)


def _round_up_float16(x: np.ndarray) -> np.ndarray:
    """float16 values ≥ ``x`` (≥ 0), each the nearest such: scales that never clip."""
    out = x.astype(np.float16)
    low = out.astype(np.float64) < x
    out[low] = np.nextafter(out[low], np.float16(np.inf))
    return out


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes (rows × m, each < 2**bits) packed into bytes, the first code in the low bits."""
    per = 8 // bits
    n, m = codes.shape
    padded = np.zeros((n, -(-m // per) * per), dtype=np.uint8)
    padded[:, :m] = codes
    out = np.zeros((n, padded.shape[1] // per), dtype=np.uint8)
    for j in range(per):
        out |= padded[:, j::per] << np.uint8(bits * j)
    return out


def unpack(packed: np.ndarray, bits: int, m: int) -> np.ndarray:
    """The first ``m`` codes of each row of :func:`pack`'s bytes."""
    per = 8 // bits
    mask = np.uint8(2**bits - 1)
    out = np.empty((packed.shape[0], packed.shape[1] * per), dtype=np.uint8)
    for j in range(per):
        out[:, j::per] = (packed >> np.uint8(bits * j)) & mask
    return out[:, :m]


def quantize(
    values: np.ndarray, lengths: np.ndarray, *, bits: int, rngs: Sequence[np.random.Generator]
) -> tuple[np.ndarray, np.ndarray]:
    """Stochastic rounding of ``values`` (rows × Σ lengths) to 2·L + 1 levels per segment:
    (packed codes, float16 scales rows × segments). Row i draws its uniforms from
    ``rngs[i]``: E[decoded] = values (up to float32 rounding)."""
    levels = 2 ** (bits - 1) - 1
    n, m = values.shape
    if n == 0:
        return pack(np.zeros((0, m), dtype=np.uint8), bits), np.zeros(
            (0, len(lengths)), dtype=np.float16
        )
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    with np.errstate(invalid="ignore", over="ignore"):
        scales = _round_up_float16(np.maximum.reduceat(np.abs(values), starts, axis=1) / levels)
        step = np.repeat(scales.astype(np.float32), lengths, axis=1)
        x = np.divide(values, step, out=np.zeros_like(values), where=step > 0)
        u = np.stack([rng.random(m, dtype=np.float32) for rng in rngs])
        q = np.clip(np.floor(x + u), -levels, levels)
        codes = (q + levels).astype(np.uint8)
    return pack(codes, bits), scales


def dequantize(
    packed: np.ndarray, scales: np.ndarray, lengths: np.ndarray, *, bits: int
) -> np.ndarray:
    """Values (float32, rows × Σ lengths) of :func:`quantize`'s codes and scales."""
    levels = 2 ** (bits - 1) - 1
    m = int(lengths.sum())
    if packed.shape != (len(scales), -(-m // (8 // bits))) or scales.shape[1:] != (len(lengths),):
        raise DecodeError(f"codes {packed.shape} / scales {scales.shape} do not fit {m} values")
    q = unpack(packed, bits, m).astype(np.float32) - levels
    return q * np.repeat(scales.astype(np.float32), lengths, axis=1)


@dataclass(frozen=True)
class TopPart:
    """One tensor of a top-k row: ``size`` entries, ``keep`` sent, positions as a bitmap or
    as uint16/uint32 numbers (whichever takes fewer bytes)."""

    size: int
    keep: int

    @property
    def position_width(self) -> int:
        return 2 if self.size <= UINT16_POSITIONS else 4

    @property
    def bitmap(self) -> bool:
        return -(-self.size // 8) < self.keep * self.position_width

    @property
    def index_bytes(self) -> int:
        return -(-self.size // 8) if self.bitmap else self.keep * self.position_width

    def positions(self, index: np.ndarray) -> np.ndarray:
        """The kept positions, ascending, from this part's index bytes."""
        if self.bitmap:
            pos = np.flatnonzero(np.unpackbits(index, count=self.size))
        else:
            pos = index.view(f"<u{self.position_width}").astype(np.int64)
        if len(pos) != self.keep or (len(pos) and (pos.max() >= self.size or pos.min() < 0)):
            raise DecodeError(f"top-k index does not name {self.keep} of {self.size} entries")
        return pos

    def index(self, pos: np.ndarray) -> np.ndarray:
        """This part's index bytes for ascending positions ``pos``."""
        if self.bitmap:
            mask = np.zeros(self.size, dtype=bool)
            mask[pos] = True
            return np.packbits(mask)
        return pos.astype(f"<u{self.position_width}").view(np.uint8)


def top_parts(shapes: Shapes, fraction: float) -> tuple[TopPart, ...]:
    """The top-k layout of a row: k = ⌈fraction · size⌉ (at least 1) of each tensor."""
    return tuple(TopPart(math.prod(s), max(1, math.ceil(fraction * math.prod(s)))) for s in shapes)


def select_top(rows: np.ndarray, parts: Sequence[TopPart]) -> tuple[np.ndarray, np.ndarray]:
    """(values rows × Σ keep, index bytes rows × Σ index_bytes) of each tensor's ``keep``
    largest magnitudes, in ascending position order (ties: NumPy's partition order)."""
    values, index = [], []
    for row in rows:
        start, vals, idx = 0, [], []
        for part in parts:
            seg = row[start : start + part.size]
            pos = np.sort(np.argpartition(np.abs(seg), part.size - part.keep)[-part.keep :])
            vals.append(seg[pos])
            idx.append(part.index(pos))
            start += part.size
        values.append(np.concatenate(vals))
        index.append(np.concatenate(idx))
    keep = sum(p.keep for p in parts)
    width = sum(p.index_bytes for p in parts)
    if not values:
        return np.zeros((0, keep), dtype=np.float32), np.zeros((0, width), dtype=np.uint8)
    return np.stack(values), np.stack(index)


def scatter_top(values: np.ndarray, index: np.ndarray, parts: Sequence[TopPart]) -> np.ndarray:
    """Dense rows (float32, zeros where nothing was sent) of :func:`select_top`'s output."""
    keep = sum(p.keep for p in parts)
    width = sum(p.index_bytes for p in parts)
    if values.shape[1:] != (keep,) or index.shape != (len(values), width):
        raise DecodeError(f"top-k values {values.shape} / index {index.shape} do not fit")
    out = np.zeros((len(values), sum(p.size for p in parts)), dtype=np.float32)
    for i in range(len(values)):
        start = at = byte = 0
        for part in parts:
            pos = part.positions(index[i, byte : byte + part.index_bytes])
            out[i, start + pos] = values[i, at : at + part.keep]
            start, at, byte = start + part.size, at + part.keep, byte + part.index_bytes
    return out


@dataclass(frozen=True)
class RowCodec:
    """The wire format of class-gradient rows for parameter ``shapes`` (see the module doc)."""

    shapes: Shapes
    dtype: str = "float32"
    topk: float = 1.0

    def __post_init__(self) -> None:
        if self.dtype not in GRAD_DTYPES:
            raise ConfigError(
                f"grad_dtype {self.dtype!r} is unsupported; use {' or '.join(GRAD_DTYPES)}"
            )
        if not 0.0 < self.topk <= 1.0:
            raise ConfigError(f"grad_topk={self.topk} is out of range; use 0 < grad_topk <= 1")

    @classmethod
    def from_config(cls, shapes: Shapes, config: Mapping[str, Scalar]) -> RowCodec:
        """The codec a ``class_gradients`` message asks for (float32 dense when unset)."""
        return cls(
            shapes, str(config.get("grad_dtype", "float32")), float(config.get("grad_topk", 1.0))
        )

    @classmethod
    def of(cls, model: nn.Module, config: Mapping[str, Scalar]) -> RowCodec:
        """:meth:`from_config` for the trainable parameters of ``model``."""
        shapes = tuple(tuple(p.shape) for p in model.parameters() if p.requires_grad)
        return cls.from_config(shapes, config)

    @property
    def sparse(self) -> bool:
        return self.topk < 1.0

    def _value_lengths(self) -> np.ndarray:
        if self.sparse:
            return np.asarray([p.keep for p in top_parts(self.shapes, self.topk)], dtype=np.int64)
        return segment_lengths(self.shapes)

    def encode(
        self, rows: np.ndarray, *, rngs: Sequence[np.random.Generator]
    ) -> dict[str, np.ndarray]:
        """The reply arrays of ``rows`` (float32, rows × dim); ``rngs``: one per row, used by
        the integer types only."""
        rows = np.asarray(rows, dtype=np.float32)
        arrays: dict[str, np.ndarray] = {}
        values = rows
        if self.sparse:
            values, arrays["topk_index"] = select_top(rows, top_parts(self.shapes, self.topk))
        bits = INT_BITS.get(self.dtype)
        if bits is None:
            arrays["grads"] = values.astype(self.dtype)
        else:
            codes, scales = quantize(values, self._value_lengths(), bits=bits, rngs=rngs)
            arrays.update(grads_q=codes, grads_scale=scales)
        return arrays

    def decode(self, arrays: Mapping[str, np.ndarray], rows: int) -> np.ndarray:
        """Rows (float32, ``rows`` × dim) of a reply's arrays.

        Raises:
            DecodeError: The arrays are missing or do not fit this codec and ``rows``.
        """
        try:
            bits = INT_BITS.get(self.dtype)
            if bits is None:
                values = np.asarray(arrays["grads"], dtype=np.float32)
            else:
                codes = np.asarray(arrays["grads_q"], dtype=np.uint8)
                scales = np.asarray(arrays["grads_scale"], dtype=np.float16)
                values = dequantize(codes, scales, self._value_lengths(), bits=bits)
            if self.sparse:
                index = np.asarray(arrays["topk_index"], dtype=np.uint8)
                values = scatter_top(values, index, top_parts(self.shapes, self.topk))
        except KeyError as err:
            raise DecodeError(f"the reply has no {err} array") from None
        dim = sum(math.prod(s) for s in self.shapes)
        if values.shape != (rows, dim):
            raise DecodeError(f"decoded rows of shape {values.shape}, expected {(rows, dim)}")
        return values


def wire_config(
    settings: DistillSection, *, step: int, net_seed: int, fresh: bool
) -> dict[str, Scalar]:
    """A ``class_gradients`` message's upload options beyond ``grad_dtype``: ``grad_topk``
    with what error feedback needs (``feedback_key``, the seed of the iteration's network, and
    the global ``step``); ``init_seed`` (the network as its seed, no weights) for the first
    step of an iteration with ``seed_broadcast``. Empty at the defaults: messages unchanged."""
    config: dict[str, Scalar] = {}
    if settings.grad_topk < 1.0:
        config.update(grad_topk=settings.grad_topk, feedback_key=net_seed, step=step)
    if fresh and settings.seed_broadcast:
        config["init_seed"] = net_seed
    return config


__all__ = [
    "GRAD_DTYPES",
    "INT_BITS",
    "DecodeError",
    "RowCodec",
    "TopPart",
    "dequantize",
    "pack",
    "quantize",
    "scatter_top",
    "segment_lengths",
    "select_top",
    "top_parts",
    "unpack",
    "wire_config",
]
