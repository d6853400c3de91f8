"""``plan`` and ``replay``: what would run, decided on the recorded state; nothing runs and
nothing is written, so both work while the daemon runs."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from headwater._cli_common import UserError, common, load
from headwater._cli_print import echo
from headwater._client import find_daemon
from headwater._clock import SystemClock
from headwater._durations import format_duration
from headwater._logging import configure_logging
from headwater._replay import replay as run_replay
from headwater.definitions import Definitions, dynamic_keys_in
from headwater.eventlog import EventLogReader
from headwater.execution._engine import recent_durations
from headwater.planning import Evaluator, NodeKey, State
from headwater.planning._dryrun import changed_node, dry_run, put_observed
from headwater.planning._status import node_label
from headwater.sensors._scan import unobserved_changes

__all__ = ["plan", "replay"]

_SHOWN = 10
"""Files changed on disk named in the text (all of them in ``--json``)."""


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
    state = reader.load_state(long_lived=True)
    now = SystemClock().now()
    nodes: list[NodeKey] | None = None
    unobserved: list[tuple[NodeKey, str | None]] = []
    unlisted: list[tuple[str, str]] = []
    if not changed and _unwatched(settings.state_dir):
        # No daemon watches the files: what changed since the last one ran is not in the
        # log yet. A daemon starting now would observe it before deciding anything.
        private = (str(settings.state_dir.resolve()),)
        unobserved, unlisted = unobserved_changes(defs, state, now, private)
        _observe(defs, state, now, unobserved)
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
    run = dry_run(defs, state, now, changed=nodes, durations=recent_durations(settings.state_dir))
    if as_json:
        out: dict[str, Any] = {
            "at": now.isoformat(),
            "changed": [{"asset": a, "partition": p} for a, p in nodes or ()],
            "unobserved": [{"asset": a, "partition": p, "version": v} for (a, p), v in unobserved],
            "unlisted": [{"source": k, "folder": f} for k, f in unlisted],
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
    if unobserved:
        seen = [f"{node_label(*n)} {'deleted' if v is None else 'changed'}" for n, v in unobserved]
        more = f", and {len(seen) - _SHOWN} more" if len(seen) > _SHOWN else ""
        echo(
            "  as the files are now (no daemon watches them; one starting now observes this "
            "first): " + ", ".join(seen[:_SHOWN]) + more
        )
    if unlisted:
        echo(
            "  not looked at, a folder of theirs cannot be listed (as the daemon, planned as "
            "last observed): " + ", ".join(f"{k} ({f})" for k, f in unlisted)
        )
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
            state_word = "LATE" if risk.late else "at risk"
            echo(f"       {node_label(risk.asset, risk.partition)}: {state_word}: {risk.reason}")


def _unwatched(state_dir: Path) -> bool:
    """Whether no daemon serves ``state_dir`` with the files observed: none, or one still
    starting (its first look at the files is what this looks at)."""
    client = find_daemon(state_dir)
    if client is None:
        return True
    with client:
        try:
            return bool(client.get("/health").get("state") == "starting")
        except Exception:  # it stopped meanwhile, or does not answer: as if none
            return True


def _observe(
    defs: Definitions, state: State, now: datetime, seen: list[tuple[NodeKey, str | None]]
) -> None:
    """Put ``seen`` into ``state`` as observations at ``now`` would (for the dry run only)."""
    for node, version in seen:
        if node[1] is not None and version is not None:
            for name, key in dynamic_keys_in(defs.nodes[node[0]].partitions, node[1]):
                state.add_dynamic(name, [key], now)
        put_observed(state, node, version, now)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@common
def replay(as_json: bool, definitions: str | None, state_dir: str | None) -> None:
    """Re-decide the recorded history under other definitions (--definitions NEW).

    Sources' recorded changes and explicit requests are fed to the engine on a virtual clock;
    no function runs (each run gives the outcome it had for the same inputs). Per asset: the
    runs and SLA violations that did happen, against those that would have. Writes nothing.
    """
    settings, defs = load(definitions, state_dir)
    reader = EventLogReader(settings.state_dir)
    reader.require()
    recorded = reader.events()
    configure_logging(level=logging.ERROR)  # the replayed engine's warnings are not news
    report = run_replay(recorded, defs)
    rows = list(report.assets.values())
    if as_json:
        out = {
            "start": None if report.start is None else report.start.isoformat(),
            "end": None if report.end is None else report.end.isoformat(),
            "events": report.events,
            "not_replayed": {k: {"count": n, "why": why} for k, (n, why) in report.skipped.items()},
            "dropped": report.dropped,
            "assets": [
                {
                    "asset": r.asset,
                    "runs_did": r.runs_did,
                    "runs_would": r.runs_would,
                    "violations_did": r.violations_did,
                    "violations_would": r.violations_would,
                    "late_did_s": r.late_did.total_seconds(),
                    "late_would_s": r.late_would.total_seconds(),
                }
                for r in rows
            ],
        }
        click.echo(json.dumps(out))
        return
    if report.start is None or report.end is None:
        echo("replay: the event log holds no history yet")
        return
    echo(
        f"replay of {report.events} events from {report.start.isoformat()} to "
        f"{report.end.isoformat()} (the retained history) under {settings.definitions}"
    )
    header = ("asset", "runs did", "would", "SLA violations did", "would", "late for did", "would")
    table = [header] + [
        (
            r.asset,
            str(r.runs_did),
            str(r.runs_would),
            str(r.violations_did),
            str(r.violations_would),
            format_duration(r.late_did) if r.late_did else "-",
            format_duration(r.late_would) if r.late_would else "-",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    for key in report.dropped:
        echo(f"{key}: ran in the history; the new definitions do not hold it")
    for key, (count, why) in report.skipped.items():
        echo(f"not replayed: {count} recorded change(s) or request(s) of {key}: {why}")
