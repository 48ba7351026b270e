"""Stages of a study: wire the pure cores to files; with the CLI, the only module that knows paths.

Each stage function takes a validated :class:`StudyConfig`, an output directory and an optional
progress callback, runs the pure cores, and writes its directory atomically through
:func:`distdd_nas.artifacts.stage` (manifest last). Layout of a run directory::

    runs/<study>/config.json          resolved configuration
    runs/<study>/partition/           summary.json, class_counts.csv, noise.csv
    runs/<study>/fedavg/              summary.json, history.csv, ledger.csv
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from distdd_nas.artifacts import (
    is_complete,
    load_json,
    load_npz,
    read_manifest,
    stage,
    stage_in_place,
)
from distdd_nas.config import StudyConfig, fingerprint
from distdd_nas.data import ImageDataset
from distdd_nas.distill import (
    DistilledSet,
    DistillResult,
    evaluate_random_real,
    evaluate_synthetic,
    run_distill,
)
from distdd_nas.errors import ArtifactError, ConfigError
from distdd_nas.federation import Engine, InProcessEngine, Ledger
from distdd_nas.federation.registry import default_tasks
from distdd_nas.federation.setup import Federation, build_federation
from distdd_nas.fl.fedavg import FedAvgResult, FedAvgSettings, run_fedavg
from distdd_nas.models import ArchSpec, build_model, count_parameters
from distdd_nas.report.metrics import (
    CostComparison,
    kendall_tau,
    spearman_rho,
    top1_regret,
    topk_overlap,
)
from distdd_nas.report.plots import (
    bars_figure,
    history_figure,
    image_grid_figure,
    scatter_figure,
)
from distdd_nas.report.tables import markdown_table
from distdd_nas.search.backends import create_backend
from distdd_nas.search.candidate import CandidateFactory
from distdd_nas.search.objective import (
    ProxyObjective,
    ProxyScorer,
    save_proxy_inputs,
    split_server_holdout,
)
from distdd_nas.search.ranking import rank_trials, select_for_validation
from distdd_nas.search.space import SearchSpace
from distdd_nas.seeding import derive_seed
from distdd_nas.training import TrainSettings

if TYPE_CHECKING:
    from distdd_nas.federation.flower_app import ServerRun

log = logging.getLogger(__name__)

#: Progress callback: (steps done, steps total, latest metrics).
Progress = Callable[[int, int, dict[str, float]], None]

PARTITION_SECTIONS = ("study", "data", "partition", "noise")


@dataclass(frozen=True)
class StageOutcome:
    """What a stage wrote: its directory and the summary it stored as summary.json."""

    path: Path
    summary: dict[str, Any]


def reference_arch(config: StudyConfig) -> ArchSpec:
    """The study's reference architecture as an :class:`ArchSpec`."""
    return ArchSpec.from_dict(config.model.model_dump())


def fedavg_settings(config: StudyConfig) -> FedAvgSettings:
    """FedAvg server settings from the ``fedavg`` and ``federation`` sections."""
    f = config.fedavg
    return FedAvgSettings(
        rounds=f.rounds,
        local=TrainSettings(
            epochs=f.local_epochs,
            lr=f.lr,
            momentum=f.momentum,
            weight_decay=f.weight_decay,
            batch_size=f.batch_size,
            max_steps=f.local_steps,
        ),
        server_lr=f.server_lr,
        prox_mu=f.prox_mu,
        fraction=config.federation.fraction,
        aggregator=f.aggregator,
        trim=f.trim,
        eval_every=f.eval_every,
    )


def make_engine(config: StudyConfig, federation: Federation) -> Engine:
    """The in-process engine over the federation's clients (Flower runs through its own apps)."""
    return InProcessEngine(
        clients=federation.clients,
        tasks=default_tasks(),
        failure_rate=config.federation.failure_rate,
        seed=config.study.seed,
    )


def write_config(config: StudyConfig, out: Path) -> None:
    """Write the resolved configuration beside the outputs (plain JSON, with its fingerprint)."""
    out.mkdir(parents=True, exist_ok=True)
    data = {"fingerprint": fingerprint(config), **config.to_dict()}
    tmp = out / "config.json.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(out / "config.json")


def check_model_fits(config: StudyConfig, federation: Federation) -> int:
    """Build the reference model once so a bad architecture fails before any work; return d."""
    model = build_model(
        reference_arch(config),
        input_shape=federation.train.input_shape,
        num_classes=federation.num_classes,
    )
    return count_parameters(model)


# --------------------------------------------------------------------------------------------
# server algorithms on an engine: in-process, or inside a Flower ServerApp
# --------------------------------------------------------------------------------------------


def distill_on_engine(
    config: StudyConfig,
    engine: Engine,
    *,
    like: ImageDataset,
    on_progress: Callable[[dict[str, float]], None] | None = None,
) -> DistillResult:
    """The study's DistDD run on any engine (the same call in-process and on Flower).

    ``like`` gives the image shape and class count (metadata the server knows, not data).
    """
    return run_distill(
        engine,
        arch=reference_arch(config),
        input_shape=like.input_shape,
        num_classes=like.num_classes,
        settings=config.distill,
        fraction=config.federation.fraction,
        seed=config.study.seed,
        on_iteration=on_progress,
    )


def fedavg_on_engine(
    config: StudyConfig,
    engine: Engine,
    *,
    test: ImageDataset,
    on_progress: Callable[[dict[str, float]], None] | None = None,
) -> FedAvgResult:
    """The study's FedAvg of its reference model on any engine."""
    return run_fedavg(
        engine,
        arch=reference_arch(config),
        test=test,
        settings=fedavg_settings(config),
        seed=config.study.seed,
        on_round=on_progress,
    )


def flower_distill(run: ServerRun) -> dict[str, Any]:
    """ServerApp entry point: DistDD inside Flower; arrays come back through result.npz."""
    assert run.study is not None, "flower_distill needs the study config in the run config"
    result = distill_on_engine(run.study, run.engine, like=build_federation(run.study).train)
    return {
        **result.synthetic.to_arrays(),
        "client_class_counts": result.client_class_counts,
        "history": result.history.to_dict(orient="list"),
        "wall_s": result.wall_s,
    }


def flower_fedavg(run: ServerRun) -> dict[str, Any]:
    """ServerApp entry point: FedAvg of the reference model inside Flower."""
    assert run.study is not None, "flower_fedavg needs the study config in the run config"
    result = fedavg_on_engine(run.study, run.engine, test=build_federation(run.study).test)
    return {
        **{f"param/{k}": v for k, v in result.parameters.items()},
        "history": result.history.to_dict(orient="list"),
        "test_accuracy": result.test_accuracy,
        "test_loss": result.test_loss,
        "rounds": result.rounds,
        "wall_s": result.wall_s,
    }


def on_federation(
    config: StudyConfig,
    fed: Federation,
    algorithm: str,
    *,
    on_progress: Callable[[dict[str, float]], None] | None = None,
    out: Path | None = None,
) -> tuple[Any, Ledger]:
    """Run ``distill`` or ``fedavg`` on the configured engine; return (result, ledger).

    ``federation.engine = "flower"`` runs the same server function inside a Flower ServerApp
    (simulation or deployment runtime) and reads its outputs back.
    """
    if config.federation.engine == "inprocess":
        engine = make_engine(config, fed)
        try:
            if algorithm == "distill":
                result = distill_on_engine(config, engine, like=fed.train, on_progress=on_progress)
                return result, engine.ledger
            return fedavg_on_engine(
                config, engine, test=fed.test, on_progress=on_progress
            ), engine.ledger
        finally:
            engine.close()
    from distdd_nas.federation.flower_run import run_on_flower

    with tempfile.TemporaryDirectory(prefix=f"distdd-flower-{algorithm}-") as tmp:
        run = run_on_flower(
            config, server_fn=f"distdd_nas.pipeline:flower_{algorithm}", out_dir=Path(tmp)
        )
    if algorithm == "distill":
        synthetic = DistilledSet.from_arrays(run.arrays)
        history = pd.DataFrame(run.result["history"])
        return DistillResult(
            synthetic,
            history,
            np.asarray(run.arrays["client_class_counts"]),
            float(run.result["wall_s"]),
        ), run.ledger
    params = {k.removeprefix("param/"): v for k, v in run.arrays.items()}
    return FedAvgResult(
        parameters=params,
        history=pd.DataFrame(run.result["history"]),
        test_accuracy=float(run.result["test_accuracy"]),
        test_loss=float(run.result["test_loss"]),
        rounds=int(run.result["rounds"]),
        wall_s=float(run.result["wall_s"]),
    ), run.ledger


# --------------------------------------------------------------------------------------------
# partition
# --------------------------------------------------------------------------------------------


def run_partition(config: StudyConfig, out: Path) -> StageOutcome:
    """Partition the data over clients and write the class-count and noise tables."""
    start = time.perf_counter()
    fed = build_federation(config)
    counts = fed.class_counts()
    sizes = counts.sum(axis=1)
    noise = fed.noise
    changed = noise.changed_per_client
    noise_table = pd.DataFrame(
        {
            "client": range(fed.num_clients),
            "noisy": [c in noise.noisy_clients for c in range(fed.num_clients)],
            "labels_changed": [int(changed.get(c, 0)) for c in range(fed.num_clients)],
        }
    )
    summary = {
        "dataset": config.data.name,
        "method": config.partition.method,
        "num_clients": fed.num_clients,
        "num_classes": fed.num_classes,
        "train_examples": int(sizes.sum()),
        "holdout_examples": int(sum(len(h) for h in fed.holdout.client_indices)),
        "test_examples": len(fed.test),
        "client_size_min": int(sizes.min()),
        "client_size_max": int(sizes.max()),
        "classes_per_client_mean": float((counts > 0).sum(axis=1).mean()),
        "noise_kind": noise.kind,
        "noisy_clients": list(noise.noisy_clients),
        "labels_changed": int(sum(changed.values())),
        "wall_s": time.perf_counter() - start,
    }
    write_config(config, out)
    path = out / "partition"
    with stage(path, fingerprint=fingerprint(config, PARTITION_SECTIONS)) as w:
        w.json("summary.json", summary)
        w.csv("class_counts.csv", counts.reset_index())
        w.csv("noise.csv", noise_table)
    return StageOutcome(path, summary)


# --------------------------------------------------------------------------------------------
# fedavg
# --------------------------------------------------------------------------------------------


def run_fedavg_stage(
    config: StudyConfig, out: Path, *, progress: Progress | None = None
) -> StageOutcome:
    """Train the reference model with FedAvg on the clients; write history, ledger, summary."""
    start = time.perf_counter()
    fed = build_federation(config)
    num_params = check_model_fits(config, fed)
    settings = fedavg_settings(config)

    def on_round(row: dict[str, float]) -> None:
        if progress is not None:
            progress(int(row["round"]), settings.rounds, row)

    result, ledger = on_federation(config, fed, "fedavg", on_progress=on_round)
    summary = {
        "test_accuracy": result.test_accuracy,
        "test_loss": result.test_loss,
        "rounds": result.rounds,
        "num_clients": fed.num_clients,
        "clients_per_round": int(result.history["clients"].mean()),
        "model": reference_arch(config).short_name(),
        "num_parameters": num_params,
        "bytes_up": ledger.bytes_up,
        "bytes_down": ledger.bytes_down,
        "bytes_per_round": (ledger.bytes_up + ledger.bytes_down) / result.rounds,
        "wall_s": time.perf_counter() - start,
    }
    write_config(config, out)
    path = out / "fedavg"
    with stage(
        path,
        fingerprint=fingerprint(config, (*PARTITION_SECTIONS, "model", "federation", "fedavg")),
    ) as w:
        w.json("summary.json", summary)
        w.csv("history.csv", result.history)
        w.csv("ledger.csv", ledger.to_frame())
    return StageOutcome(path, summary)


# --------------------------------------------------------------------------------------------
# distill
# --------------------------------------------------------------------------------------------

DISTILL_SECTIONS = (*PARTITION_SECTIONS, "model", "federation", "distill")


def distilled_dir(config: StudyConfig, cache: Path) -> Path:
    """Content-addressed directory of a study's distilled set: one set serves many searches."""
    return cache / "distilled" / fingerprint(config, DISTILL_SECTIONS)


def load_distilled(path: Path) -> DistilledSet:
    """Read ``synthetic.npz`` of a complete distillation directory (no pickle)."""
    if not is_complete(path):
        raise ArtifactError(
            f"{path} holds no complete distilled set; "
            "run 'distdd-nas distill' for this study first"
        )
    return DistilledSet.from_arrays(load_npz(path / "synthetic.npz"))


def run_distill_stage(
    config: StudyConfig, out: Path, *, cache: Path, progress: Progress | None = None
) -> StageOutcome:
    """Distil (or reuse the cached distillation), evaluate it, write ``DIR/distill/``."""
    start = time.perf_counter()
    fed = build_federation(config)
    check_model_fits(config, fed)
    fp = fingerprint(config, DISTILL_SECTIONS)
    cached = distilled_dir(config, cache)
    hit = is_complete(cached, fp)
    if not hit:
        total = config.distill.iterations

        def on_iteration(row: dict[str, float]) -> None:
            if progress is not None:
                progress(int(row["iteration"]) + 1, total, row)

        result, ledger = on_federation(config, fed, "distill", on_progress=on_iteration)
        counts = pd.DataFrame(result.client_class_counts).rename_axis("client").reset_index()
        with stage(
            cached,
            fingerprint=fp,
            meta={
                "stage": "distill",
                "wall_s": result.wall_s,
                "bytes_up": ledger.bytes_up,
                "bytes_down": ledger.bytes_down,
            },
        ) as w:
            w.npz("synthetic.npz", result.synthetic.to_arrays())
            w.csv("history.csv", result.history)
            w.csv("comm.csv", ledger.to_frame())
            w.csv("class_counts.csv", counts)
            save_image_grid(result.synthetic, fed.train, w.file("grid.png"))
    manifest = read_manifest(cached) or {}
    synthetic = load_distilled(cached)
    summary = evaluate_distilled_summary(config, fed, synthetic)
    summary.update(
        {
            "ipc": config.distill.ipc,
            "iterations": config.distill.iterations,
            "num_clients": fed.num_clients,
            "bytes_up": int(manifest.get("bytes_up", 0)),
            "bytes_down": int(manifest.get("bytes_down", 0)),
            "distill_wall_s": float(manifest.get("wall_s", 0.0)),
            "cache_hit": hit,
            "artifact": str(cached),
            "fingerprint": fp,
            "wall_s": time.perf_counter() - start,
        }
    )
    write_config(config, out)
    path = out / "distill"
    with stage(path, fingerprint=fp) as w:
        w.json("summary.json", summary)
        w.csv("history.csv", pd.read_csv(cached / "history.csv"))
        w.csv("ledger.csv", pd.read_csv(cached / "comm.csv"))
    return StageOutcome(path, summary)


def evaluate_distilled_summary(
    config: StudyConfig, fed: Federation, synthetic: DistilledSet
) -> dict[str, Any]:
    """DC's evaluation of the synthetic set plus a same-ipc random real subset (centralized
    reference: the server never holds real data; labelled as such)."""
    arch = reference_arch(config)
    seed = config.study.seed
    mean, std, accs = evaluate_synthetic(
        synthetic.images,
        synthetic.labels,
        arch=arch,
        test=fed.test,
        settings=config.distill.eval,
        seed=derive_seed(seed, "eval", "synthetic"),
    )
    r_mean, r_std, r_accs = evaluate_random_real(
        fed.train,
        np.concatenate(fed.split.client_indices),
        ipc=config.distill.ipc,
        arch=arch,
        test=fed.test,
        settings=config.distill.eval,
        seed=derive_seed(seed, "eval", "random_real"),
    )
    return {
        "test_accuracy_mean": mean,
        "test_accuracy_std": std,
        "test_accuracies": accs,
        "random_real_accuracy_mean": r_mean,
        "random_real_accuracy_std": r_std,
        "random_real_accuracies": r_accs,
        "random_real_note": (
            "centralized reference: random real subsets with the same ipc, a fresh one per network"
        ),
        "eval_models": config.distill.eval.num_models,
        "eval_epochs": config.distill.eval.epochs,
    }


def save_image_grid(synthetic: DistilledSet, like: ImageDataset, path: Path) -> None:
    """A PNG grid of the synthetic images, one row per class, de-normalised for viewing."""
    fig = image_grid_figure(
        synthetic.images, synthetic.labels, mean=like.mean, std=like.std, classes=like.classes
    )
    fig.savefig(path, dpi=100, bbox_inches="tight")


# --------------------------------------------------------------------------------------------
# inspect
# --------------------------------------------------------------------------------------------

STAGES = ("partition", "fedavg", "distill", "search", "validate", "report")


def inspect_run(out: Path) -> dict[str, Any]:
    """Summarise a run directory: the study, and for each stage whether it is complete plus its
    summary. Raises ArtifactError when ``out`` is not a run directory."""
    config_path = out / "config.json"
    if not config_path.is_file():
        raise ArtifactError(
            f"{out} is not a run directory (no config.json); pass the --out DIR of a run, "
            "e.g. runs/smoke"
        )
    config = load_json(config_path)
    stages: dict[str, Any] = {}
    for name in STAGES:
        path = out / name
        if not path.exists():
            continue
        complete = is_complete(path)
        summary = load_json(path / "summary.json") if complete else None
        stages[name] = {"complete": complete, "summary": summary}
    return {
        "study": config.get("study", {}).get("name"),
        "fingerprint": config.get("fingerprint"),
        "stages": stages,
    }


# --------------------------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------------------------

SPACES_DIR = Path(__file__).resolve().parents[1] / "search_spaces"
#: Search settings that define *which* study a trial belongs to (not how many trials to run).
SEARCH_IDENTITY = (
    "space",
    "scoring",
    "epochs",
    "lr",
    "momentum",
    "weight_decay",
    "batch_size",
    "sampler",
    "pruner",
    "backend",
)


def load_space(config: StudyConfig) -> SearchSpace:
    """The study's search space: a path, or a name under ``search_spaces/``."""
    name = config.search.space
    for candidate in (
        Path(name),
        Path("search_spaces") / f"{name}.toml",
        SPACES_DIR / f"{name}.toml",
    ):
        if candidate.is_file():
            return SearchSpace.load(candidate)
    known = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.toml")))
    raise ConfigError(f"search space {name!r} not found; use a path or one of: {known}")


def search_fingerprint(config: StudyConfig) -> str:
    identity = {k: getattr(config.search, k) for k in SEARCH_IDENTITY}
    return fingerprint(config, DISTILL_SECTIONS, extra=identity)


def proxy_train_settings(config: StudyConfig) -> TrainSettings:
    s = config.search
    return TrainSettings(
        epochs=s.epochs,
        lr=s.lr,
        momentum=s.momentum,
        weight_decay=s.weight_decay,
        batch_size=s.batch_size,
        decay_at_half=True,
    )


def candidate_factory(config: StudyConfig) -> CandidateFactory:
    """params → Candidate, the one path used by the proxy, validation and reports."""
    return CandidateFactory(reference=reference_arch(config), train=proxy_train_settings(config))


def ensure_distilled(
    config: StudyConfig, out: Path, *, cache: Path, progress: Progress | None = None
) -> Path:
    """The study's distilled set directory, distilling first when it is not cached yet."""
    path = distilled_dir(config, cache)
    if not is_complete(path, fingerprint(config, DISTILL_SECTIONS)):
        run_distill_stage(config, out, cache=cache, progress=progress)
    return path


def run_search_stage(
    config: StudyConfig, out: Path, *, cache: Path, progress: Progress | None = None
) -> StageOutcome:
    """Optuna (or NNI) search on the distilled set; resumable; writes ``DIR/search/``."""
    start = time.perf_counter()
    space = load_space(config)
    fed = build_federation(config)
    distilled_path = ensure_distilled(config, out, cache=cache)
    synthetic = load_distilled(distilled_path)
    counts = pd.read_csv(distilled_path / "class_counts.csv").drop(columns="client").to_numpy()
    seed = config.study.seed
    sc = config.search
    engine = make_engine(config, fed) if sc.scoring == "federated" else None
    holdout, _ = split_server_holdout(fed.test, seed=seed, fraction=sc.holdout_fraction)
    scorer = ProxyScorer(
        distilled=synthetic,
        like=fed.train,
        scoring=sc.scoring,
        holdout=holdout if sc.scoring == "server_holdout" else None,
        engine=engine,
        client_class_counts=counts,
        fedavg=fedavg_settings(config),
        seed=seed,
        seeds=sc.seeds_per_trial,
        virtual_examples=sc.virtual_examples,
    )
    factory = candidate_factory(config)
    objective: Any = ProxyObjective(scorer=scorer, candidates=factory)
    search_dir = out / "search"
    search_dir.mkdir(parents=True, exist_ok=True)
    if (
        sc.backend == "nni"
    ):  # NNI trials run in subprocesses: they rebuild the objective from files
        objective = save_proxy_inputs(
            search_dir / "nni" / "inputs", objective=objective, study_config=config.to_dict()
        )
    storage = sc.storage or f"sqlite:///{(search_dir / 'optuna.db').resolve()}"
    study_name = f"{config.study.name}-{search_fingerprint(config)}"
    backend = create_backend(
        sc.backend,
        space=space,
        storage=storage,
        study_name=study_name,
        sampler=sc.sampler,
        pruner=sc.pruner,
        seed=seed,
        workdir=search_dir,
        reference=space.point(factory.reference_values(fedavg_settings(config))),
        trial_timeout_s=sc.trial_timeout_s,
        concurrency=sc.concurrency,
    )

    def on_trial(*_: Any) -> None:
        if progress is not None:
            progress(0, sc.n_trials, {})

    trials = backend.optimize(
        objective, n_trials=sc.n_trials, timeout_s=sc.timeout_s, callback=on_trial
    )
    finished = trials[trials["state"].isin(["COMPLETE", "PRUNED"])]
    summary = {
        "backend": config.search.backend,
        "space": space.name,
        "space_size": space.size,
        "study_name": study_name,
        "storage": storage,
        "n_trials": len(finished),
        "n_complete": int((trials["state"] == "COMPLETE").sum()),
        "best_value": float(finished["value"].max()) if len(finished) else float("nan"),
        "bytes_up": int(trials["bytes_up"].sum()),
        "bytes_down": int(trials["bytes_down"].sum()),
        "trials_wall_s": float(finished["duration_s"].sum()),
        "wall_s": time.perf_counter() - start,
    }
    write_config(config, out)
    with stage_in_place(search_dir, fingerprint=search_fingerprint(config)) as w:
        w.csv("trials.csv", trials)
        w.json("summary.json", summary)
    return StageOutcome(search_dir, summary)


# --------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------


def run_validate_stage(
    config: StudyConfig, out: Path, *, progress: Progress | None = None
) -> StageOutcome:
    """Real FedAvg on the proxy's top-k plus seeded random controls; rank correlations.

    A finished validation of the same trials and settings is reused (``cache_hit`` in the
    returned summary), so ``run`` after ``run`` trains nothing again."""
    start = time.perf_counter()
    trials_path = out / "search" / "trials.csv"
    if not is_complete(out / "search"):
        raise ArtifactError(
            f"{out / 'search'} holds no finished search; run 'distdd-nas search' "
            "for this study first"
        )
    trials = pd.read_csv(trials_path)
    fp = fingerprint(
        config, (*DISTILL_SECTIONS, "search", "fedavg", "validate"), extra=trials.to_json()
    )
    if is_complete(out / "validate", fp):  # same trials, same settings: FedAvg already done
        return StageOutcome(
            out / "validate", {**load_json(out / "validate" / "summary.json"), "cache_hit": True}
        )
    ranking = rank_trials(trials)
    v = config.validate_
    selection = select_for_validation(
        ranking,
        top_k=v.top_k,
        n_random=v.n_random,
        seed=derive_seed(config.study.seed, "validate"),
    )
    fed = build_federation(config)
    make = candidate_factory(config)
    base = fedavg_settings(config)
    if v.rounds is not None:
        base = replace(base, rounds=v.rounds)
    rows, ledgers = [], []
    for i, row in selection.iterrows():
        params = {
            c.removeprefix("params_"): row[c]
            for c in selection.columns
            if c.startswith("params_") and pd.notna(row[c])
        }
        candidate = make(params)
        engine = make_engine(config, fed)
        result = run_fedavg(
            engine,
            arch=candidate.arch,
            test=fed.test,
            settings=candidate.fedavg_settings(base),
            seed=config.study.seed,
        )
        model = build_model(
            candidate.arch, input_shape=fed.train.input_shape, num_classes=fed.num_classes
        )
        rows.append(
            {
                "candidate_id": candidate.candidate_id,
                "selected_as": row["selected_as"],
                "proxy_rank": int(row["proxy_rank"]),
                "proxy_score": float(row["value"]),
                "fedavg_accuracy": result.test_accuracy,
                "model": candidate.arch.short_name(),
                "num_parameters": count_parameters(model),
                "rounds": result.rounds,
                "bytes_up": engine.ledger.bytes_up,
                "bytes_down": engine.ledger.bytes_down,
                "wall_s": result.wall_s,
            }
        )
        ledgers.append(engine.ledger.to_frame().assign(candidate_id=candidate.candidate_id))
        if progress is not None:
            progress(int(i) + 1, len(selection), {"test_accuracy": result.test_accuracy})
    table = pd.DataFrame(rows)
    proxy, acc = table["proxy_score"].to_numpy(), table["fedavg_accuracy"].to_numpy()
    summary = {
        "n_validated": len(table),
        "top_k": v.top_k,
        "n_random": v.n_random,
        "kendall_tau": kendall_tau(proxy, acc),
        "spearman_rho": spearman_rho(proxy, acc),
        "top1_regret": top1_regret(proxy, acc) if len(table) else float("nan"),
        "topk_overlap": topk_overlap(proxy, acc, v.top_k),
        "best_fedavg_accuracy": float(acc.max()) if len(acc) else float("nan"),
        "bytes_up": int(table["bytes_up"].sum()),
        "bytes_down": int(table["bytes_down"].sum()),
        "wall_s": time.perf_counter() - start,
    }
    with stage(out / "validate", fingerprint=fp) as w:
        w.csv("validation.csv", table)
        w.csv("ranking.csv", ranking)
        w.csv("ledger.csv", pd.concat(ledgers, ignore_index=True) if ledgers else pd.DataFrame())
        w.json("summary.json", summary)
    return StageOutcome(out / "validate", summary)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def cost_comparison(config: StudyConfig, out: Path, *, cache: Path) -> CostComparison:
    """Measured bytes/seconds of distil + search + validate, and FedAvg-per-candidate for every
    trial (``fedavg.rounds`` rounds each): measured per parameter and round on the validated
    candidates, extrapolated to the others by parameter count (FedAvg traffic per round is
    2 × clients per round × parameter bytes)."""
    manifest = read_manifest(distilled_dir(config, cache)) or {}
    trials = pd.read_csv(out / "search" / "trials.csv")
    finished = trials[trials["state"].isin(["COMPLETE", "PRUNED"])]
    validation = pd.read_csv(out / "validate" / "validation.csv")
    # Per parameter per round, so a short validation budget still prices a full FedAvg run.
    param_rounds = float((validation["num_parameters"] * validation["rounds"]).sum())
    bytes_per_param_round = float(
        (validation["bytes_up"] + validation["bytes_down"]).sum() / param_rounds
    )
    s_per_param_round = float(validation["wall_s"].sum() / param_rounds)
    full_rounds = config.fedavg.rounds
    fed = build_federation(config)
    make = candidate_factory(config)
    sizes = []
    for _, row in finished.iterrows():
        params = {
            c.removeprefix("params_"): row[c]
            for c in finished.columns
            if c.startswith("params_") and pd.notna(row[c])
        }
        model = build_model(
            make(params).arch, input_shape=fed.train.input_shape, num_classes=fed.num_classes
        )
        sizes.append(count_parameters(model))
    mean_size = float(np.mean(sizes)) if sizes else 0.0
    return CostComparison(
        distill_bytes=int(manifest.get("bytes_up", 0)) + int(manifest.get("bytes_down", 0)),
        search_bytes=int(finished["bytes_up"].sum() + finished["bytes_down"].sum()),
        validate_bytes=int((validation["bytes_up"] + validation["bytes_down"]).sum()),
        fedavg_bytes_per_candidate=bytes_per_param_round * mean_size * full_rounds,
        n_candidates=len(finished),
        distill_s=float(manifest.get("wall_s", 0.0)),
        search_s=float(finished["duration_s"].sum()),
        validate_s=float(validation["wall_s"].sum()),
        fedavg_s_per_candidate=s_per_param_round * mean_size * full_rounds,
    )


def run_report_stage(config: StudyConfig, out: Path, *, cache: Path) -> StageOutcome:
    """report.md, summary.json, CSV tables and PNG plots from the finished stages."""
    for name in ("search", "validate"):
        if not is_complete(out / name):
            raise ArtifactError(f"{out / name} is not complete; run 'distdd-nas {name}' first")
    distill = load_json(out / "distill" / "summary.json") if is_complete(out / "distill") else {}
    validate = load_json(out / "validate" / "summary.json")
    trials = pd.read_csv(out / "search" / "trials.csv")
    validation = pd.read_csv(out / "validate" / "validation.csv")
    ranking = pd.read_csv(out / "validate" / "ranking.csv")
    cost = cost_comparison(config, out, cache=cache)
    summary = {
        "study": config.study.name,
        "kendall_tau": validate["kendall_tau"],
        "spearman_rho": validate["spearman_rho"],
        "top1_regret": validate["top1_regret"],
        "topk_overlap": validate["topk_overlap"],
        "n_trials": cost.n_candidates,
        "n_validated": validate["n_validated"],
        "distilled_accuracy": distill.get("test_accuracy_mean"),
        "random_real_accuracy": distill.get("random_real_accuracy_mean"),
        "bytes_distill": cost.distill_bytes,
        "bytes_search": cost.search_bytes,
        "bytes_validate": cost.validate_bytes,
        "bytes_distdd_total": cost.distdd_bytes,
        "bytes_fedavg_nas_total": cost.fedavg_nas_bytes,
        "comm_ratio": cost.comm_ratio,
        "break_even_candidates": cost.break_even_candidates(),
        "wall_s_distdd_total": cost.distdd_s,
        "wall_s_fedavg_nas_total": cost.fedavg_nas_s,
        "time_ratio": cost.fedavg_nas_s / max(cost.distdd_s, 1e-9),
        "num_clients": config.partition.num_clients,
    }
    synthetic = load_distilled(distilled_dir(config, cache))
    fed_like = build_federation(config).train
    tau = summary["kendall_tau"]
    figures = {
        "proxy_vs_fedavg.png": scatter_figure(
            validation,
            x="proxy_score",
            y="fedavg_accuracy",
            title=f"proxy score vs FedAvg accuracy (Kendall τ = {tau:.2f})",
        ),
        "communication.png": bars_figure(
            {
                "distil": cost.distill_bytes,
                "search": cost.search_bytes,
                "validate": cost.validate_bytes,
                "FedAvg-NAS": cost.fedavg_nas_bytes,
            },
            title=f"bytes: DistDD total vs FedAvg per candidate ({cost.comm_ratio:.1f}×)",
            ylabel="bytes (log)",
        ),
        "history.png": history_figure(trials),
        "grid.png": image_grid_figure(
            synthetic.images,
            synthetic.labels,
            mean=fed_like.mean,
            std=fed_like.std,
            classes=fed_like.classes,
        ),
    }
    with stage(out / "report", fingerprint=fingerprint(config, extra=summary)) as w:
        w.json("summary.json", summary)
        w.csv("trials.csv", trials)
        w.csv("ranking.csv", ranking)
        w.csv("validation.csv", validation)
        for name, fig in figures.items():
            fig.savefig(w.file(name), dpi=100, bbox_inches="tight")
        w.file("report.md").write_text(
            render_markdown(config, summary, validation, distill), encoding="utf-8"
        )
    return StageOutcome(out / "report", summary)


def render_markdown(
    config: StudyConfig, summary: dict[str, Any], validation: pd.DataFrame, distill: dict[str, Any]
) -> str:
    """The human report of a study."""

    def mib(x: float) -> str:
        return f"{x / 2**20:,.1f} MiB"

    cols = [
        "candidate_id",
        "selected_as",
        "proxy_rank",
        "proxy_score",
        "fedavg_accuracy",
        "model",
        "num_parameters",
    ]
    table = markdown_table(validation[cols].sort_values("proxy_rank"))
    acc = distill.get("test_accuracy_mean")
    rnd = distill.get("random_real_accuracy_mean")
    cost_rows = "\n".join(
        [
            "| | bytes | wall s |",
            "|---|---|---|",
            f"| DistDD: distil + search + validate | {mib(summary['bytes_distdd_total'])} "
            f"| {summary['wall_s_distdd_total']:.0f} |",
            "| FedAvg for every candidate (measured on validated, extrapolated) "
            f"| {mib(summary['bytes_fedavg_nas_total'])} "
            f"| {summary['wall_s_fedavg_nas_total']:.0f} |",
            f"| ratio (FedAvg-NAS / DistDD) | {summary['comm_ratio']:.1f}× "
            f"| {summary['time_ratio']:.1f}× |",
        ]
    )
    m = summary["break_even_candidates"]
    break_even = (
        f"Break-even: DistDD-based search sends fewer bytes from **{m}** candidates on"
        if m is not None
        else "Break-even: never — scoring one proxy trial costs as many bytes as a FedAvg run"
    )
    distilled_line = (
        f"- distilled set: {config.distill.ipc} images/class, accuracy {acc:.4f} ± "
        f"{distill.get('test_accuracy_std', float('nan')):.4f} (random real subsets of the same "
        f"size, a centralized reference: {rnd:.4f} ± "
        f"{distill.get('random_real_accuracy_std', float('nan')):.4f})"
        if acc is not None and rnd is not None
        else "- distilled set: see distill/"
    )
    return f"""# distdd-nas report: {config.study.name}

{config.study.description}

## Ranking quality (proxy on the distilled set vs real FedAvg)
- trials searched: {summary["n_trials"]}; validated with FedAvg: {summary["n_validated"]}
  (top {config.validate_.top_k} + {config.validate_.n_random} random controls)
- Kendall τ = {summary["kendall_tau"]:.3f}, Spearman ρ = {summary["spearman_rho"]:.3f},
  top-k overlap = {summary["topk_overlap"]:.2f}, regret of the proxy's top-1 =
  {summary["top1_regret"]:.4f}
{distilled_line}

![proxy vs FedAvg](proxy_vs_fedavg.png)

{table}

## Cost: distil once + search vs FedAvg per candidate
{cost_rows}

{break_even} (distillation {mib(summary["bytes_distill"])}, search scoring
{mib(summary["bytes_search"])}, validation {mib(summary["bytes_validate"])}).

![communication](communication.png) ![history](history.png) ![grid](grid.png)

Open the Optuna study: `optuna-dashboard {summary.get("storage", "sqlite:///<run>/search/optuna.db")}`
"""


# --------------------------------------------------------------------------------------------
# run: every stage, reusing what is cached
# --------------------------------------------------------------------------------------------


def run_all(
    config: StudyConfig,
    out: Path,
    *,
    cache: Path,
    progress: Callable[[str], Progress | None] | None = None,
) -> StageOutcome:
    """distill (cached) → search (resumed) → validate → report."""
    bar = progress or (lambda _name: None)
    run_distill_stage(config, out, cache=cache, progress=bar("distill"))
    run_search_stage(config, out, cache=cache, progress=bar("search"))
    run_validate_stage(config, out, progress=bar("validate"))
    return run_report_stage(config, out, cache=cache)
