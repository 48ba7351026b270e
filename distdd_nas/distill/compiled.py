"""DC's inner loop through torch.compile: when it pays, and the compiled gradient function.

The inner loop (``distill.net_update = "synthetic"``) trains the matching network on the
synthetic set between matching steps: thousands of small forward/backward passes whose time on
a CPU goes mostly to memory-bound norm, activation and pooling passes, which torch.compile
fuses. Compilation costs tens of seconds once per process, so it pays only for long runs:
``distill.compile = "auto"`` (the default) compiles when a run takes at least
:data:`AUTO_COMPILE_STEPS` inner-loop steps (DC's own ipc-10 run takes 450,000; the
quickstart none, the test study 920), ``"on"`` and ``"off"`` decide it outright. A
compiled run's images differ from an eager run's by float rounding (``tests/distill``), so the
decision is part of a distilled set's cache key (``stages.common.distilled_fingerprint``) and a
run never switches mode: where compilation fails (no C++ compiler, say) the run stops with a
:class:`~distdd_nas.errors.ConfigError` naming ``distill.compile = "off"`` as the fix, in its
first iteration, before its first checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from distdd_nas.config import DistillSection
from distdd_nas.distill.server import GradFn, resolve_loops
from distdd_nas.errors import ConfigError

#: Inner-loop SGD steps from which ``distill.compile = "auto"`` compiles. For ConvNet-32 at DC's
#: configuration, one thread: an inner step takes 50 ms eager and 33 ms compiled
#: (bench/dc_iteration.py), and the first compiled call 17.5 s with a cold inductor cache (2.9 s
#: warm; a one-off measurement), so compiling breaks even after ~1,000 steps; from 10,000 steps
#: (≥ 8 minutes of eager inner loop) a cold compilation costs about 10 % of what it saves,
#: and short runs (the test and demo studies) keep eager PyTorch's immediate start.
AUTO_COMPILE_STEPS = 10_000


def compiles(settings: DistillSection) -> bool:
    """Whether a run with these settings compiles its inner loop: ``distill.compile`` when
    ``"on"``/``"off"``; for ``"auto"``, when the synthetic inner loop runs at least
    :data:`AUTO_COMPILE_STEPS` steps (``iterations × (outer − 1) × inner`` with the loops as
    :func:`~distdd_nas.distill.server.resolve_loops` gives them: DC skips the loop after an
    iteration's last matching step)."""
    if settings.compile != "auto":
        return settings.compile == "on"
    if settings.net_update != "synthetic":
        return False
    outer, inner = resolve_loops(settings)
    return settings.iterations * max(outer - 1, 0) * inner >= AUTO_COMPILE_STEPS


def make_grad_fn(template: nn.Module, *, compiled: bool) -> GradFn | None:
    """A compiled ``(params, x, y) → ∇ mean CE`` for networks shaped like ``template``.

    About 1.5× faster per inner-loop step for ConvNet-32 at DC's configuration than eager
    PyTorch (33 against 50 ms, bench/dc_iteration.py). The parameters are inputs, so one
    compilation serves every freshly initialised network of a run. Returns None (use eager
    PyTorch) when ``compiled`` is false or the network has buffers (BatchNorm running
    statistics would be updated on the template).

    Raises (from the returned function, on its first call):
        ConfigError: Compilation failed here (inductor finds a missing C++ compiler or Python
            headers at the first call) while the same gradients compute eagerly: set
            ``distill.compile = "off"``. An error the eager gradients raise too is raised as
            it is, and any error after a compiled call has succeeded.
    """
    if not compiled or any(True for _ in template.buffers()):
        return None
    names = [n for n, p in template.named_parameters() if p.requires_grad]

    def grads(
        params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> Sequence[torch.Tensor]:
        logits = torch.func.functional_call(template, dict(zip(names, params, strict=True)), (x,))
        return torch.autograd.grad(F.cross_entropy(logits, y), params)

    compiled_grads = torch.compile(grads)
    worked = False

    def checked(
        params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> Sequence[torch.Tensor]:
        nonlocal worked
        if worked:
            return compiled_grads(params, x, y)
        try:
            out = compiled_grads(params, x, y)
        except Exception as err:  # inductor's failures share no narrower base class
            grads(params, x, y)  # a genuine error (e.g. a bad label) is raised as it is
            first_line = str(err).splitlines()[0] if str(err) else ""
            raise ConfigError(
                f"torch.compile failed here ({type(err).__name__}: {first_line}); set "
                'distill.compile = "off" to train the inner loop eagerly'
            ) from err
        worked = True
        return out

    return checked
