"""One file per stage: each wires pure cores to files under a run directory.

A stage takes a :class:`~distdd_nas.study.Study` and an output directory, runs the cores and
writes its directory atomically through :mod:`distdd_nas.artifacts` (manifest last), returning a
:class:`~distdd_nas.stages.common.StageOutcome`. Only stages, the pipeline and the CLI touch
paths. This package imports nothing itself, so the Flower ServerApp can load
:mod:`distdd_nas.stages.on_engine` without the search, report or plotting code.

=================  ============================================================================
``partition``      class-count and label-noise tables of the federation
``fedavg``         FedAvg of the reference model
``distill``        the cached distilled set and its DC-protocol evaluation
``search``         Optuna/NNI study on the distilled set (resumable)
``validate``       real FedAvg of the proxy's top-k and random controls
``report``         report.md, summary.json and figures from :mod:`distdd_nas.report`
``groundtruth``    FedAvg curves of sampled candidates (the ranking evidence; resumable)
``on_engine``      runs DistDD/FedAvg on the configured engine (in-process or Flower)
=================  ============================================================================
"""
