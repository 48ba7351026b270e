"""The Python API: the README's snippet runs the smoke pipeline, its typed results equal what
the run directory holds and what the CLI writes from it, and overrides mean what ``--set``
means."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import distdd_nas as dd
from distdd_nas.artifacts import dumps_json, load_json
from distdd_nas.cli import main
from distdd_nas.config import load_config
from distdd_nas.errors import ConfigError
from tests.conftest import REPO, SMOKE

pytestmark = pytest.mark.timeout(300)


def readme_snippet() -> str:
    """The first ``python`` block of the README's "Python API" section."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("## Python API", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def same(a: Any, b: Any) -> bool:
    """Equal as the run directory stores them (strict JSON: NaN as null, NumPy as Python)."""
    return dumps_json(a) == dumps_json(b)


@pytest.fixture(scope="module")
def snippet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The README snippet run as written, in a fresh working directory (kept for the module's
    tests: its paths are relative, like the CLI's defaults)."""
    where = tmp_path_factory.mktemp("api")
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    printed = io.StringIO()
    with contextlib.chdir(where), contextlib.redirect_stdout(printed):
        exec(compile(readme_snippet(), "README.md", "exec"), namespace)
        namespace["printed"] = printed.getvalue()
        yield namespace


def test_readme_snippet_returns_typed_results(snippet: dict[str, Any]) -> None:
    result = snippet["result"]
    assert isinstance(result, dd.RunResult)
    assert isinstance(snippet["study"], dd.StudyRun) and snippet["study"].name == "smoke"
    distill, search, validate, report = (
        result.distill,
        result.search,
        result.validate,
        result.report,
    )
    assert isinstance(distill, dd.DistillResult) and 0 < distill.accuracy <= 1
    assert distill.bytes == distill.bytes_up + distill.bytes_down > 0
    assert distill.synthetic().images.shape[0] == 10 * 5  # 10 digits × ipc 5
    assert isinstance(search.trials, pd.DataFrame) and search.n_trials == 6 == len(search.trials)
    assert search.best_value == search.trials["value"].max()
    assert search.best_params and all(k.startswith("arch.") for k in search.best_params)
    assert isinstance(validate.table, pd.DataFrame) and validate.n_validated == len(validate.table)
    assert report.markdown.is_file() and set(report.figures) >= {"proxy_vs_fedavg.png"}
    assert "distilled:" in snippet["printed"] and "Kendall tau" in snippet["printed"]


def test_results_equal_the_run_directory(snippet: dict[str, Any]) -> None:
    result, out = snippet["result"], Path("runs/api-smoke")
    assert result.distill.path == out / "distill"
    for stage in ("distill", "search", "validate", "report"):
        stored = load_json(out / stage / "summary.json")
        assert same(getattr(result, stage).summary, stored), stage
    pd.testing.assert_frame_equal(result.search.trials, pd.read_csv(out / "search/trials.csv"))
    table = pd.read_csv(out / "validate/validation.csv")
    pd.testing.assert_frame_equal(result.validate.table, table)
    stored = load_json(out / "validate/summary.json")
    assert same(
        [result.validate.kendall_tau, result.validate.spearman_rho, result.validate.top1_regret],
        [stored["kendall_tau"], stored["spearman_rho"], stored["top1_regret"]],
    )
    # the proxy's favourite, as the report (written by the same stage the CLI runs) names it
    assert result.search.best_params == load_json(out / "report/summary.json")["proxy_top1_params"]
    assert result.distill.accuracy == load_json(out / "distill/summary.json")["test_accuracy_mean"]


def test_the_cli_reports_the_same_from_the_api_run(
    snippet: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """``distdd-nas report smoke`` with the snippet's overrides, on its run directory and
    cache, rewrites exactly the summary the API returned."""
    sets = [arg for key, value in snippet["fast"].items() for arg in ("--set", f"{key}={value}")]
    code = main(["--threads", "1", "report", "smoke", "--out", "runs/api-smoke", *sets])
    assert code == 0, capsys.readouterr().err
    assert same(
        snippet["result"].report.summary, load_json(Path("runs/api-smoke/report/summary.json"))
    )


def test_stage_methods_one_by_one_reuse_what_is_done(snippet: dict[str, Any]) -> None:
    """Each stage alone, on the snippet's run directory, as ``distdd-nas run`` after ``run``:
    the cached set, the finished search and validation, the same report."""
    study = dd.load_study("studies/smoke.toml", snippet["fast"], out="runs/api-smoke")
    first = snippet["result"]
    distill = study.distill()
    assert distill.cache_hit and distill.artifact == first.distill.artifact
    assert distill.accuracy == first.distill.accuracy  # the evaluation is cached too
    pd.testing.assert_frame_equal(study.search().trials, first.search.trials)
    validate = study.validate()
    assert validate.summary["cache_hit"]
    pd.testing.assert_frame_equal(validate.table, first.validate.table)
    assert same(study.report().summary, first.report.summary)


def test_overrides_mean_what_set_means() -> None:
    aggregator = {"name": "trimmed_mean", "trim": 0.2}
    study = dd.load_study("smoke", {"fedavg.rounds": 3, "distill.aggregator": aggregator})
    expected = load_config(
        SMOKE, ["fedavg.rounds=3", 'distill.aggregator={name="trimmed_mean",trim=0.2}']
    )
    assert study.config == expected
    assert (study.out, study.cache) == (Path("runs/smoke"), Path("artifacts"))  # the CLI's
    for name in ("smoke.toml", "studies/smoke.toml", SMOKE):
        assert dd.load_study(name).config == load_config(SMOKE)
    with pytest.raises(ConfigError, match=r"bad override key 'fedavg\.\.rounds'"):
        dd.load_study("smoke", {"fedavg..rounds": 3})
    with pytest.raises(ConfigError, match=r"unknown key 'fedavg\.round'"):
        dd.load_study("smoke", {"fedavg.round": 3})
    with pytest.raises(ConfigError, match=r"not found.*shipped study: .*quickstart.*smoke"):
        dd.load_study("nope")


def test_import_is_cheap_and_names_resolve_on_use() -> None:
    code = (
        "import sys, distdd_nas as dd\n"
        "assert 'torch' not in sys.modules and 'distdd_nas.api' not in sys.modules\n"
        "assert 'load_study' in dir(dd)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    from distdd_nas import api

    assert dd.load_study is api.load_study and dd.RunResult is api.RunResult
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = dd.nope  # type: ignore[attr-defined]
