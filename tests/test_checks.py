"""Checks before the first stage (distdd_nas.checks) and the CLI's one-line errors.

Every bad input goes through ``distdd_nas.cli.main``: exit code 2, one stderr line naming the
key (or option) and the fix, no traceback, and a run directory written earlier is byte-identical
afterwards (nothing distilled, ``config.json`` not rewritten). All cases fail before any data is
loaded, so the whole table takes seconds.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from distdd_nas import cli
from distdd_nas.checks import MAX_PARAMETERS, check_directory, check_model, check_storage
from distdd_nas.config import load_config
from distdd_nas.data.datasets import DATASETS, IMAGE_SHAPES, load_dataset
from distdd_nas.errors import ConfigError, MissingDependencyError
from distdd_nas.study import Study
from tests.conftest import SMOKE


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory as an earlier run left it: config.json and a complete distill stage,
    plus a plain file (for options that must not name one)."""
    out = tmp_path / "run"
    (out / "distill").mkdir(parents=True)
    (out / "config.json").write_text('{"fingerprint": "earlier"}\n')
    (out / "distill" / "summary.json").write_text('{"test_accuracy_mean": 0.5}\n')
    (out / "distill" / "manifest.json").write_text('{"fingerprint": "earlier"}\n')
    (tmp_path / "a_file").write_text("not a directory\n")
    return out


#: (command and arguments, ``{file}`` standing for a plain file), words the line must hold.
BAD = [
    (["run", "--set", "search.space=nope"], ["search.space", "'nope' not found"]),
    (["groundtruth", "--set", "search.space=nope"], ["search.space", "not found"]),
    (["search", "--set", "search.sampler=evolution"], ["search.sampler", "'optuna'", "tpe"]),
    (
        ["search", "--set", "search.backend=nni", "--set", "search.sampler=cmaes"],
        ["search.sampler", "'nni'", "evolution"],
    ),
    (
        ["run", "--set", "search.backend=nni", "--set", "search.pruner=hyperband"],
        ["search.pruner", "'nni'", "median"],
    ),
    (
        ["search", "--set", "search.objective=fedavg", "--set", "search.backend=nni"],
        ["search.objective", 'search.backend = "optuna"'],
    ),
    (
        ["search", "--set", "search.sampler=grid", "--set", "search.space=train_hparams"],
        ["search.sampler", "grid", "continuous"],
    ),
    (["run", "--set", "search.storage=foo://bar"], ["search.storage", "not a storage URL"]),
    (["search", "--set", 'search.storage="journal://"'], ["search.storage", "names no file"]),
    (
        ["search", "--set", "search.storage=sqlite:////proc/distdd-check/optuna.db"],
        ["search.storage", "/proc", "writable"],
    ),
    (
        ["search", "--set", "search.storage=journal://{file}/optuna.log"],
        ["search.storage", "is a file", "writable"],
    ),
    (["distill", "--cache", "{file}"], ["--cache", "is a file", "writable directory"]),
    (["run", "--cache", "{file}/sub"], ["--cache", "a file", "writable directory"]),
    (["distill", "--out", "{file}"], ["--out", "is a file", "writable directory"]),
    (["fedavg", "--out", "/proc/distdd-check"], ["--out", "/proc", "writable directory"]),
    (["fedavg", "--set", "fedavg.lr=inf"], ["fedavg.lr", "finite"]),
    (["distill", "--set", "distill.lr_img=inf"], ["distill.lr_img", "finite"]),
    (["distill", "--set", "distill.eval.lr=nan"], ["distill.eval.lr", "finite"]),
    (["fedavg", "--set", "fedavg.weight_decay=1e308"], ["fedavg.weight_decay", "less than"]),
    (["fedavg", "--set", "fedavg.prox_mu=1e300"], ["fedavg.prox_mu", "less than"]),
    (
        ["distill", "--set", 'distill.aggregator={name="trimmed_mean", trim=nan}'],
        ["distill.aggregator.trim", "finite"],
    ),
    (["fedavg", "--set", "model.width=1000000"], ["parameters", "model.width"]),
    (["distill", "--set", "model.depth=5"], ["model:", "depth"]),
    (["partition", "--set", 'study.name="../../escaped"'], ["study.name", "path component"]),
    (["partition", "--set", 'study.name=""'], ["study.name", "path component"]),
    (["partition", "--set", 'study.name=".."'], ["study.name", "path component"]),
    (["partition", "--set", f'study.name="{"n" * 300}"'], ["study.name", "1-100"]),
    (
        ["fedavg", "--set", "federation.byzantine_fraction=0.6"],
        ["federation.byzantine_fraction", "less than 0.5"],
    ),
    (["distill", "--set", "federation.byzantine_kind=flip"], ["federation.byzantine_kind"]),
    (["fedavg", "--set", "federation.min_replies=0"], ["federation.min_replies"]),
    (
        ["run", "--set", "search.space=train_hparams"],
        ["train_hparams", "only train.*", "'distdd-nas search' alone"],
    ),
    (["validate", "--set", "search.space=train_hparams"], ["only train.*", "fedavg.*"]),
    (["fedavg", "--set", "federation.round_retries=-1"], ["federation.round_retries"]),
    (
        ["fedavg", "--set", 'fedavg.aggregator={name="centered_clip", radius=-1}'],
        ["radius=-1", "out of range"],
    ),
    (
        ["distill", "--set", 'distill.aggregator={name="mean", max_deviation_ratio=0.5}'],
        ["max_deviation_ratio=0.5", "0 (off) or >= 1"],
    ),
]


@pytest.mark.parametrize(("argv", "words"), BAD, ids=[" ".join(a)[:70] for a, _ in BAD])
def test_bad_input_fails_first_in_one_line_and_changes_nothing(
    argv: list[str],
    words: list[str],
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [a.replace("{file}", str(tmp_path / "a_file")) for a in argv]
    if "--out" not in args:
        args += ["--out", str(run_dir)]
    if "--cache" not in args and args[0] in ("distill", "search", "run", "report"):
        args += ["--cache", str(tmp_path / "cache")]
    before = snapshot(tmp_path)
    code = cli.main([args[0], str(SMOKE), *args[1:]])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("distdd-nas: error: ") and "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "cache").exists()  # nothing distilled


def test_bad_search_space_fails_before_distilling(
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The issue's case: ``run --set search.space=nope`` used to distil and rewrite config.json
    first. (No timing assertion: the check is that no expensive stage starts at all.)"""
    import distdd_nas.stages.distill as distill_stage

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("a stage ran before the inputs were checked")

    monkeypatch.setattr(distill_stage, "on_configured_engine", must_not_run)
    config = (run_dir / "config.json").read_bytes()
    code = cli.main(
        [
            *("run", str(SMOKE), "--set", "search.space=nope"),
            *("--out", str(run_dir), "--cache", str(tmp_path / "cache")),
        ]
    )
    assert code == 2 and "search.space" in capsys.readouterr().err
    assert (run_dir / "config.json").read_bytes() == config
    assert not (tmp_path / "cache").exists()


def test_good_paths_pass_and_leave_nothing_behind(tmp_path: Path) -> None:
    check_directory(tmp_path, "--out")  # exists
    check_directory(tmp_path / "new" / "deeper", "--out")  # creatable
    assert list(tmp_path.iterdir()) == []  # the probe is removed, nothing is created
    check_storage(None)
    check_storage(f"sqlite:///{tmp_path / 'db' / 'optuna.db'}")
    check_storage(f"journal://{tmp_path / 'optuna.log'}")
    check_storage("postgresql+psycopg2://user@db.invalid:5432/optuna")  # parsed, not connected
    assert list(tmp_path.iterdir()) == []


def test_storage_that_names_a_directory_or_a_missing_driver(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="names a directory"):
        check_storage(f"sqlite:///{tmp_path}")
    if importlib.util.find_spec("pg8000") is None:
        with pytest.raises(MissingDependencyError, match="needs a database driver"):
            check_storage("postgresql+pg8000://user@db.invalid/optuna")


def test_model_check_builds_on_meta_with_the_real_count() -> None:
    """The meta-device build over IMAGE_SHAPES gives the count of the model built on data."""
    study = Study(load_config(SMOKE))
    assert check_model(study.config) == study.num_parameters(study.reference) < MAX_PARAMETERS


def test_image_shapes_cover_every_dataset_and_match_digits() -> None:
    assert set(IMAGE_SHAPES) == set(DATASETS)
    digits = load_dataset("digits", root=None, download=False, seed=0, test_fraction=0.25)
    assert IMAGE_SHAPES["digits"] == (digits.train.input_shape, digits.train.num_classes)


def test_unreadable_study_file_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = tmp_path / "locked.toml"
    study.write_text("[study]\n")

    def refuse(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(ConfigError, match=r"cannot read study file .*Permission denied"):
        load_config(study)


UNEXPECTED = [
    (
        PermissionError(13, "Permission denied", "/data/x"),
        "unexpected PermissionError: [Errno 13]",
    ),
    (MemoryError(), "unexpected MemoryError: (no message)"),
    (RuntimeError("first line\n  second line"), "unexpected RuntimeError: first line second"),
]


@pytest.mark.parametrize(("error", "text"), UNEXPECTED, ids=lambda v: type(v).__name__)
def test_unexpected_errors_are_one_line_with_traceback_only_under_v(
    error: BaseException,
    text: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def boom(*_: object, **__: object) -> None:
        raise error

    monkeypatch.setattr(cli, "load_config", boom)
    argv = ["partition", str(SMOKE), "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"distdd-nas: error: {text}")
    assert "re-run with -v for the traceback and report it at " in err
    assert cli.main(["-v", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("distdd-nas: error:")


def test_keyboard_interrupt_still_exits_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupt(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "load_config", interrupt)
    assert cli.main(["partition", str(SMOKE), "--out", str(tmp_path)]) == 130
    assert "interrupted" in capsys.readouterr().err
