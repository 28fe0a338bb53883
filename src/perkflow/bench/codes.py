"""`perkflow bench codes`: generating a campaign of unique codes into a fresh SQLite database.

The codes go through the same path as a large campaign's background generation (CodeConfig's fast
generator, executemany INSERT ... ON CONFLICT DO NOTHING in large transactions, topping up collisions),
and the rate is what actually landed in the table divided by the wall time.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from sqlalchemy import func, select

from perkflow.bootstrap import build_context, upgrade_database
from perkflow.core import transactions
from perkflow.promotions.service import create_campaign, generate_codes
from perkflow.promotions.tables import vouchers


def run_codes_bench(*, count: int, length: int, chunk: int, console: Console) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="perkflow-bench-codes-"))
    url = f"sqlite:///{workdir / 'perkflow.db'}"
    upgrade_database(url)
    ctx = build_context(database_url=url)
    campaign = transactions.run(
        ctx,
        lambda uow: create_campaign(
            uow,
            {
                "name": "Benchmark",
                "type": "STATIC",
                "discount": {"type": "PERCENT", "percent_off": 10},
                "code_config": {"length": length, "charset": "alphanumeric"},
            },
        ),
    )
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("generating codes", total=count)
        generate_codes(ctx, campaign.id, count, chunk=chunk, progress=lambda n: progress.advance(task, n))
    elapsed = time.perf_counter() - started
    with ctx.uow(write=False) as uow:
        stored = uow.conn.execute(
            select(func.count(func.distinct(vouchers.c.code))).where(vouchers.c.campaign_pk == campaign.pk)
        ).scalar_one()
    ctx.close()
    if stored != count:
        raise SystemExit(f"the table holds {stored} codes, {count} were requested")
    result = {"codes": int(stored), "codes_per_s": round(stored / elapsed)}
    console.print(f"database: {workdir}")
    print(json.dumps(result))
    return result
