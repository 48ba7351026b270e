"""FedAvg-based search, the baseline: real FedAvg per candidate with successive halving on
rounds, every byte metered (pruned trials included), and its replay on measured curves."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from distdd_nas.cli import main
from distdd_nas.evidence.groundtruth import Unit, train_unit
from distdd_nas.search.fedavg_objective import MissingCurve
from distdd_nas.stages.search import replay_fedavg_search
from distdd_nas.study import Study
from tests.conftest import SMOKE, smoke

pytestmark = pytest.mark.timeout(300)

BASE = (
    'search.objective="fedavg"',
    'search.sampler="random"',
    "search.n_trials=10",
    "fedavg.rounds=9",
    "fedavg.local_epochs=1",
)
SEARCH = (*BASE, 'search.pruner="successive_halving"')


@pytest.mark.parametrize("pruner", ["successive_halving", "hyperband"])
def test_fedavg_search_prunes_rounds_and_its_replay_spends_the_same_bytes(
    tmp_path: Path, pruner: str
) -> None:
    search = (*BASE, f'search.pruner="{pruner}"')
    args = [f"--set={s}" for s in search]
    assert main(["search", str(SMOKE), "--out", str(tmp_path), *args]) == 0
    trials = pd.read_csv(tmp_path / "search" / "trials.csv")
    summary = json.loads((tmp_path / "search" / "summary.json").read_text())
    assert not (tmp_path / "search" / "nni").exists()
    pruned = trials[trials["state"] == "PRUNED"]
    complete = trials[(trials["state"] == "COMPLETE") & (trials["duplicate_of"] < 0)]
    assert len(pruned) >= 1 and len(complete) >= 1
    # Trials stop at rungs (η = 3: rounds 1, 3; Hyperband's bracket that starts at 9 rounds
    # may also stop one at 9, after it ran them all); complete ones ran all 9.
    rungs = {1, 3} if pruner == "successive_halving" else {1, 3, 9}
    assert set(pruned["rounds"]) <= rungs and set(complete["rounds"]) == {9}
    # Pruned trials are priced too (their exact bytes are checked by the replay below).
    assert (pruned["bytes_up"] > 0).all()
    assert summary["bytes_up"] == int(trials["bytes_up"].sum())

    # Independent FedAvg runs (the ground truth's replicate 0 = the study seed) of every
    # candidate the search tried, then the same search replayed on those curves.
    study = Study(smoke(*search))
    seen = trials.drop_duplicates("candidate_id")
    units = []
    for i, row in enumerate(seen.itertuples()):
        candidate = study.candidates.from_row(seen.iloc[i].to_dict())
        assert candidate.candidate_id == row.candidate_id
        engine = study.make_engine()
        unit = Unit(i, candidate, 0, study.config.study.seed)
        units.append(
            train_unit(
                engine, unit, test=study.federation.test, base=study.fedavg_settings, rounds=9
            )
        )
    curves = pd.concat(units, ignore_index=True)
    replay = replay_fedavg_search(study, curves, replicate=0, workdir=tmp_path / "replay")
    cols = ["candidate_id", "state", "rounds"]
    pd.testing.assert_frame_equal(replay[cols], trials[cols])
    real_bytes = int((trials["bytes_up"] + trials["bytes_down"]).sum())
    replay_bytes = int((replay["bytes_up"] + replay["bytes_down"]).sum())
    assert abs(replay_bytes - real_bytes) <= 0.01 * real_bytes


def test_fedavg_search_refuses_nni(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "search",
            str(SMOKE),
            "--out",
            str(tmp_path),
            "--set",
            'search.objective="fedavg"',
            "--set",
            'search.backend="nni"',
        ]
    )
    assert code == 2
    assert "runs on the Optuna backend only" in capsys.readouterr().err


def test_a_replay_outside_the_table_names_the_problem(tmp_path: Path) -> None:
    study = Study(smoke(*SEARCH))
    empty = pd.DataFrame(
        columns=[
            "candidate_id",
            "replicate",
            "round",
            "test_accuracy",
            "bytes_up",
            "bytes_down",
            "wall_s",
        ]
    )
    with pytest.raises(MissingCurve, match=r"has no 9-round curve of candidate \w+ \(replicate"):
        replay_fedavg_search(study, empty, replicate=0, workdir=tmp_path)
