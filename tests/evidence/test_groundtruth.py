"""Ground truth: sampling, the resumable table, and the stage end to end (killed and resumed)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distdd_nas.artifacts import AppendTable
from distdd_nas.cli import main
from distdd_nas.config import StudyConfig
from distdd_nas.errors import ArtifactError, ConfigError
from distdd_nas.evidence.groundtruth import CURVE_COLUMNS, sample_candidates
from distdd_nas.stages.groundtruth import (
    parse_replicates,
    plan_for,
    read_table,
    seed_vs_seed_tau,
    table_fingerprint,
    table_identity,
)
from distdd_nas.study import Study
from tests.conftest import REPO, SMOKE, patched_cli, smoke

GT = ["--set", "groundtruth.candidates=3", "--set", "groundtruth.rounds=2"]


def test_sampling_is_distinct_prefix_stable_and_reference_first() -> None:
    study = Study(smoke())
    ref = study.candidates({})
    five = sample_candidates(study.space, study.candidates, n=5, seed=3, reference=ref)
    three = sample_candidates(study.space, study.candidates, n=3, seed=3, reference=ref)
    other = sample_candidates(study.space, study.candidates, n=5, seed=4, reference=ref)
    ids = [c.candidate_id for c in five]
    assert ids[0] == ref.candidate_id and len(set(ids)) == 5
    assert [c.candidate_id for c in three] == ids[:3]
    assert [c.candidate_id for c in other] != ids
    for c in five[1:]:  # every drawn candidate is a point of the space
        assert study.space.point({**c.params}) is not None


def test_a_space_too_small_for_n_is_a_config_error() -> None:
    study = Study(smoke())
    size = int(study.space.size)
    with pytest.raises(ConfigError, match=r"gave only \d+ distinct candidates.*ask for fewer"):
        sample_candidates(
            study.space, study.candidates, n=size + 2, seed=0, reference=study.candidates({})
        )


def test_append_table_drops_a_torn_last_line(tmp_path: Path) -> None:
    table = AppendTable(tmp_path / "t.csv", ("a", "b"))
    table.append(pd.DataFrame({"a": [1, 2], "b": [0.5, 0.25]}))
    with (tmp_path / "t.csv").open("a") as fh:
        fh.write("3,0.1")  # a kill mid-write: no newline
    back = table.read()
    assert back["a"].tolist() == [1, 2]
    assert (tmp_path / "t.csv").read_text().endswith("0.25\n")
    table.append(pd.DataFrame({"a": [3], "b": [1.0]}))
    assert table.read()["a"].tolist() == [1, 2, 3]
    with pytest.raises(ArtifactError, match=r"has columns \['a', 'b'\].*use another --out"):
        AppendTable(tmp_path / "t.csv", ("x", "y")).read()


def test_seed_vs_seed_tau_on_a_hand_made_table() -> None:
    acc0, acc1 = [0.1, 0.2, 0.3, 0.4], [0.1, 0.3, 0.2, 0.4]  # one discordant pair of 6
    rows = [
        {"candidate_id": f"c{i}", "replicate": r, "round": 2, "test_accuracy": a}
        for r, accs in ((0, acc0), (1, acc1))
        for i, a in enumerate(accs)
    ]
    assert seed_vs_seed_tau(pd.DataFrame(rows), round=2) == pytest.approx((5 - 1) / 6)
    only_one = pd.DataFrame([r for r in rows if r["replicate"] == 0])
    assert np.isnan(seed_vs_seed_tau(only_one, round=2))


def test_groundtruth_stage_writes_every_round_and_matches_validation_seed(tmp_path: Path) -> None:
    assert main(["groundtruth", str(SMOKE), "--out", str(tmp_path), *GT]) == 0
    stage = tmp_path / "groundtruth"
    curves = pd.read_csv(stage / "curves.csv")
    candidates = pd.read_csv(stage / "candidates.csv")
    assert tuple(curves.columns) == CURVE_COLUMNS
    assert len(curves) == 3 * 2 * 2  # candidates × replicates × rounds
    assert candidates["is_reference"].tolist() == [True, False, False]
    assert sorted(curves["seed"].unique().tolist()) == [0, 1]  # study seed + replicate
    first = curves.groupby(["candidate_id", "replicate"])["bytes_up"].apply(
        lambda b: b.is_monotonic_increasing
    )
    assert first.all()
    assert (stage / "manifest.json").exists() and (stage / "summary.json").exists()
    # Replicate 0 is exactly the FedAvg that validation and the fedavg stage train.
    assert (
        main(["fedavg", str(SMOKE), "--out", str(tmp_path / "f"), "--set", "fedavg.rounds=2"]) == 0
    )
    history = pd.read_csv(tmp_path / "f" / "fedavg" / "history.csv")
    ref = curves[
        (curves["candidate_id"] == candidates["candidate_id"][0]) & (curves["replicate"] == 0)
    ]
    np.testing.assert_array_equal(
        ref["test_accuracy"].to_numpy(), history["test_accuracy"].to_numpy()
    )


def test_other_settings_on_the_same_directory_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["groundtruth", str(SMOKE), "--out", str(tmp_path), *GT]) == 0
    before = (tmp_path / "groundtruth" / "curves.csv").read_bytes()
    code = main(["groundtruth", str(SMOKE), "--out", str(tmp_path), *GT, "--set", "fedavg.lr=0.2"])
    err = capsys.readouterr().err
    assert code == 2 and "made under other trains" in err and "another --out" in err
    assert (tmp_path / "groundtruth" / "curves.csv").read_bytes() == before
    # Proxy-training settings change candidate ids, not FedAvg curves: the table still resumes
    # (nothing to train) and keeps the ids it gave its rows.
    assert (
        main(["groundtruth", str(SMOKE), "--out", str(tmp_path), *GT, "--set", "search.epochs=7"])
        == 0
    )
    assert (tmp_path / "groundtruth" / "curves.csv").read_bytes() == before


KILL_AT_SECOND_UNIT = """
import os, signal, sys
from distdd_nas.stages import groundtruth
train_unit, calls = groundtruth.train_unit, []
def killing_train_unit(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return train_unit(*args, **kwargs)
groundtruth.train_unit = killing_train_unit
"""


def test_killed_groundtruth_resumes_to_the_same_table(tmp_path: Path) -> None:
    """SIGKILL after the first unit is on disk; the resumed table equals an uninterrupted one
    (wall seconds aside) and no unit is trained twice."""
    args = [
        "groundtruth",
        str(SMOKE),
        "--set",
        "groundtruth.candidates=3",
        "--set",
        "groundtruth.rounds=3",
    ]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    killed = tmp_path / "killed"
    # The process SIGKILLs itself as it starts its second unit, so exactly one unit is on disk
    # (polling the file from here raced a fast machine).
    proc = subprocess.run(
        [*patched_cli(KILL_AT_SECOND_UNIT), "--threads", "1", *args, "--out", str(killed)],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=240,
    )
    assert proc.returncode == -signal.SIGKILL
    curves = killed / "groundtruth" / "curves.csv"
    partial = AppendTable(curves, CURVE_COLUMNS).read()
    assert len(partial) == 3  # one unit of three rounds
    assert main([*args, "--out", str(killed)]) == 0
    a = pd.read_csv(tmp_path / "whole" / "groundtruth" / "curves.csv").drop(columns="wall_s")
    b = pd.read_csv(curves).drop(columns="wall_s")
    pd.testing.assert_frame_equal(a, b)
    assert not b.duplicated(["candidate_id", "replicate", "round"]).any()


def test_two_shards_fill_the_same_table_as_one_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["groundtruth", str(SMOKE), "--out", str(tmp_path / "one"), *GT]) == 0
    shared = tmp_path / "shared"
    assert main(["groundtruth", str(SMOKE), "--out", str(shared), *GT, "--shard", "1/2"]) == 0
    assert not (shared / "groundtruth" / "manifest.json").exists()  # shard 0 still missing
    assert main(["groundtruth", str(SMOKE), "--out", str(shared), *GT, "--shard", "0/2"]) == 0
    assert (shared / "groundtruth" / "manifest.json").exists()
    key = ["candidate_id", "replicate", "round"]
    a = pd.read_csv(tmp_path / "one" / "groundtruth" / "curves.csv").drop(columns="wall_s")
    b = pd.read_csv(shared / "groundtruth" / "curves.csv").drop(columns="wall_s")
    pd.testing.assert_frame_equal(
        a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    )
    capsys.readouterr()
    assert main(["groundtruth", str(SMOKE), "--out", str(shared), "--shard", "2/2"]) == 2
    assert "is not K/N with 0 <= K < N" in capsys.readouterr().err


def test_a_unit_written_twice_keeps_its_first_curve(tmp_path: Path) -> None:
    assert main(["groundtruth", str(SMOKE), "--out", str(tmp_path), *GT]) == 0
    curves = tmp_path / "groundtruth" / "curves.csv"
    lines = curves.read_text().splitlines(keepends=True)
    first = "".join(lines)
    curves.write_text(first + "".join(lines[1:3]))  # unit 0 appended again (a rogue writer)
    assert main(["groundtruth", str(SMOKE), "--out", str(tmp_path), *GT]) == 0
    assert curves.read_text() == first


def test_a_killed_writers_partial_block_is_dropped_and_retrained(tmp_path: Path) -> None:
    assert main(["groundtruth", str(SMOKE), "--out", str(tmp_path), *GT]) == 0
    curves = tmp_path / "groundtruth" / "curves.csv"
    whole = curves.read_text()
    lines = whole.splitlines(keepends=True)
    curves.write_text("".join(lines[:-1]) + lines[-1][:10])  # last unit: 1 of 2 rows + a tear
    assert main(["groundtruth", str(SMOKE), "--out", str(tmp_path), *GT]) == 0
    again = pd.read_csv(curves).drop(columns="wall_s")
    pd.testing.assert_frame_equal(
        again, pd.read_csv(io.StringIO(whole)).drop(columns="wall_s"), check_like=False
    )


def test_ids_that_look_like_numbers_stay_text(tmp_path: Path) -> None:
    table = AppendTable(tmp_path / "t.csv", ("candidate_id", "x"), text=("candidate_id",))
    table.append(pd.DataFrame({"candidate_id": ["0123456789", "1234567e89"], "x": [1, 2]}))
    assert table.read()["candidate_id"].tolist() == ["0123456789", "1234567e89"]
    kept = table.keep(lambda rows: rows)  # nothing dropped: the file is not rewritten
    assert kept["candidate_id"].tolist() == ["0123456789", "1234567e89"]
    assert "0123456789" in (tmp_path / "t.csv").read_text()


@pytest.mark.parametrize(
    "plan",
    sorted((REPO / "bench" / "data").glob("*/groundtruth/plan.json")),
    ids=lambda p: p.parts[-3],
)
def test_committed_tables_keep_their_fingerprint(plan: Path) -> None:
    """Today's code claims every committed table: a setting added since (e.g. ``augment``) must
    not change the identity of tables made before it, or their resumption is refused."""
    stored = json.loads(plan.read_text())
    study = Study(StudyConfig.model_validate(stored["config"]))
    identity = table_identity(study, plan_for(study))
    identity["threads"] = stored["identity"]["threads"]  # the thread count it was made with
    assert table_fingerprint(identity) == stored["fingerprint"]


def _hand_table(root: Path) -> Path:
    """A table of 3 candidates × 2 replicates × 2 rounds: c0 both replicates, c1 and c2
    replicate 1 only, c2's curve torn after round 1 (a killed writer)."""
    gt = root / "groundtruth"
    gt.mkdir(parents=True)
    config = {"groundtruth": {"rounds": 2, "replicates": 2}, "fedavg": {"rounds": 9}}
    (gt / "plan.json").write_text(json.dumps({"config": config}))
    listed = pd.DataFrame({"index": [0, 1, 2], "candidate_id": ["c0", "c1", "c2"]})
    listed.to_csv(gt / "candidates.csv", index=False)
    units = [("c0", 0, 2), ("c0", 1, 2), ("c1", 1, 2), ("c2", 1, 1)]
    rows = [
        {c: 0 for c in CURVE_COLUMNS}
        | {"candidate_id": cid, "replicate": rep, "round": r, "test_accuracy": 0.1 * r + rep}
        for cid, rep, last in units
        for r in range(1, last + 1)
    ]
    pd.DataFrame(rows, columns=list(CURVE_COLUMNS)).to_csv(gt / "curves.csv", index=False)
    return root


def test_read_table_on_chosen_replicates(tmp_path: Path) -> None:
    root = _hand_table(tmp_path)
    both = read_table(root)
    assert both.candidates["candidate_id"].tolist() == ["c0"]
    assert (both.replicates, both.truth, both.observe) == (2, 0, 1)
    one = read_table(root, replicates=(1,))  # every candidate with replicate 1 whole
    assert one.candidates["candidate_id"].tolist() == ["c0", "c1"]
    assert (one.replicates, one.truth, one.observe) == (1, 1, 1)
    assert set(one.curves["replicate"]) == {1}
    swapped = read_table(root, replicates=(1, 0))
    assert (swapped.truth, swapped.observe) == (1, 0)
    with pytest.raises(ArtifactError, match=r"has replicates 0\.\.1; choose among them"):
        read_table(root, replicates=(2,))
    assert parse_replicates("1, 0") == (1, 0)
    with pytest.raises(ValueError, match=r"is not a list of replicates, e\.g\. 1 or 0,1"):
        parse_replicates("one")
