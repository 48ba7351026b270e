"""distdd-nas on Flower 1.42: the same Engine protocol and server code over Flower's transport.

One module per job, imported on demand (this package imports nothing, so it loads without the
``flower`` extra; only :mod:`.apps` needs ``flwr`` at import time):

* :mod:`.engine`  — :class:`~.engine.FlowerEngine` (the Engine on a Flower ``Grid``), record
  conversion, :func:`~.engine.require_flower`.
* :mod:`.apps`    — the ClientApp and ServerApp, :class:`~.apps.ServerRun`, run-config keys.
* :mod:`.outputs` — the files a run writes and how to read them back.
* :mod:`.project` — the app project that ``flwr run`` submits, and the ``flwr`` CLI.
* :mod:`.launch` — what both runtimes share: run config, process environment, reading back.
* :mod:`.simulation` — the simulation runtime (Ray), :func:`~.simulation.run_on_simulation`.
* :mod:`.deployment` — the deployment runtime (SuperLink + SuperNodes on loopback),
  :func:`~.deployment.run_on_deployment`.
* :mod:`.security` — TLS certificates and SuperNode authentication keys for it.
* :mod:`.runtime` — :func:`~.runtime.run_on_flower` (the runtime a study names) and the
  runtimes' public names in one place.

Algorithms, task registries and client-data factories are named by ``"module:function"``
strings and resolved at run time: the transport imports no algorithm.
"""
