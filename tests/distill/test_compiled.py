"""When the inner loop compiles (``distill.compile``), and the eager fallback on a failure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from distdd_nas.config import DistillSection, load_config
from distdd_nas.data import DatasetSplits
from distdd_nas.distill import compiled, compiles, run_distill
from distdd_nas.distill.compiled import AUTO_COMPILE_STEPS, make_grad_fn
from distdd_nas.errors import ConfigError
from distdd_nas.models import build_model
from distdd_nas.stages.common import distilled_fingerprint
from distdd_nas.stages.on_engine import distill_on
from distdd_nas.study import Study
from tests.distill.conftest import TINY, iid_parts, make_engine

#: DC's own ipc-10 run: 1,000 iterations of 10 matching steps, 50 inner epochs between them.
DC = DistillSection(ipc=10, iterations=1000, outer_loop=10, inner_loop=50)


def test_auto_compiles_long_synthetic_inner_loops_only() -> None:
    assert compiles(DC)  # 1000 × 9 × 50 = 450,000 inner steps
    assert not compiles(DC.model_copy(update={"net_update": "global_grad"}))  # no inner loop
    assert not compiles(DC.model_copy(update={"compile": "off"}))
    assert compiles(DC.model_copy(update={"iterations": 1, "compile": "on"}))
    # the threshold by hand: iterations × (outer − 1) × inner steps
    steps = {"outer_loop": 5, "inner_loop": 10}  # 40 inner steps an iteration
    exact = -(-AUTO_COMPILE_STEPS // 40)  # the fewest iterations that reach it
    assert compiles(DC.model_copy(update={**steps, "iterations": exact}))
    assert not compiles(DC.model_copy(update={**steps, "iterations": exact - 1}))
    assert not compiles(DC.model_copy(update={**steps, "outer_loop": 1, "iterations": 10**6}))
    # the shipped studies: the test study and the quickstart stay eager
    for name in ("smoke", "quickstart"):
        settings = load_config(name).distill
        assert settings.compile == "auto" and not compiles(settings), name


def test_compile_is_a_study_setting_and_auto_keeps_old_fingerprints() -> None:
    config = load_config("smoke", ['distill.compile="on"'])
    assert config.distill.compile == "on"
    assert "compile" not in load_config("smoke").model_dump()["distill"]  # "auto" is not dumped
    with pytest.raises(ConfigError, match="compile"):
        load_config("smoke", ['distill.compile="yes"'])


def test_the_cache_key_says_whether_the_inner_loopcompiles() -> None:
    """Compiled and eager sets differ in rounding: the key follows the resolved decision, so
    "auto" shares the key of what it resolves to and an eager key is what it always was."""
    smoke = load_config("smoke")  # auto resolves to eager (920 inner steps)
    key = distilled_fingerprint(smoke)
    assert distilled_fingerprint(load_config("smoke", ['distill.compile="off"'])) == key
    assert distilled_fingerprint(load_config("smoke", ['distill.compile="on"'])) != key
    many = ["distill.iterations=20000"]  # auto now compiles: the key is the one "on" has
    assert distilled_fingerprint(load_config("smoke", many)) == distilled_fingerprint(
        load_config("smoke", [*many, 'distill.compile="on"'])
    )
    assert distilled_fingerprint(load_config("smoke", many)) != distilled_fingerprint(
        load_config("smoke", [*many, 'distill.compile="off"'])
    )


def test_run_distill_resolves_compile_from_the_settings(
    digits: DatasetSplits, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[bool] = []

    def record(template: torch.nn.Module, *, compiled: bool) -> None:
        asked.append(compiled)

    monkeypatch.setattr("distdd_nas.distill.loop.make_grad_fn", record)
    train = digits.train
    small = DistillSection(ipc=2, iterations=1, outer_loop=2, inner_loop=1, batch_real=16)
    for settings, kwargs in [
        (small, {}),
        (small.model_copy(update={"compile": "on"}), {}),
        (small.model_copy(update={"compile": "on"}), {"compile": False}),  # the caller decides
    ]:
        engine = make_engine(train, iid_parts(len(train), 2))
        run_distill(
            engine, arch=TINY, input_shape=train.input_shape, num_classes=10,
            settings=settings, seed=0, **kwargs,
        )  # fmt: skip
    assert asked == [False, True, False]


def test_a_study_file_setting_reaches_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[bool] = []
    monkeypatch.setattr(
        "distdd_nas.distill.loop.make_grad_fn",
        lambda template, *, compiled: asked.append(compiled),
    )
    for value in ("on", "auto"):
        values = [f'distill.compile="{value}"', "distill.iterations=1", "distill.eval_every=0"]
        study = Study(load_config("smoke", values))
        distill_on(study, study.make_engine())
    assert asked == [True, False]


def _eager_grads(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(F.cross_entropy(net(x), y), list(net.parameters())))


def _broken_compile(attempts: list[int]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """torch.compile as it fails on a machine without a C++ compiler (at the first call)."""

    def broken_compile(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            attempts.append(1)
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore")

        return call

    return broken_compile


def test_a_failed_compilation_is_a_config_error_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts: list[int] = []
    monkeypatch.setattr(compiled.torch, "compile", _broken_compile(attempts))
    net = build_model(TINY, input_shape=(1, 8, 8), num_classes=10, seed=0)
    x, y = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(6)
    grad_fn = make_grad_fn(net, compiled=True)
    assert grad_fn is not None
    with pytest.raises(ConfigError) as caught:
        grad_fn(list(net.parameters()), x, y)
    message = str(caught.value)
    assert message == (
        "torch.compile failed here (RuntimeError: InvalidCxxCompiler: No working C++ compiler "
        'found); set distill.compile = "off" to train the inner loop eagerly'
    )
    assert attempts == [1]


def test_a_genuine_error_is_raised_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad label fails the eager gradients too: not blamed on the compiler."""
    monkeypatch.setattr(compiled.torch, "compile", _broken_compile([]))
    net = build_model(TINY, input_shape=(1, 8, 8), num_classes=10, seed=0)
    grad_fn = make_grad_fn(net, compiled=True)
    assert grad_fn is not None
    with pytest.raises(IndexError):  # label 10 of 10 classes: cross-entropy's own error
        grad_fn(list(net.parameters()), torch.zeros(2, 1, 8, 8), torch.tensor([0, 10]))


def test_after_a_compiled_call_worked_errors_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def flaky_compile(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            calls.append(1)
            if len(calls) > 1:
                raise RuntimeError("out of memory")
            return fn(*args)

        return call

    monkeypatch.setattr(compiled.torch, "compile", flaky_compile)
    net = build_model(TINY, input_shape=(1, 8, 8), num_classes=10, seed=0)
    x, y = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(6)
    grad_fn = make_grad_fn(net, compiled=True)
    assert grad_fn is not None
    got = grad_fn(list(net.parameters()), x, y)
    assert all(torch.equal(g, w) for g, w in zip(got, _eager_grads(net, x, y), strict=True))
    with pytest.raises(RuntimeError, match="out of memory"):  # not turned into a ConfigError
        grad_fn(list(net.parameters()), x, y)
