"""Every cheap proxy against the ground truth: how well each ranks candidates like FedAvg does.

The ground truth is a ``distdd-nas groundtruth`` table (``TABLE/groundtruth/``): real FedAvg
curves of sampled candidates under several seeds. The truth of a candidate is its replicate-0
test accuracy at the table's final round. Each proxy scores every candidate with complete
curves (a table may still be growing) and is compared with the truth: Kendall τ-b, Spearman ρ,
top-5 overlap and the regret of the proxy's top-1 (accuracy points), each with a 90 %
percentile-bootstrap interval over candidates (:mod:`distdd_nas.evidence.statistics`), on all
candidates and on the better half (by truth). Proxies, in the printed order:

* the seed-vs-seed ceiling — replicate 1 at the final round: FedAvg itself under another seed;
* the DistDD proxy (the search's scoring) at ``search.epochs`` and at ``--epochs-long``;
* the same scoring on a random real subset with the same images per class (a centralized
  reference, not a private method: it needs raw client data on the server), and with
  ``--real-ipc N ...`` on subsets of N images per class too (how ranking grows with the set);
* FedAvg after 1, 2 and 4 rounds (replicate 1, so it does not share the truth's luck);
* parameter count (larger = better) and NASWOT at initialisation on the distilled set.

Writes ``TABLE/proxies.csv`` (one row per candidate: truth, every proxy's score, bytes and
seconds) and ``TABLE/proxies.md`` (the printed tables, the command line and the date on top).
Server-side scores are cached per candidate in ``TABLE/proxy_scores.csv``; ``--prescore`` fills
it for every listed candidate (curves complete or not) and prints no statistics. Use the same
``--threads`` for ``--prescore`` and the final run (the thread count is part of the key).

    python bench/proxies.py --study studies/quickstart.toml --table bench/data/quickstart \\
        --cache artifacts --epochs-long 300 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from distdd_nas.artifacts import is_complete, read_manifest, write_atomic
from distdd_nas.config import StudyConfig, fingerprint, from_dict, load_config
from distdd_nas.errors import ArtifactError, ConfigError, DistddError
from distdd_nas.evidence.proxies import (
    ProxyScores,
    distilled_proxy,
    fedavg_after,
    naswot,
    parameter_count,
    random_real_proxy,
)
from distdd_nas.evidence.statistics import (
    ProxyEvidence,
    RankingEvidence,
    proxy_evidence,
    tau_difference,
)
from distdd_nas.search.candidate import Candidate
from distdd_nas.search.objective import ProxyObjective
from distdd_nas.seeding import derive_seed
from distdd_nas.stages.distill import distilled_dir, ensure_distilled, load_distilled
from distdd_nas.stages.groundtruth import GroundTruthTable, parse_replicates, plan_for, read_table
from distdd_nas.stages.search import make_objective, search_identity
from distdd_nas.study import Study

#: FedAvg rounds read as proxies (those beyond the table's rounds are skipped).
FEDAVG_ROUNDS = (1, 2, 4, 8)
#: Config sections the ground-truth accuracies depend on (besides study.seed).
TRUTH_SECTIONS = ("data", "partition", "noise", "federation", "fedavg")


def with_defaults(tree: dict[str, Any]) -> dict[str, Any]:
    """A table's recorded config as this version dumps it: settings added since the table was
    made take their defaults (they did not exist, so the table ran as the default does); a
    config this version cannot read is compared as recorded."""
    try:
        return from_dict(tree, source="the table's plan.json").to_dict()
    except DistddError:
        return tree


def check_plan(study: Study, table: GroundTruthTable) -> list[str]:
    """Warnings where the table was not made under this study: candidate ids that differ from
    the study's plan (same length), or settings the truth depends on that differ."""
    notes: list[str] = []
    g = study.config.groundtruth.model_copy(update={"candidates": len(table.listed)})
    planned = plan_for(Study(study.config.model_copy(update={"groundtruth": g})))
    ids = [c.candidate_id for c in planned.candidates]
    table_ids = table.listed["candidate_id"].tolist()
    differ = sum(a != b for a, b in zip(ids, table_ids))
    if differ:
        notes.append(
            f"WARNING: {differ} of {len(table_ids)} table candidates differ from this study's "
            "plan (another space, sample seed, model or search settings); proxies score the "
            "table's candidates as rebuilt from their params_* columns"
        )
    ours = study.config.to_dict()
    untimed = ("rounds", "eval_every")  # the table's own rounds replace fedavg.rounds

    def section(tree: dict[str, Any], name: str) -> Any:
        part = tree.get(name)
        return {k: v for k, v in part.items() if k not in untimed} if name == "fedavg" else part

    theirs = with_defaults(table.config)
    changed = [s for s in TRUTH_SECTIONS if section(ours, s) != section(theirs, s)]
    if ours["study"]["seed"] != theirs["study"]["seed"]:
        changed.append("study.seed")
    if changed:
        notes.append(
            f"WARNING: the table was made with other {', '.join(changed)} settings than this "
            "study (see groundtruth/plan.json): its accuracies are another federation's"
        )
    if not notes:
        notes.append(f"the table's {len(table_ids)} candidates are this study's plan")
    return notes


def _distilled(study: Study, cache: Path) -> tuple[Path, str]:
    """The distilled set's directory (distilling on a miss) and where its cost comes from."""
    hit = is_complete(distilled_dir(study, cache))
    start = time.perf_counter()
    path = ensure_distilled(study, cache)
    manifest = read_manifest(path) or {}
    total = int(manifest.get("bytes_up", 0)) + int(manifest.get("bytes_down", 0))
    if hit:
        source = (
            f"cached, not measured in this run: {total / 1e6:,.1f} MB as recorded in "
            f"{path}/manifest.json when it was distilled"
        )
    else:
        source = (
            f"distilled in this run: {total / 1e6:,.1f} MB, {time.perf_counter() - start:.0f} s"
        )
    return path, source


class ScoreCache:
    """Per-candidate scores of the server-side proxies in ``TABLE/proxy_scores.csv``, so a table
    that grows over sessions re-scores only its new candidates. Rows carry a key of everything a
    score depends on (the distilled set, epochs, seeds, search settings); rows under another key
    are ignored. Scores are per candidate by construction (each candidate trains from a seed
    derived from its own id), so scoring a subset gives the same numbers as scoring all."""

    COLUMNS = ("key", "proxy", "candidate_id", "score", "bytes", "seconds")

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key
        text = {"key": str, "proxy": str, "candidate_id": str}
        rows = (
            pd.read_csv(path, dtype=text)
            if path.exists()
            else pd.DataFrame(columns=list(self.COLUMNS))
        )
        self.rows = rows[rows["key"] == key]

    def get(
        self, name: str, ids: Sequence[str], compute: Callable[[list[int]], ProxyScores]
    ) -> ProxyScores:
        """Scores of ``ids`` (table ids) for proxy ``name``: cached rows, the rest computed by
        ``compute([position])`` one candidate at a time and saved after each (an interrupted
        run loses at most one candidate's work)."""
        have = self.rows[self.rows["proxy"] == name].set_index("candidate_id")
        for i in [i for i, c in enumerate(ids) if c not in have.index]:
            fresh = compute([i]).relabel([ids[i]])
            new = pd.DataFrame(
                {
                    "key": self.key,
                    "proxy": name,
                    "candidate_id": list(fresh.candidate_ids),
                    "score": fresh.scores,
                    "bytes": fresh.bytes,
                    "seconds": fresh.seconds,
                }
            )
            self.rows = pd.concat([self.rows, new], ignore_index=True)
            old = (
                pd.read_csv(self.path, dtype={"key": str, "proxy": str, "candidate_id": str})
                if self.path.exists()
                else self.rows.iloc[0:0]
            )
            keep = pd.concat([old[old["key"] != self.key], self.rows], ignore_index=True)
            write_atomic(self.path, keep.to_csv(index=False, lineterminator="\n"))
        have = self.rows[self.rows["proxy"] == name].set_index("candidate_id")
        got = have.loc[list(ids)]
        return ProxyScores(
            name=name,
            candidate_ids=tuple(ids),
            scores=got["score"].to_numpy(dtype=float),
            bytes=got["bytes"].to_numpy(dtype=np.int64),
            seconds=got["seconds"].to_numpy(dtype=float),
        )


def cache_key(study: Study, distilled: Path, epochs: int, epochs_long: int) -> str:
    """Everything the server-side proxy scores depend on: the distilled set, the proxy's
    training and scoring settings (the search identity minus how trials are proposed), the
    FedAvg settings simulated FedAvg uses for ``fedavg.*`` spaces, seeds, images per class, and
    the thread count (float rounding). Run ``--prescore`` and the final run with one ``--threads``.
    """
    config = study.config
    search = {
        k: v
        for k, v in search_identity(config).items()
        if k not in ("sampler", "pruner", "backend", "virtual_steps")  # each proxy pins its own
    }
    parts = {
        "distilled": distilled.name,
        "epochs": [epochs, epochs_long],
        "seed": config.study.seed,
        "search": search,
        "fedavg": config.fedavg.model_dump(mode="json"),
        "ipc": config.distill.ipc,
        "threads": torch.get_num_threads(),
    }
    return fingerprint(config, (), extra=parts)


@contextlib.contextmanager
def proxy_scorer(study: Study, distilled: Path) -> Iterator[tuple[Study, Any]]:
    """(the study, the search's scorer on ``distilled``), the scorer's engine closed after use;
    always the Optuna backend's scorer (the same scoring; NNI would write trial files)."""
    config = study.config
    if config.search.backend != "optuna":
        config = config.model_copy(
            update={"search": config.search.model_copy(update={"backend": "optuna"})}
        )
        study = Study(config)
    objective = make_objective(study, distilled, Path("unused"))
    assert isinstance(objective, ProxyObjective)
    try:
        yield study, objective.scorer
    finally:
        if objective.scorer.engine is not None:
            objective.scorer.engine.close()


def distdd_scores(
    scorer: Any, candidates: list[Candidate], ids: list[str], *, epochs: int, cache: ScoreCache
) -> ProxyScores:
    """The DistDD proxy (the search's scoring on the distilled set, ``epochs`` epochs) of every
    candidate, from ``cache`` or computed for those it lacks."""
    name = f"distdd_e{epochs}"
    return cache.get(
        name,
        ids,
        lambda p: distilled_proxy([candidates[i] for i in p], scorer, epochs=epochs, name=name),
    )


def random_real_scores(
    study: Study,
    scorer: Any,
    candidates: list[Candidate],
    ids: list[str],
    *,
    cache: ScoreCache,
    epochs: int | None = None,
    ipc: int | None = None,
) -> ProxyScores:
    """The search's scoring trained on a random real subset of the clients' data with the
    distilled set's images per class (a centralized reference), from ``cache`` or computed;
    cached as ``random_real_e<epochs>`` (``random_real_sim`` for simulated FedAvg). ``ipc``:
    another subset size (cached as ``random_real_e<epochs>_ipc<ipc>``), drawn from the same
    seed, so the size is the only change."""
    name = "random_real_sim" if epochs is None else f"random_real_e{epochs}"
    name += "" if ipc is None else f"_ipc{ipc}"
    fed = study.federation
    return cache.get(
        name,
        ids,
        lambda p: random_real_proxy(
            [candidates[i] for i in p],
            scorer,
            train=fed.train,
            pool=np.concatenate(fed.split.client_indices),
            ipc=study.config.distill.ipc if ipc is None else ipc,
            seed=derive_seed(study.config.study.seed, "evidence", "random_real"),
            epochs=epochs,
            name=name,
        ),
    )


def is_fedavg_table(candidates: Sequence[Candidate]) -> bool:
    """A table of FedAvg hyper-parameters (``fedavg.*`` candidates of one architecture): its
    proxies are simulated FedAvg variants, and architecture-only proxies (parameter count,
    NASWOT) are constant on it, so they are left out."""
    return all(c.is_fedavg for c in candidates) and len({c.arch for c in candidates}) == 1


#: Labels of the product's own proxy (the first such row is compared with every other).
PRODUCT_LABELS = ("DistDD proxy", "simulated FedAvg")
#: Simulated-FedAvg variants scored on a FedAvg-hyper-parameter table: (cache name, label,
#: ``search.virtual_steps``).
SIMULATIONS = (
    ("sim_scaled", "simulated FedAvg on the distilled set, study's batch (fewer steps)", "scaled"),
    ("sim_real_steps", "simulated FedAvg on the distilled set, real local steps", "real"),
)


def fl_hparam_proxies(
    study: Study,
    candidates: list[Candidate],
    ids: list[str],
    *,
    distilled: Path,
    cache: ScoreCache,
    product_only: bool = False,
) -> list[tuple[str, ProxyScores]]:
    """Server-side proxies of a FedAvg-hyper-parameter table: each simulated-FedAvg variant on
    the distilled set, and the scaled one on a random real subset (centralized reference), each
    read from ``cache`` or computed for the candidates it lacks (``product_only``: the study's
    variant alone). Every proxy pins its virtual steps, so ``search.virtual_steps`` is not part
    of the cache key."""
    out: list[tuple[str, ProxyScores]] = []
    with proxy_scorer(study, distilled) as (study, scorer):
        chosen = study.config.search.virtual_steps  # the product's: first, so paired Δτ uses it
        sims = sorted(SIMULATIONS, key=lambda sim: sim[2] != chosen)
        for name, label, steps in sims[:1] if product_only else sims:
            label += " (the study's setting)" if steps == chosen else ""
            variant = replace(scorer, virtual_steps=steps)
            scores = cache.get(
                name,
                ids,
                lambda p, v=variant, n=name: distilled_proxy(
                    [candidates[i] for i in p], v, name=n
                ),
            )
            out.append((label, scores))
        if product_only:
            return out
        scaled = replace(scorer, virtual_steps="scaled")
        real = random_real_scores(study, scaled, candidates, ids, cache=cache)
        out.append(("the scaled simulation on a random real subset (centralized reference)", real))
    return out


def server_side_proxies(
    study: Study,
    candidates: list[Candidate],
    ids: list[str],
    *,
    distilled: Path,
    epochs: int,
    epochs_long: int,
    cache: ScoreCache,
    product_only: bool = False,
    real_ipc: Sequence[int] = (),
) -> list[tuple[str, ProxyScores]]:
    """The proxies computed on the server's side (DistDD proxy at two budgets, the random real
    reference, NASWOT), each read from ``cache`` or computed for the candidates it lacks;
    ``product_only``: the search's own scoring alone (a direction measured under an override);
    ``real_ipc``: random real subsets of these sizes too (how τ grows with the set's size: where
    a set of the distilled set's size stands), added in either mode."""
    if is_fedavg_table(candidates):
        return fl_hparam_proxies(
            study, candidates, ids, distilled=distilled, cache=cache, product_only=product_only
        )
    seed = study.config.study.seed
    out: list[tuple[str, ProxyScores]] = []

    def pick(positions: list[int]) -> list[Candidate]:
        return [candidates[i] for i in positions]

    with proxy_scorer(study, distilled) as (study, scorer):
        fed = study.federation
        budgets = (epochs,) if product_only else dict.fromkeys((epochs, epochs_long))
        for e in budgets:  # once when they are equal
            scores = distdd_scores(scorer, candidates, ids, epochs=e, cache=cache)
            out.append((f"DistDD proxy, {e} epochs", scores))
        if not product_only:
            real = random_real_scores(study, scorer, candidates, ids, cache=cache, epochs=epochs)
            out.append((f"random real subset, {epochs} epochs (centralized reference)", real))
        for n in real_ipc:
            real = random_real_scores(
                study, scorer, candidates, ids, cache=cache, epochs=epochs, ipc=n
            )
            out.append((f"random real subset, {n} per class, {epochs} epochs", real))
    if product_only:
        return out
    images = load_distilled(distilled).images
    nas = cache.get("naswot", ids, lambda p: naswot(pick(p), images, like=fed.train, seed=seed))
    out.append(("NASWOT at init (distilled set)", nas))
    return out


def compute_proxies(
    study: Study,
    table: GroundTruthTable,
    candidates: list[Candidate],
    *,
    distilled: Path,
    epochs: int,
    epochs_long: int,
    cache: ScoreCache,
    product_only: bool = False,
    real_ipc: Sequence[int] = (),
) -> list[tuple[str, ProxyScores]]:
    """(label, scores) of every proxy, ceiling first, each under the table's ids
    (``product_only``: of the server-side proxies, the search's own scoring alone;
    ``real_ipc``: random real subsets of these sizes too)."""
    ids = table.candidates["candidate_id"].tolist()
    r = table.rounds
    out: list[tuple[str, ProxyScores]] = []
    if table.replicates >= 2:
        ceiling = fedavg_after(
            table.curves, rounds=r, replicate=table.observe, candidate_ids=ids, name="seed_ceiling"
        )
        out.append((f"seed-vs-seed ceiling (FedAvg, other seed, {r} rounds)", ceiling))
    server = server_side_proxies(
        study,
        candidates,
        ids,
        distilled=distilled,
        epochs=epochs,
        epochs_long=epochs_long,
        cache=cache,
        product_only=product_only,
        real_ipc=real_ipc,
    )
    fl_hparams = is_fedavg_table(candidates)
    late = [row for row in server if row[1].name == "naswot"]  # printed after the param count
    out += [row for row in server if row[1].name != "naswot"]
    for k in (k for k in FEDAVG_ROUNDS if k <= r):
        scores = fedavg_after(table.curves, rounds=k, replicate=table.observe, candidate_ids=ids)
        out.append((f"FedAvg after {k} round(s)", scores))
    if not fl_hparams:
        out.append(("parameter count (larger = better)", parameter_count(table.candidates)))
        out += late
    for label, scores in out:
        print(f"  {label}: {scores.total_seconds:.1f} s", file=sys.stderr, flush=True)
    return [(label, scores.relabel(ids)) for label, scores in out]


def _cells(ev: RankingEvidence) -> list[str]:
    return [
        str(ev.n),
        ev.tau.format(2),
        ev.rho.format(2),
        ev.topk.format(2),
        ev.regret.format(1, scale=100.0),
    ]


def render(
    results: list[tuple[str, ProxyScores, ProxyEvidence]], *, head: list[str], k: int
) -> str:
    """The markdown report: header lines, then one table on all candidates and one on the
    better half."""
    cols = [
        "proxy",
        "n",
        "Kendall τ [90 % CI]",
        "Spearman ρ [CI]",
        f"top-{k} overlap [CI]",
        "regret of top-1, points [CI]",
        "bytes",
        "s",
    ]
    lines = [*head]
    for title, pick in (("All candidates", "all"), ("Better half (by truth)", "better_half")):
        lines += ["", f"## {title}", "", "| " + " | ".join(cols) + " |"]
        lines.append("|" + "---|" * len(cols))
        for label, scores, ev in results:
            cells = [
                label,
                *_cells(getattr(ev, pick)),
                f"{scores.total_bytes / 1e6:,.1f} MB",
                f"{scores.total_seconds:,.0f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--study", required=True, help="study file, e.g. studies/quickstart.toml")
    parser.add_argument("--table", required=True, type=Path, help="--out of the groundtruth run")
    parser.add_argument("--cache", type=Path, default=Path("artifacts"), help="distilled sets")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="K=V")
    parser.add_argument("--epochs", type=int, help="DistDD proxy epochs (default search.epochs)")
    parser.add_argument("--epochs-long", type=int, default=300, help="the longer DistDD proxy")
    parser.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument(
        "--replicates",
        type=parse_replicates,
        help="replicates in use, truth first (e.g. 1: one seed while the second is training)",
    )
    parser.add_argument(
        "--product-only",
        action="store_true",
        help="of the server-side proxies, score only the search's own (a direction's run)",
    )
    parser.add_argument(
        "--real-ipc",
        type=int,
        nargs="+",
        default=[],
        metavar="N",
        help="also score random real subsets of N images per class (architecture tables)",
    )
    parser.add_argument(
        "--prescore",
        action="store_true",
        help="only score every listed candidate into TABLE/proxy_scores.csv (no statistics)",
    )
    return parser.parse_args(list(argv))


def run(args: argparse.Namespace, command: str) -> str:
    """Everything after argument parsing; returns the markdown it wrote."""
    start = time.perf_counter()
    config: StudyConfig = load_config(args.study, args.overrides)
    study = Study(config)
    table = read_table(args.table, replicates=args.replicates)
    if len(table.candidates) < 4 and not args.prescore:
        raise ArtifactError(
            f"{args.table}: only {len(table.candidates)} candidates have complete curves; "
            "need at least 4 (let the groundtruth run go on)"
        )
    notes = check_plan(study, table)
    candidates = [study.candidates.from_row(row) for _, row in table.candidates.iterrows()]
    if args.real_ipc and min(args.real_ipc) < 1:
        sizes = " ".join(map(str, args.real_ipc))
        raise ConfigError(f"--real-ipc {sizes}: give sizes >= 1 (images per class)")
    if args.real_ipc and is_fedavg_table(candidates):
        raise ConfigError(
            "--real-ipc is only for an architecture table (a FedAvg-hyper-parameter table has "
            "its own random real reference); drop it"
        )
    distilled, source = _distilled(study, args.cache)
    epochs = args.epochs or config.search.epochs
    cache = ScoreCache(
        args.table / "proxy_scores.csv", cache_key(study, distilled, epochs, args.epochs_long)
    )
    if args.prescore:  # score every listed candidate now; statistics come later
        listed = table.listed["candidate_id"].astype(str).tolist()
        everyone = [study.candidates.from_row(row) for _, row in table.listed.iterrows()]
        server_side_proxies(
            study,
            everyone,
            listed,
            distilled=distilled,
            epochs=epochs,
            epochs_long=args.epochs_long,
            cache=cache,
            product_only=args.product_only,
            real_ipc=args.real_ipc,
        )
        return f"scored {len(listed)} listed candidates into {cache.path}\n"
    proxies = compute_proxies(
        study,
        table,
        candidates,
        distilled=distilled,
        epochs=epochs,
        epochs_long=args.epochs_long,
        cache=cache,
        product_only=args.product_only,
        real_ipc=args.real_ipc,
    )
    ids = table.candidates["candidate_id"].tolist()
    truth = fedavg_after(
        table.curves, rounds=table.rounds, replicate=table.truth, candidate_ids=ids
    )
    results = [
        (label, s, proxy_evidence(s.scores, truth.scores, seed=config.study.seed, boot=args.boot))
        for label, s in proxies
    ]
    frame = table.candidates[["index", "candidate_id", "model", "num_parameters"]].assign(
        truth=truth.scores
    )
    for _, s in proxies:
        frame = frame.merge(s.to_frame(), on="candidate_id", how="left")
    write_atomic(args.table / "proxies.csv", frame.to_csv(index=False, lineterminator="\n"))
    head = [
        "# Cheap proxies against the FedAvg ground truth",
        "",
        f"`{command}`",
        "",
        f"Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}; "
        f"torch threads: {torch.get_num_threads()}; wall {time.perf_counter() - start:,.0f} s.",
        "",
        f"Truth: FedAvg test accuracy of replicate {table.truth} at round {table.rounds}; "
        f"{len(ids)} of {len(table.listed)} candidates have {_replicates(table)} complete. "
        f"{_observed(table)}"
        f"Intervals: 90 % percentile bootstrap over candidates, {args.boot} resamples. "
        f"Distillation (paid once, not in the bytes below): {source}. "
        "bytes, s: the proxy's traffic and wall seconds over all candidates (FedAvg rows: "
        "cumulative at that round in the table's curves; DistDD and random real: federated "
        "scoring, metered in this run; parameter count and NASWOT: server-side, 0 bytes).",
        "",
        *[f"- {n}" for n in notes],
    ]
    if is_fedavg_table(candidates):
        head += ["", untuned(table, truth)]
    text = render(results, head=head, k=results[0][2].all.k)
    text += paired(proxies, truth, seed=config.study.seed, boot=args.boot)
    text += settling(table, ids, truth, seed=config.study.seed, boot=args.boot)
    write_atomic(args.table / "proxies.md", text)
    return text


def _replicates(table: GroundTruthTable) -> str:
    used = sorted(table.curves["replicate"].unique().tolist())
    return "replicate " + ", ".join(map(str, used)) if len(used) == 1 else f"replicates {used}"


def _observed(table: GroundTruthTable) -> str:
    """Which seed the FedAvg baselines see: another than the truth's, or, in a one-replicate
    reading, the truth's own (which flatters them: they share its seed luck)."""
    if table.observe != table.truth:
        return f"FedAvg-after-r rows read replicate {table.observe} (not the truth's seed). "
    return (
        f"One replicate in use: FedAvg-after-r rows read the truth's own seed (replicate "
        f"{table.truth}), which flatters them — they share its seed luck. "
    )


def untuned(table: GroundTruthTable, truth: ProxyScores) -> str:
    """What tuning is worth on this table: the reference configuration (the study's own
    settings, the table's first candidate) against the best candidate, by truth."""
    rows = table.candidates.assign(truth=truth.scores)
    best = rows.loc[rows["truth"].idxmax()]
    ref = rows[rows["is_reference"].astype(bool)]
    if ref.empty:
        return f"Best by truth: {best['model']} at {100 * best['truth']:.1f} %."
    r = ref.iloc[0]
    return (
        f"Untuned (the study's reference, {r['model']}): {100 * r['truth']:.1f} %; best by "
        f"truth: {best['model']} at {100 * best['truth']:.1f} % (not tuning costs "
        f"{100 * (best['truth'] - r['truth']):.1f} points)."
    )


def paired(
    proxies: list[tuple[str, ProxyScores]], truth: ProxyScores, *, seed: int, boot: int
) -> str:
    """The product's proxy against each other cheap proxy: Δτ with a paired bootstrap interval
    (both re-scored on the same resampled candidates; above 0 = the DistDD proxy ranks better)."""
    ours = next(((label, s) for label, s in proxies if label.startswith(PRODUCT_LABELS)), None)
    if ours is None:
        return ""
    lines = [
        "",
        f"## {ours[0]} against each other proxy (paired Δτ)",
        "",
        "| other proxy | Δτ = τ(DistDD) − τ(other) [90 % CI] |",
        "|---|---|",
    ]
    for label, scores in proxies:
        if label != ours[0]:
            d = tau_difference(ours[1].scores, scores.scores, truth.scores, seed=seed, boot=boot)
            lines.append(f"| {label} | {d.format(2)} |")
    return "\n".join(lines) + "\n"


def settling(
    table: GroundTruthTable, ids: list[str], truth: ProxyScores, *, seed: int, boot: int
) -> str:
    """Has the ranking settled by the final round? Same seed (the truth's): Kendall τ between
    the accuracy after r rounds and after R, for r = R/4, R/2, 3R/4."""
    lines = [
        "",
        f"## Has the ranking settled by round {table.rounds}? "
        f"(same seed, replicate {table.truth})",
        "",
        "| rounds r | Kendall τ(r, R) [90 % CI] |",
        "|---|---|",
    ]
    for r in sorted({max(1, table.rounds * q // 4) for q in (1, 2, 3)}):
        early = fedavg_after(table.curves, rounds=r, replicate=table.truth, candidate_ids=ids)
        ev = proxy_evidence(early.scores, truth.scores, seed=seed, boot=boot).all
        lines.append(f"| {r} | {ev.tau.format(2)} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 on a user-facing error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    command = shlex.join(["python", "bench/proxies.py", *argv])
    try:
        print(run(args, command), end="")
    except DistddError as err:
        print(f"proxies: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
