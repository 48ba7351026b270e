"""bench/scale.py's core on the smoke study (digits, offline): 4 and 8 clients, 2 steps each."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tests.conftest import SMOKE
from tests.evidence.test_bench_proxies import _bench


def test_scale_table_on_smoke(tmp_path: Path) -> None:
    """Rows have every column, clients share the training tensor's storage (index views, no
    image copies), all clients take part in a step, and the outputs are written."""
    scale = _bench("scale")
    rows = [scale.measure(str(SMOKE), clients, steps=2) for clients in (4, 8)]
    frame = pd.DataFrame(rows, columns=list(scale.COLUMNS))
    assert list(frame["clients"]) == [4, 8]
    assert list(frame["participating"]) == [4.0, 8.0]
    assert frame["views_share_storage"].all()
    assert (frame["steps"] == 2).all()
    assert (frame["s_per_step"] > 0).all() and (frame["up_mb_per_step"] > 0).all()
    assert (frame["peak_rss_mb"] >= frame["rss_federation_mb"]).all()
    text = scale.write_outputs(tmp_path, frame, "header")
    assert "| " + " | ".join(scale.COLUMNS) + " |" in text
    assert len(pd.read_csv(tmp_path / "scale.csv")) == 2
    assert (tmp_path / "scale.md").read_text(encoding="utf-8") == text
