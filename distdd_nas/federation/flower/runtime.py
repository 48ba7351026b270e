"""Run a server function on Flower: the simulation runtime (Ray) or the deployment runtime.

Both runners turn a study configuration into a Flower run config (see
:mod:`distdd_nas.federation.flower.apps`), run the distdd-nas ServerApp/ClientApp, and read back
what the ServerApp wrote to ``out_dir`` (see :mod:`distdd_nas.federation.flower.outputs`):

* *Simulation* (:func:`run_on_simulation`, :mod:`.simulation`): ``flwr.simulation.run_simulation``
  in this process, ServerApp in a thread, ClientApps in Ray actors (``num_cpus`` actors at one
  CPU each).
* *Deployment* (:func:`run_on_deployment`, :mod:`.deployment`): ``flower-superlink`` and one
  ``flower-supernode`` per partition on 127.0.0.1, then ``flwr run``; every process is stopped by
  PID, also when the run fails.

What both share — the run config (:func:`build_run_config`), the process environment
(:func:`flower_env`, :data:`FLOWER_ENV`) and reading the run back — is in :mod:`.launch`. This
module picks the runtime a study names (:func:`run_on_flower`) and re-exports the public names
of the three, so callers import one place. Flower is imported lazily: this module imports
without the ``flower`` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from distdd_nas.errors import ConfigError
from distdd_nas.federation.flower.deployment import run_on_deployment
from distdd_nas.federation.flower.launch import FLOWER_ENV, build_run_config, flower_env
from distdd_nas.federation.flower.outputs import FlowerRunResult
from distdd_nas.federation.flower.project import write_app_project
from distdd_nas.federation.flower.simulation import run_on_simulation

if TYPE_CHECKING:
    from distdd_nas.config import StudyConfig


def run_on_flower(
    config: StudyConfig, *, server_fn: str, out_dir: Path, **options: Any
) -> FlowerRunResult:
    """Run ``server_fn`` on the runtime named by ``config.federation.flower_backend``.

    ``options`` go to :func:`run_on_simulation` or :func:`run_on_deployment`; the deployment
    runtime is secured (TLS, SuperNode authentication) unless ``federation.flower_secure`` is
    false or ``options`` say ``secure=False``.
    """
    backend = config.federation.flower_backend
    if backend == "simulation":
        return run_on_simulation(config, server_fn=server_fn, out_dir=out_dir, **options)
    if backend == "deployment":
        options.setdefault("secure", config.federation.flower_secure)
        return run_on_deployment(config, server_fn=server_fn, out_dir=out_dir, **options)
    raise ConfigError(
        f"unknown federation.flower_backend {backend!r}; use simulation or deployment"
    )


__all__ = [
    "FLOWER_ENV",
    "build_run_config",
    "flower_env",
    "run_on_deployment",
    "run_on_flower",
    "run_on_simulation",
    "write_app_project",
]
