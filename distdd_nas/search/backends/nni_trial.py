"""The NNI trial command: ``python -m distdd_nas.search.backends.nni_trial --spec <spec.json>``.

NNI starts one such process per trial. Everything it needs comes from files the backend wrote
into the experiment directory — the spec (objective recipe, fixed parameters, reference, result
directory, trial-number offset) and the files the recipe names (distilled set, holdout, study
config) — never from tensors passed through NNI. The process asks NNI for its parameters,
evaluates the same objective as the Optuna backend, writes its result record (JSON, atomically)
and reports the final metric with ``nni.report_final_result``.

Result records (``<results>/<experiment>-<seq>.json``) are written once when the trial starts
(state RUNNING) and again when it ends (COMPLETE or FAIL); the backend turns a record still
RUNNING after its experiment ended into PRUNED (NNI's assessor stopped it) or FAIL.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from distdd_nas.artifacts import write_atomic

log = logging.getLogger("distdd_nas.search.backends.nni_trial")


def write_record(path: Path, record: Mapping[str, Any]) -> None:
    """Write a JSON record atomically (temp file + rename)."""
    write_atomic(path, json.dumps(record, sort_keys=True, default=str))


def run_trial(spec: Mapping[str, Any]) -> int:
    """Evaluate one NNI trial as described by ``spec``; return the process exit code."""
    import nni

    from distdd_nas.errors import DistddError
    from distdd_nas.search.backends.base import ObjectiveRecipe

    params: dict[str, Any] = dict(nni.get_next_parameter() or {})
    seq = int(nni.get_sequence_id())
    experiment = str(nni.get_experiment_id())
    reference = spec.get("reference")
    record: dict[str, Any] = {
        "number": int(spec["offset"]) + seq,
        "experiment_id": experiment,
        "trial_job_id": str(nni.get_trial_id()),
        "sequence_id": seq,
        "params": params,
        "reference": bool(reference is not None and seq == 0 and params == reference),
        "state": "RUNNING",
        "start": time.time(),
    }
    path = Path(spec["results"]) / f"{experiment}-{seq:05d}.json"
    write_record(path, record)
    start = time.perf_counter()

    def report(step: int, value: float) -> None:
        nni.report_intermediate_result(float(value))

    try:
        objective = ObjectiveRecipe.from_dict(spec["objective"]).build()
        start = time.perf_counter()  # duration_s is the evaluation, as with Optuna
        value, attrs = objective({**spec.get("fixed", {}), **params}, report)
    except DistddError as err:
        record.update(
            state="FAIL", fail_reason=str(err)[:500], duration_s=time.perf_counter() - start
        )
        write_record(path, record)
        log.error("trial failed: %s", err)
        return 1
    except Exception as err:
        record.update(
            state="FAIL",
            fail_reason=f"{type(err).__name__}: {err}"[:500],
            duration_s=time.perf_counter() - start,
        )
        write_record(path, record)
        raise
    ok = value == value and abs(value) != float("inf")
    record.update(
        state="COMPLETE" if ok else "FAIL",
        value=float(value) if ok else None,
        attrs=attrs,
        duration_s=time.perf_counter() - start,
    )
    if not ok:
        record["fail_reason"] = f"objective returned {value}"
    write_record(path, record)
    if not ok:
        return 1
    nni.report_final_result(float(value))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the trial process."""
    parser = argparse.ArgumentParser(prog="python -m distdd_nas.search.backends.nni_trial")
    parser.add_argument("--spec", required=True, help="JSON file written by NniBackend")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
    return run_trial(spec)


if __name__ == "__main__":
    sys.exit(main())
