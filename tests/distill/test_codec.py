"""Upload codecs (distill/codec.py, distill/feedback.py) and the seed broadcast: round trips
against hand-computed values, unbiased stochastic rounding, exact top-k, error feedback, the
bytes the ledger meters, and determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distdd_nas.config import DistillSection, StudyConfig
from distdd_nas.data import DatasetSplits
from distdd_nas.distill.client import class_gradients
from distdd_nas.distill.codec import (
    RowCodec,
    TopPart,
    dequantize,
    pack,
    quantize,
    segment_lengths,
    top_parts,
    unpack,
)
from distdd_nas.distill.feedback import encode_rows, memory_of
from distdd_nas.distill.server import aggregate_class_gradients
from distdd_nas.federation import Message
from distdd_nas.federation.model_wire import model_from_message
from distdd_nas.models import build_model, get_parameters
from tests.distill.conftest import TINY, label_skew_parts, make_clients, make_engine
from tests.distill.test_loop import SMALL, distill

#: TINY's trainable shapes on 1×8×8 digits, written out: conv, bias, norm weight and bias, twice,
#: then the linear layer on the 8×2×2 feature map (1,026 parameters).
TINY_SHAPES = ((8, 1, 3, 3), (8,), (8,), (8,), (8, 8, 3, 3), (8,), (8,), (8,), (10, 32), (10,))


def rngs(n: int, seed: int = 0) -> list[np.random.Generator]:
    return [np.random.default_rng([seed, i]) for i in range(n)]


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_pack_unpack_round_trip(bits: int) -> None:
    codes = np.random.default_rng(0).integers(0, 2**bits, size=(3, 13)).astype(np.uint8)
    packed = pack(codes, bits)
    assert packed.shape == (3, -(-13 * bits // 8))
    np.testing.assert_array_equal(unpack(packed, bits, 13), codes)


def test_two_bit_rounding_by_hand() -> None:
    # one segment, largest magnitude 1.0: levels {-1, 0, 1}, scale exactly 1.0; 0.3 rounds up
    # to 1 with probability 0.3, -0.5 to 0 with probability 0.5, 1.0 stays 1, 0 stays 0
    values = np.tile(np.float32([0.3, -0.5, 1.0, 0.0]), (20000, 1))
    lengths = np.array([4])
    codes, scales = quantize(values, lengths, bits=2, rngs=rngs(20000))
    assert scales.dtype == np.float16 and (scales == 1.0).all()
    decoded = dequantize(codes, scales, lengths, bits=2)
    assert set(np.unique(decoded[:, 0])) == {0.0, 1.0} and set(np.unique(decoded[:, 1])) == {
        -1.0,
        0.0,
    }
    assert (decoded[:, 2] == 1.0).all() and (decoded[:, 3] == 0.0).all()
    np.testing.assert_allclose(decoded.mean(axis=0), [0.3, -0.5, 1.0, 0.0], atol=0.012)


def test_int8_rounding_is_unbiased_and_never_clips() -> None:
    row = np.float32([0.5, -0.25, 0.1, 0.013, 0.0, 7e-9])
    lengths = np.array([4, 2])  # two segments, each with its own scale
    values = np.tile(row, (4000, 1))
    codes, scales = quantize(values, lengths, bits=8, rngs=rngs(4000))
    # scale = largest magnitude / 127, rounded up to a float16
    for s, top in zip(scales[0], (0.5, 7e-9), strict=True):
        assert float(s) >= top / 127 and float(np.nextafter(s, np.float16(0))) < top / 127
    decoded = dequantize(codes, scales, lengths, bits=8)
    step = np.repeat(scales[0].astype(np.float64), lengths)
    assert (np.abs(decoded) <= 127 * step + 1e-12).all()
    x = row / step  # each value lies between two levels: decoded is one of them
    assert np.isin(np.round(decoded / step - np.floor(x)), [0, 1]).all()
    np.testing.assert_allclose(decoded.mean(axis=0), row, rtol=0, atol=4 * step.max() / 127)
    np.testing.assert_allclose(decoded[:, :4].mean(axis=0), row[:4], atol=3e-4)


def test_segments_are_output_rows_and_whole_1d_tensors() -> None:
    lengths = segment_lengths(((2, 3, 2, 2), (2,), (4, 5)))
    assert lengths.tolist() == [12, 12, 2, 5, 5, 5, 5]


def test_top_k_keeps_exactly_k_largest_per_tensor() -> None:
    shapes = ((4, 5), (3,))
    row = np.float32(np.random.default_rng(1).standard_normal(23))
    codec = RowCodec(shapes, "float32", topk=0.25)  # ⌈0.25·20⌉ = 5 and ⌈0.25·3⌉ = 1
    assert [p.keep for p in top_parts(shapes, 0.25)] == [5, 1]
    arrays = codec.encode(row[None], rngs=[])
    assert arrays["grads"].shape == (1, 6)
    sent = codec.decode(arrays, 1)[0]
    for lo, hi, k in ((0, 20, 5), (20, 23, 1)):
        kept = np.flatnonzero(sent[lo:hi])
        assert len(kept) == k
        assert set(kept) == set(np.argsort(-np.abs(row[lo:hi]))[:k])
        np.testing.assert_array_equal(sent[lo:hi][kept], row[lo:hi][kept])


def test_top_k_index_is_the_smaller_of_bitmap_and_positions() -> None:
    assert TopPart(100, 5).index_bytes == 10 and not TopPart(100, 5).bitmap  # 5 × 2 < 13
    assert TopPart(100, 10).index_bytes == 13 and TopPart(100, 10).bitmap  # 13 < 10 × 2
    assert TopPart(70000, 10).position_width == 4  # beyond uint16


def test_error_feedback_sends_a_constant_gradient_in_full(digits: DatasetSplits) -> None:
    (client,) = make_clients(digits.train, [np.arange(10)])
    g = np.float32(np.random.default_rng(2).standard_normal((2, 30)))
    codec = RowCodec(((6, 5),), "float32", topk=0.1)  # 3 of 30 entries per step

    def send(step: int, key: int = 5) -> np.ndarray:
        msg = Message(config={"seed": step, "feedback_key": key, "step": step})
        return codec.decode(encode_rows(client, msg, g, [1, 4], codec), 2)

    steps = 40
    sent = [send(step) for step in range(1, steps + 1)]
    total = np.sum(sent, axis=0)
    held = memory_of(client).after
    residual = np.stack([held[1], held[4]])
    # everything computed was sent or is still held: Σ sent + residual = T·g
    np.testing.assert_allclose(total + residual, steps * g, rtol=1e-5, atol=1e-4)
    # and what is held stays bounded (an entry goes once it has grown), so sent/T → g
    assert np.abs(residual).max() < 10 * np.abs(g).max()
    assert (np.count_nonzero(sent[-1], axis=1) == 3).all()
    # a re-sent step starts again from the residual before it: the same reply, same memory
    np.testing.assert_array_equal(send(steps), sent[-1])
    np.testing.assert_array_equal(memory_of(client).after[4], held[4])
    # a new outer iteration (another network) drops the residual
    np.testing.assert_array_equal(send(1, key=6), codec.decode(codec.encode(g, rngs=[]), 2))


def test_metered_bytes_of_an_int4_top_k_reply_by_hand(digits: DatasetSplits) -> None:
    labels = digits.train.labels.numpy()
    engine = make_engine(digits.train, [np.flatnonzero(np.isin(labels, [1, 3]))])
    net = build_model(TINY, input_shape=(1, 8, 8), num_classes=10, seed=1)
    assert tuple(tuple(p.shape) for p in net.parameters()) == TINY_SHAPES
    config = {"arch": json.dumps(TINY.to_dict()), "seed": 3, "grad_dtype": "int4"}
    take = {"take": np.full(10, 4, dtype=np.int64)}
    engine.run_round(
        "class_gradients", {0: Message({**get_parameters(net), **take}, config)}, round=1
    )
    # int4: 1,026 codes → 513 bytes; scales: 8 + 3 + 8 + 3 + 10 + 1 = 33 segments × 2 bytes
    assert engine.ledger.total("up") == 80 + 2 * (513 + 33 * 2)
    sparse = {**config, "grad_topk": 0.1, "feedback_key": 1, "step": 2}
    engine.run_round(
        "class_gradients", {0: Message({**get_parameters(net), **take}, sparse)}, round=2
    )
    # keep ⌈0.1·size⌉ of sizes 72, 8, 8, 8, 576, 8, 8, 8, 320, 10: 8, 1, 1, 1, 58, 1, 1, 1, 32,
    # 1 = 105 int4 codes → 53 bytes, one float16 scale per tensor → 20 bytes; index, the smaller
    # of a bitmap (⌈size/8⌉) and uint16 positions (2·keep): 9, 1, 1, 1, 72, 1, 1, 1, 40, 2 = 129
    index = [9, 1, 1, 1, 72, 1, 1, 1, 40, 2]
    assert engine.ledger.total("up") - 80 - 2 * 579 == 80 + 2 * (53 + 20 + sum(index))


def test_same_seed_same_bytes_and_the_server_decodes(digits: DatasetSplits) -> None:
    (client,) = make_clients(digits.train, [np.arange(300)])
    net = build_model(TINY, input_shape=(1, 8, 8), num_classes=10, seed=1)
    config = {"arch": json.dumps(TINY.to_dict()), "seed": 9, "grad_dtype": "int8"}
    msg = Message({**get_parameters(net), "take": np.full(10, 6, dtype=np.int64)}, config)
    a, b = class_gradients(client, msg), class_gradients(client, msg)
    other = class_gradients(client, Message(msg.arrays, {**config, "seed": 10}))
    for key in ("grads_q", "grads_scale"):
        np.testing.assert_array_equal(a.arrays[key], b.arrays[key])
    assert not np.array_equal(a.arrays["grads_q"], other.arrays["grads_q"])
    codec = RowCodec.of(net, config)
    dense = class_gradients(client, Message(msg.arrays, {**config, "grad_dtype": "float32"}))
    targets, rejected = aggregate_class_gradients({0: a}, dim=1026, codec=codec)
    assert rejected == [] and sorted(targets) == list(range(10))
    step = np.repeat(a.arrays["grads_scale"].astype(np.float32), segment_lengths(TINY_SHAPES), 1)
    diff = np.stack([targets[c].numpy() for c in range(10)]) - dense.arrays["grads"]
    assert (np.abs(diff) <= step * 1.0001).all()  # within one level of the float32 rows
    broken = Message({"counts": a.arrays["counts"], "grads_q": a.arrays["grads_q"]})
    assert aggregate_class_gradients({0: broken}, dim=1026, codec=codec)[1] == [0]


def test_a_seeded_network_is_rebuilt_bit_identically(digits: DatasetSplits) -> None:
    (client,) = make_clients(digits.train, [np.arange(10)])
    msg = Message(config={"arch": json.dumps(TINY.to_dict()), "init_seed": 2**62 + 11})
    rebuilt = model_from_message(client, msg)
    server = build_model(TINY, input_shape=(1, 8, 8), num_classes=10, seed=2**62 + 11)
    for (name, p), q in zip(rebuilt.state_dict().items(), server.state_dict().values()):
        assert torch.equal(p, q), name


def test_seed_broadcast_saves_one_network_per_iteration_and_changes_nothing_else(
    digits: DatasetSplits,
) -> None:
    train = digits.train
    parts = label_skew_parts(train.labels.numpy(), 3)
    plain, seeded = make_engine(train, parts), make_engine(train, parts)
    a = distill(plain, train)
    b = distill(seeded, train, SMALL.model_copy(update={"seed_broadcast": True}))
    torch.testing.assert_close(a.synthetic.images, b.synthetic.images, rtol=0, atol=0)
    net = build_model(TINY, input_shape=train.input_shape, num_classes=10)
    state_bytes = sum(x.nbytes for x in get_parameters(net).values())
    saved = SMALL.iterations * len(parts) * state_bytes
    assert plain.ledger.bytes_down - seeded.ledger.bytes_down == saved
    assert plain.ledger.bytes_up == seeded.ledger.bytes_up


def test_compressed_distillation_is_deterministic_and_finite(digits: DatasetSplits) -> None:
    train = digits.train
    parts = label_skew_parts(train.labels.numpy(), 3)
    settings = SMALL.model_copy(update={"grad_dtype": "int4", "grad_topk": 0.2})
    a = distill(make_engine(train, parts), train, settings)
    b = distill(make_engine(train, parts), train, settings)
    assert torch.isfinite(a.synthetic.images).all()
    torch.testing.assert_close(a.synthetic.images, b.synthetic.images, rtol=0, atol=0)
    assert list(a.history["bytes_up"]) == list(b.history["bytes_up"])
    assert (a.history["rejected"] == 0).all()


def test_new_settings_leave_earlier_fingerprints_alone() -> None:
    assert not {"grad_topk", "seed_broadcast"} & set(StudyConfig().to_dict()["distill"])
    changed = StudyConfig(distill=DistillSection(grad_topk=0.1, seed_broadcast=True))
    assert {"grad_topk", "seed_broadcast"} <= set(changed.to_dict()["distill"])
