"""Report tables (pandas) and their Markdown rendering, without extra dependencies."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

TRIALS_COLUMNS = (
    "number",
    "candidate_id",
    "state",
    "value",
    "model",
    "num_parameters",
    "duration_s",
    "bytes_up",
    "bytes_down",
    "reference",
)
RANKING_COLUMNS = (
    "proxy_rank",
    "candidate_id",
    "proxy_score",
    "model",
    "num_parameters",
    "number",
    "reference",
)
VALIDATION_COLUMNS = (
    "candidate_id",
    "selected_as",
    "reference",
    "proxy_rank",
    "proxy_score",
    "fedavg_rank",
    "fedavg_accuracy",
    "model",
    "num_parameters",
    "bytes_up",
    "bytes_down",
    "wall_s",
)


def _pick(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``columns`` that exist, in that order, then every ``params_*`` column."""
    head = [c for c in columns if c in frame.columns]
    params = sorted(c for c in frame.columns if str(c).startswith("params_") and c not in head)
    return frame[[*head, *params]]


def trials_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Every trial in order of its number, with the columns a reader needs."""
    return _pick(trials.sort_values("number", kind="stable"), TRIALS_COLUMNS).reset_index(
        drop=True
    )


def ranking_table(ranking: pd.DataFrame) -> pd.DataFrame:
    """Ranked candidates (best first)."""
    frame = ranking.sort_values("proxy_rank", kind="stable")
    if "proxy_score" not in frame and "value" in frame:
        frame = frame.assign(proxy_score=frame["value"])
    return _pick(frame, RANKING_COLUMNS).reset_index(drop=True)


def validation_table(validation: pd.DataFrame) -> pd.DataFrame:
    """Validated candidates by proxy rank, with their rank by FedAvg accuracy (1 = best)."""
    frame = validation.assign(
        fedavg_rank=validation["fedavg_accuracy"]
        .rank(ascending=False, method="min")
        .astype("int64")
    )
    frame = frame.sort_values("proxy_rank", kind="stable") if "proxy_rank" in frame else frame
    return _pick(frame, VALIDATION_COLUMNS).reset_index(drop=True)


#: Columns shown in percent (accuracies in [0, 1]) and in MB (bytes) in the Markdown report.
PERCENT_COLUMNS = ("proxy_score", "fedavg_accuracy", "value")
MB_COLUMNS = ("bytes_up", "bytes_down")


def for_reading(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with accuracies in % and bytes in MB, the units in the column names, and
    ``params_`` dropped from parameter columns (the CSV files keep raw values)."""
    out = frame.copy()
    renames: dict[str, str] = {}
    for col in out.columns:
        if col in PERCENT_COLUMNS:
            out[col] = 100 * out[col].astype(float)
            renames[col] = f"{col} (%)"
        elif col in MB_COLUMNS:
            out[col] = out[col].astype(float) / 1e6
            renames[col] = f"{col} (MB)"
        elif str(col).startswith("params_"):
            renames[col] = str(col)[len("params_") :]
    return out.rename(columns=renames)


def markdown_table(frame: pd.DataFrame, *, floatfmt: str = ".4f") -> str:
    """A GitHub-flavoured Markdown table of ``frame`` (floats formatted with ``floatfmt``)."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return "" if value != value else format(value, floatfmt)
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = [
        "| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body])


__all__ = ["for_reading", "markdown_table", "ranking_table", "trials_table", "validation_table"]
