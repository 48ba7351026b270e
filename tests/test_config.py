"""Config loading: defaults, overrides as TOML literals, errors with dotted paths, fingerprints."""

from __future__ import annotations

from pathlib import Path

import pytest

from distdd_nas.config import fingerprint, load_config, parse_override
from distdd_nas.errors import ConfigError
from tests.conftest import SMOKE, smoke


def test_study_file_overrides_only_what_differs() -> None:
    config = smoke()
    assert config.study.name == "smoke"  # from the file stem
    assert config.data.name == "digits"
    assert config.partition.num_clients == 4
    assert config.fedavg.momentum == 0.9  # code default, not in the file


@pytest.mark.parametrize(
    ("text", "keys", "value"),
    [
        ("fedavg.rounds=5", ["fedavg", "rounds"], 5),
        ("fedavg.lr=1e-3", ["fedavg", "lr"], 0.001),
        ("data.download=true", ["data", "download"], True),
        ("data.name=mnist", ["data", "name"], "mnist"),
        ('data.root="/tmp/x y"', ["data", "root"], "/tmp/x y"),
        ("a.b.c=[1, 2]", ["a", "b", "c"], [1, 2]),
    ],
)
def test_parse_override_uses_toml_literals(text: str, keys: list[str], value: object) -> None:
    assert parse_override(text) == (keys, value)


def test_overrides_apply_and_change_the_fingerprint() -> None:
    base = smoke()
    changed = smoke("fedavg.rounds=3")
    assert changed.fedavg.rounds == 3
    assert fingerprint(base) != fingerprint(changed)
    assert fingerprint(base, ["data", "partition"]) == fingerprint(changed, ["data", "partition"])


def test_config_is_frozen() -> None:
    config = smoke()
    with pytest.raises(Exception, match=r"frozen"):
        config.fedavg.rounds = 4  # type: ignore[misc]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("partition.alfa=1", r"unknown key 'partition.alfa'"),
        ("fedavg.rounds=zero", r"fedavg.rounds: Input should be a valid integer.*'zero'"),
        ("partition.alpha=-1", r"partition.alpha: Input should be greater than 0"),
        ("data.name=imagenet", r"data.name: Input should be 'digits'"),
        ("bogus.key=1", r"unknown key 'bogus'"),
        (
            "noise.kind=symmetric",
            r"noise.kind is set but noise.rate or noise.client_fraction is 0",
        ),
        ("fedavg.rounds", r"bad override 'fedavg.rounds'; write --set section.key=value"),
    ],
)
def test_bad_values_name_the_dotted_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        smoke(override)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"study file '.*nope.toml' not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\nname=1")
    with pytest.raises(ConfigError, match=r"not valid TOML"):
        load_config(bad)


def test_every_shipped_study_validates() -> None:
    for path in sorted(SMOKE.parent.glob("*.toml")):
        config = load_config(path)
        assert config.study.name == path.stem or config.study.name


def test_extends_merges_key_by_key_and_names_the_study_after_its_file(tmp_path: Path) -> None:
    base = tmp_path / "base.toml"
    base.write_text(
        '[study]\nname = "base"\nseed = 7\n[data]\nname = "digits"\n'
        '[partition]\nmethod = "dirichlet"\nnum_clients = 6\nalpha = 0.5\n'
        "[distill]\nipc = 3\niterations = 4\n"
    )
    child = tmp_path / "child.toml"
    child.write_text('extends = "base.toml"\n[partition]\nalpha = 0.1\n[distill]\nipc = 2\n')
    config = load_config(child, ["distill.iterations=9"])
    assert config.study.name == "child" and config.study.seed == 7
    assert config.partition.method == "dirichlet" and config.partition.num_clients == 6
    assert config.partition.alpha == 0.1
    assert (config.distill.ipc, config.distill.iterations) == (2, 9)
    assert load_config(base).distill.ipc == 3


def test_extends_failures_name_the_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('extends = "b.toml"\n')
    b.write_text('extends = "a.toml"\n')
    with pytest.raises(ConfigError, match=r"studies extend each other in a cycle"):
        load_config(a)
    b.write_text('extends = "missing.toml"\n')
    with pytest.raises(ConfigError, match=r"'.*missing.toml' not found \(named by 'extends' in"):
        load_config(b)
    b.write_text("extends = 3\n")
    with pytest.raises(ConfigError, match=r"extends must be a file name string, got 3"):
        load_config(b)


def test_fidelity_studies_share_the_quickstart_budget() -> None:
    quick = load_config(SMOKE.parent / "quickstart.toml")
    for name in ("fmnist_iid", "fmnist_dirichlet01", "fmnist_mislabeled"):
        other = load_config(SMOKE.parent / f"{name}.toml")
        assert other.distill == quick.distill and other.model == quick.model
        assert other.data == quick.data
        assert (other.partition, other.noise) != (quick.partition, quick.noise)


def test_virtual_steps_default_is_real_and_the_older_setting_keeps_its_identity() -> None:
    """``real`` won on the FL-hyper-parameter ground truth (README, bench/data/fedavg_grid) and
    is the default; ``scaled``, the behaviour before the choice existed, stays out of dumps so
    searches fingerprinted then keep their identity, and the two never share one."""
    assert smoke().search.virtual_steps == "real"
    assert smoke().model_dump(mode="json")["search"]["virtual_steps"] == "real"
    old = smoke('search.virtual_steps="scaled"')
    assert "virtual_steps" not in old.model_dump(mode="json")["search"]
    assert fingerprint(old) != fingerprint(smoke())
