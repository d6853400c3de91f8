"""``plan`` and ``replay``: what would run, decided on the recorded state; nothing runs and
nothing is written, so both work while the daemon runs."""

from __future__ import annotations

import json
from typing import Any

import click

from headwater._cli_common import UserError, common, load
from headwater._cli_print import echo
from headwater._clock import SystemClock
from headwater.eventlog import EventLogReader
from headwater.planning import Evaluator, NodeKey
from headwater.planning._dryrun import changed_node, dry_run
from headwater.planning._status import node_label

__all__ = ["plan"]


@click.command()
@click.option(
    "--changed",
    "-c",
    metavar="SOURCE[:PARTITION]",
    multiple=True,
    help="Plan as if this source (partition) got a new version; repeat for several.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@common
def plan(
    changed: tuple[str, ...], as_json: bool, definitions: str | None, state_dir: str | None
) -> None:
    """Dry run: what would run now (or if SOURCE changed), in order, each with its reason.

    Steps marked "may stop" are reached only through other steps: early cutoff stops them if
    those produce the data they had before. Runs nothing and writes nothing.
    """
    settings, defs = load(definitions, state_dir)
    reader = EventLogReader(settings.state_dir)
    reader.require()
    state = reader.load_state()
    now = SystemClock().now()
    nodes: list[NodeKey] | None = None
    if changed:
        ev = Evaluator(defs, state, now)
        nodes = []
        for spec in changed:
            try:
                node = changed_node(defs, spec)
            except ValueError as exc:
                raise UserError(str(exc)) from None
            ev.check_node(*node)
            nodes.append(node)
    run = dry_run(defs, state, now, changed=nodes)
    if as_json:
        out: dict[str, Any] = {
            "at": now.isoformat(),
            "changed": [{"asset": a, "partition": p} for a, p in nodes or ()],
            "steps": [
                {
                    "asset": s.asset,
                    "partition": s.partition,
                    "reason": s.reason,
                    "may_stop": s.may_stop,
                }
                for s in run.steps
            ],
            "held": [{"asset": a, "partition": p, "reason": r} for (a, p), r in run.held.items()],
            "slas": [
                {
                    "asset": r.asset,
                    "partition": r.partition,
                    "late": r.late,
                    "deadline": None if r.deadline is None else r.deadline.isoformat(),
                    "reason": r.reason,
                }
                for r in run.risks
            ],
        }
        click.echo(json.dumps(out))
        return
    what = "now" if nodes is None else "if " + ", ".join(node_label(*n) for n in nodes) + " changed"
    count = len(run.steps)
    echo(f"plan {what}: {count} step{'' if count == 1 else 's'} (at {now.isoformat()})")
    for n, step in enumerate(run.steps, 1):
        stop = "  [may stop: early cutoff]" if step.may_stop else ""
        echo(f"  {n:>3}. {node_label(step.asset, step.partition)}: {step.reason}{stop}")
    if run.held:
        echo("not run:")
        for node, reason in run.held.items():
            echo(f"       {node_label(*node)}: {reason}")
    if run.risks:
        echo("SLAs at risk:")
        for risk in run.risks:
            state_word = "LATE" if risk.late else "due"
            echo(f"       {node_label(risk.asset, risk.partition)}: {state_word}: {risk.reason}")
