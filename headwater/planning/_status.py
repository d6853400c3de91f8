"""Staleness: missing, stale, failed or fresh, with reasons people can read. Pure.

An :class:`Evaluator` is a view of the definitions and the state at one instant; everything it
computes touches only the asked-about partition and its direct inputs, so the cost of planning
follows the size of the affected subgraph, not of the whole graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from headwater._errors import PartitionKeyError, SelectionError, did_you_mean
from headwater._records import record_class
from headwater.definitions import (
    AssetDef,
    CheckDef,
    Definitions,
    EdgeMapping,
    PartitionContext,
)
from headwater.definitions._bindings import binding_changes
from headwater.planning._facts import EAGER, GUARDED, PLAIN, Facts, facts_of
from headwater.planning._state import (
    CheckRecord,
    Failure,
    InputVersions,
    NodeKey,
    NodeRecord,
    State,
)
from headwater.policies import ClockPolicy, Decision, EagerPolicy, PolicyContext, Pull
from headwater.policies._eager import decide_eagerly

__all__ = [
    "CHANGES_SHOWN",
    "REMOVED",
    "Evaluator",
    "FailedCheck",
    "Status",
    "as_input",
    "failed_blocking",
    "failed_checks",
    "input_changed",
    "node_label",
]

MISSING, STALE, FAILED, FRESH = "missing", "stale", "failed", "fresh"
_CLOCK_WAS_WRONG = timedelta(hours=3)
REMOVED = "removed"
"""A partition the log knows of that the definitions no longer hold (a key taken out of a
static list, a time window before a moved start): shown, explained, never decided."""
_FRESH_EAGER = EagerPolicy().decide(
    PolicyContext(asset="", partition=None, state=FRESH, reasons=(), now=datetime.min)
)


_NONE, _IDENTITY, _ALL, _FAN_OUT, _MAPPED = (
    EdgeMapping.NONE,
    EdgeMapping.IDENTITY,
    EdgeMapping.ALL,
    EdgeMapping.FAN_OUT,
    EdgeMapping.MAPPED,
)  # module constants: planning compares them per edge, hundreds of thousands of times
_BY_PARTITION = (_IDENTITY, _MAPPED)
"""Edges along which a partition reads particular partitions of its input."""


def node_label(asset: str, partition: str | None) -> str:
    return asset if partition is None else f"{asset}[{partition}]"


def _short(version: str | None) -> str:
    return "none" if version is None else version[:12]


@record_class
class Status:
    state: str
    reasons: tuple[str, ...]
    inputs: InputVersions
    """The current versions of every input partition that exists."""
    blockers: tuple[str, ...]
    """Inputs that hold the partition back: missing, failed or blocked by a check."""
    nothing_arrived: bool = False
    """No input has a version yet and nothing failed: idle rather than waiting on something."""


class Evaluator:
    """Status, input and child partitions of asset partitions at ``now``."""

    def __init__(
        self,
        defs: Definitions,
        state: State,
        now: datetime,
        durations: Mapping[str, float] | None = None,
    ) -> None:
        self.defs = defs
        self.durations: Mapping[str, float] = durations or {}
        """Per asset, its usual run duration in seconds (what lazy assets plan ahead by)."""
        self.graph = defs.graph
        self.state = state
        self.now = now
        self.pctx = PartitionContext(now=now, dynamic_keys=state.dynamic_keys)
        self._guarded = defs.guarded
        self._facts_of: Facts | None = None
        """The definitions' facts, once a status needs them (an evaluator made only for its
        partitions, as at the start, does not gather them)."""
        self.stuck_above: dict[NodeKey, NodeKey | None] = {}
        """Memo of :func:`behind_upstream`, for ``stuck_at`` puts of the state."""
        self.stuck_at = state.puts

    def _facts(self) -> Facts:
        self._facts_of = facts = facts_of(self.defs)
        return facts

    def code_version(self, asset: AssetDef) -> str:
        return self.defs.code_version(asset.key)

    def check_node(self, asset: str, partition: str | None, *, or_recorded: bool = False) -> None:
        """Raise an error naming the asset or partition if ``(asset, partition)`` does not exist
        (``or_recorded``: and the log knows nothing of it either)."""
        node = self.defs.nodes.get(asset)
        if node is None:
            raise SelectionError(f"unknown asset {asset!r}{did_you_mean(asset, self.defs.nodes)}")
        parts = node.partitions
        if parts is None:
            if partition is not None:
                raise PartitionKeyError(
                    f"asset {asset!r} is not partitioned; got partition {partition!r}"
                )
        elif partition is None:
            raise PartitionKeyError(
                f"asset {asset!r} is partitioned ({parts.describe()}); name a partition"
            )
        elif not (or_recorded and self.state.record((asset, partition)) is not None):
            parts.require_key(partition, self.pctx, asset=asset)

    def removed_reason(self, asset: str) -> str:
        """Why a partition the log knows of is shown with nothing decided for it."""
        parts = self.defs.nodes[asset].partitions
        held = f" ({parts.describe()})" if parts is not None else ""
        return (
            f"no longer a partition of {asset}{held}: nothing is decided for it; "
            "its history is kept"
        )

    def exists(self, asset: str, partition: str | None) -> bool:
        parts = self.defs.nodes[asset].partitions
        if parts is None:
            return partition is None
        return partition is not None and parts.has_key(partition, self.pctx)

    def partitions(self, asset: str) -> list[str | None]:
        parts = self.defs.nodes[asset].partitions
        return [None] if parts is None else list(parts.keys(self.pctx))

    def input_nodes(self, asset: str, partition: str | None) -> list[tuple[str, list[NodeKey]]]:
        """Per upstream key, the upstream partitions this partition reads (present ones for ALL)."""
        return [(parent, nodes) for parent, nodes, _ in self.input_reads(asset, partition)]

    def input_reads(
        self, asset: str, partition: str | None
    ) -> list[tuple[str, list[NodeKey], str | None]]:
        """:meth:`input_nodes`, each with why a window it must read lies outside the upstream's
        partitions (a partition that waits for ever unless the input is optional)."""
        return [
            read
            for parent, mapping in self.graph.in_edges[asset]
            if (read := self._read(parent, mapping, asset, partition)) is not None
        ]

    def _read(
        self, parent: str, mapping: EdgeMapping, asset: str, partition: str | None
    ) -> tuple[str, list[NodeKey], str | None] | None:
        """What ``(asset, partition)`` reads of ``parent`` (None: nothing, optionally)."""
        if mapping is _NONE or mapping is _FAN_OUT:
            return parent, [(parent, None)], None
        if mapping is _IDENTITY:
            return parent, [(parent, partition)], None
        if mapping is _ALL:
            return parent, self._present(parent), None
        if partition is None:
            return parent, [(parent, None)], None
        keys, problem, waived = self.graph.edge_map(parent, asset).upstream(partition, self.pctx)
        if keys or problem is not None or not waived:
            return parent, [(parent, k) for k in keys], problem
        return None  # the window lies outside the upstream's partitions: read as None

    def _present(self, asset: str) -> list[NodeKey]:
        """The partitions of ``asset`` that have a version and that its definition still has:
        one dropped from it (a static key removed, a time range that starts later now) is no
        longer read, as a deleted one is not. A source's window still open counts: it has its
        data now (whether it exists *now* is :meth:`exists`, not the question here)."""
        parts = self.defs.nodes[asset].partitions
        present = self.state.present_partitions(asset)
        if parts is None:
            return [(asset, p) for p in present]
        return [(asset, p) for p in present if parts.defines(p, self.pctx)]

    def children(self, node: NodeKey) -> list[NodeKey]:
        asset, partition = node
        out: list[NodeKey] = []
        mappings = self.graph.mappings
        for child in self.graph.children[asset]:
            mapping = mappings[(asset, child)]
            if mapping is _NONE:
                out.append((child, None))
            elif mapping is _IDENTITY:
                if self.exists(child, partition):
                    out.append((child, partition))
            elif mapping is _MAPPED and partition is not None:
                keys = self.graph.edge_map(asset, child).downstream(partition, self.pctx)
                out.extend((child, p) for p in keys if self.exists(child, p))
            elif mapping is _FAN_OUT or self.defs.nodes[child].partitions is not None:
                out.extend((child, p) for p in self.partitions(child))
            else:
                out.append((child, None))
        return out

    def backfill_only(self, asset: AssetDef, partition: str | None) -> bool:
        """Time partitions with no partitioned input fill only the newest window by themselves."""
        if asset.partitions is None or partition is None:
            return False
        newest = asset.partitions.newest_keys(self.pctx)
        if newest is None or partition in newest:
            return False
        return not any(
            self.graph.mapping(p, asset.key) in _BY_PARTITION for p in self.graph.parents[asset.key]
        )

    def status(self, asset_key: str, partition: str | None) -> Status:
        facts = self._facts_of or self._facts()
        place = facts.made(asset_key)
        records = self.state.records
        if place < 0:
            node = self.defs.nodes[asset_key]
            if not isinstance(node, AssetDef):
                record = records.get((asset_key, partition))
                if record is None or record.version is None:
                    return Status(MISSING, (_unobserved(record),), (), ())
                return Status(FRESH, (f"observed version {_short(record.version)}",), (), ())
            # No facts gathered here: a first full evaluation would gather them for every
            # asset and read each once (0.25 s at 100k, to save 0.1). A dry run gathers them
            # for its steps.
        elif partition is None and facts.flags[place] & PLAIN:
            # Most steps: every input one node, present and not failed; then nothing holds
            # the partition back, and its inputs come out sorted without a sort.
            found: list[tuple[str, str | None, str]] = []
            at = facts.inputs_at[place]
            keys = facts.keys
            for parent_place in facts.inputs[at : at + facts.inputs_n[place]]:
                parent = keys[parent_place]
                up_record = records.get((parent, None))
                if up_record is None or (version := up_record.version) is None:
                    break
                if up_record.failure is not None:
                    break
                found.append((parent, None, version))
            else:
                record = records.get((asset_key, None))
                return self._judged(asset_key, place, record, tuple(found), (), False)
        record = records.get((asset_key, partition))
        present: list[tuple[str, str | None, str]] = []
        blockers: list[str] = []
        only_missing = True
        for parent, mapping in self.graph.in_edges[asset_key]:
            if mapping is _NONE or mapping is _FAN_OUT or mapping is _IDENTITY:
                up = (parent, partition if mapping is _IDENTITY else None)
                up_record = records.get(up)
                if (
                    up_record is not None
                    and up_record.version is not None
                    and up_record.failure is None
                    and parent not in self._guarded  # no blocking check: no verdict to wait for
                ):  # most inputs of a full evaluation: present, and nothing to say about it
                    present.append((parent, up[1], up_record.version))
                    continue
                nodes: list[NodeKey] = [up]
                problem: str | None = None
            elif (read := self._read(parent, mapping, asset_key, partition)) is not None:
                _, nodes, problem = read
            else:
                continue
            if problem is not None:
                blockers.append(
                    f"input {parent}: {problem} (an input declared optional=True reads None there)"
                )
            elif not nodes:
                blockers.append(f"input {parent} has no partitions yet")
            absent: list[str] = []
            for up in nodes:
                up_record = records.get(up)
                if up_record is None or up_record.version is None:
                    moot = (
                        up_record is not None
                        and up_record.failure is not None
                        and not (self._holds(up[0], up_record.failure))
                    )  # its code edited since: it runs again, it is missing meanwhile
                    why = _absence(up_record, moot, up[0] in self.defs.sources)
                    absent.append(f"input {node_label(*up)} {why}")
                    only_missing = only_missing and up_record is None  # never arrived
                    continue
                present.append((up[0], up[1], up_record.version))
                if up_record.failure is not None and self._holds(up[0], up_record.failure):
                    blockers.append(f"input {node_label(*up)} failed: {up_record.failure.error}")
                if up[0] in self._guarded and (hold := _check_hold(self.defs, up[0], up_record)):
                    blockers.append(f"input {node_label(*up)} {hold}")
            if absent and len(nodes) > 1:
                blockers.append(self._waiting_for(parent, nodes))
            else:
                blockers.extend(absent)
        inputs = tuple(sorted(present))
        nothing_arrived = bool(blockers) and not present and only_missing
        return self._judged(asset_key, place, record, inputs, tuple(blockers), nothing_arrived)

    def _judged(
        self,
        asset_key: str,
        place: int,
        record: NodeRecord | None,
        inputs: InputVersions,
        blockers: tuple[str, ...],
        nothing_arrived: bool,
    ) -> Status:
        """The status of an asset partition whose inputs are read: failed, missing, stale
        (with every reason) or fresh."""
        failure = record.failure if record is not None else None
        if (
            failure is not None
            and failure.inputs == inputs
            and self._holds(asset_key, failure)
            and not self._changed_since(failure)
        ):
            return Status(
                FAILED,
                (f"run {failure.run_id} failed at {failure.at.isoformat()}: {failure.error}",),
                inputs,
                blockers,
                nothing_arrived,
            )
        if record is None or record.materialized_at is None:
            reason = (
                "never materialized"
                if record is None or record.lost_at is None
                else f"its stored value was found gone at {record.lost_at.isoformat()}"
            )
            return Status(MISSING, (reason,), inputs, blockers, nothing_arrived)
        reasons = self.stale_reasons(asset_key, place, record, inputs)
        state = STALE if reasons else FRESH
        return Status(state, tuple(reasons), inputs, blockers, nothing_arrived)

    def stale_reasons(
        self, asset_key: str, place: int, record: NodeRecord, inputs: InputVersions
    ) -> list[str]:
        """Why a partition that has materialized and whose last run did not fail (or failed
        on other inputs) is stale, reading ``inputs`` now: none when fresh. ``place``: the
        asset's, if its facts are gathered, else -1 (the definitions tell the same, a call
        each)."""
        defs = self.defs
        facts = (self._facts_of or self._facts()) if place >= 0 else None
        reasons: list[str] = []
        code = facts.code[place] if facts is not None else defs.code_version(asset_key)
        if record.code_version != code:
            reasons.append(
                f"code version changed ({_short(record.code_version)} -> {_short(code)})"
            )
        # A record of the state directory's ("") is stale only if the asset now stores
        # elsewhere: comparing with its store name now tells exactly that.
        if (stored := record.store) is not None and stored != (
            store := facts.store[place] if facts is not None else defs.store_name(asset_key)
        ):
            reasons.append(f"its value store changed ({_place(stored)} -> {_place(store)})")
        if record.inputs != inputs:  # the common case, equal, costs one comparison
            reasons.extend(_at_most(_input_changes(record.inputs, inputs)))
        if (recorded := record.binding) is not None:  # most multi-input assets: one compare
            now = facts.binding[place] if facts is not None else defs.binding(asset_key)
            if now is not recorded and now is not None:  # None now: the inputs above tell
                reasons.extend(binding_changes(recorded, now, self.defs.plain_reads(asset_key)))
        if facts.flags[place] & GUARDED if facts is not None else asset_key in self._guarded:
            reasons.extend(self._unjudged(asset_key, record))
        return reasons

    @staticmethod
    def judged_by_inputs(facts: Facts, place: int, record: NodeRecord) -> bool:
        """Whether :meth:`stale_reasons` of ``record`` (its asset's facts gathered at
        ``place``) can name nothing but its inputs: its code, store and binding are as now
        and no blocking check guards it. False may still mean no other reason (the full
        look tells); a dry run's plain steps judge their inputs alone when True."""
        return (
            record.code_version == facts.code[place]
            and ((stored := record.store) is None or stored == facts.store[place])
            and ((bound := record.binding) is None or bound == facts.binding[place])
            and not facts.flags[place] & GUARDED
        )

    def _unjudged(self, key: str, record: NodeRecord) -> list[str]:
        """The blocking checks that have not judged the current data: declared since it was
        materialized, or edited since they judged it. The asset must run again for them to
        judge: what holds its readers back must be the verdict of the check declared now."""
        return [
            f"blocking check {check.name!r} {_VERDICTS[verdict]}"
            for check, verdict, _ in _verdicts(self.defs, key, record)
            if verdict in ("unjudged", "changed")
        ]

    def _holds(self, key: str, failure: Failure) -> bool:
        """Whether a failure still stands, for its asset's status and its readers alike (with
        the same inputs): the code, the binding and the blocking checks it failed with are the
        definitions' now (one edited since, or edited back, makes it moot)."""
        defs = self.defs
        return (
            failure.code_version == defs.code_version(key)
            and not self._rebound(key, failure.binding)
            and (
                failure.checks is None
                or failure.checks == (defs.blocking_checks_version(key) or "")
            )
        )

    def _changed_since(self, failure: Failure) -> bool:
        """Whether an input changed after the run failed, even back to the version it
        failed on (2 -> 1 -> 2): the failure is moot, and its partition runs again (it stood
        for good, so a transient failure was never tried again on that input)."""
        records = self.state.records
        return any(
            (record := records.get((a, p))) is not None
            and record.changed_at is not None
            and record.changed_at > failure.at
            for a, p, _ in failure.inputs
        )

    def _rebound(self, key: str, recorded: str | None) -> bool:
        """Whether a run recorded with the binding ``recorded`` would get other values now."""
        if recorded is None:  # recorded before bindings were, or nothing to swap then
            return False
        now = self.defs.binding(key)
        if now is None or now is recorded:
            return False
        return bool(binding_changes(recorded, now, self.defs.plain_reads(key)))

    def _waiting_for(self, parent: str, nodes: list[NodeKey]) -> str:
        """One line for many absent partitions of one input (the hours of a day)."""
        missing = [
            p for a, p in nodes if (r := self.state.record((a, p))) is None or r.version is None
        ]
        parts = self.defs.nodes[parent].partitions
        unit = getattr(parts, "unit", "partition")
        shown = ", ".join(str(p) for p in missing[:6]) + (", …" if len(missing) > 6 else "")
        return f"input {parent}: waiting for {len(missing)} of {len(nodes)} {unit}s: {shown}"

    def due_tick(self, asset: AssetDef) -> datetime | None:
        """For a clock-driven policy: the latest tick not yet handled, if it has passed."""
        handled = self.handled_through(asset.key)
        if asset.key not in self.defs.clock_driven or handled is None:
            return None  # ticks count from the asset's first evaluation
        tick = cast(ClockPolicy, asset.policy).last_tick(self.now)
        return tick if tick is not None and tick > handled else None

    def handled_through(self, key: str) -> datetime | None:
        """The last cron tick of ``key`` handled, as it counts now. After the wall clock
        stepped back, ticks it already handled are not repeated, as Debian's cron does not
        repeat jobs after a step back of less than 3 hours; past that, the clock was wrong
        before, and ticks count from now (or a cron asset would stay silent that long)."""
        schedule = self.state.schedules.get(key)
        if schedule is None:
            return None
        handled = schedule.handled_through
        return self.now if handled > self.now + _CLOCK_WAS_WRONG else handled

    def next_cron_tick(self, key: str, policy: ClockPolicy) -> datetime:
        """When the next tick not yet handled comes."""
        handled = self.handled_through(key)
        return policy.next_tick(self.now if handled is None else max(self.now, handled))

    def retry(
        self, asset: AssetDef, partition: str | None, status: Status
    ) -> tuple[int, datetime] | None:
        """``(attempt, not before)`` when a failed partition has retries left."""
        record = self.state.record((asset.key, partition))
        if status.state != FAILED or asset.retries is None or record is None:
            return None
        failure = record.failure
        if failure is None or failure.final or failure.attempts >= asset.retries.max_attempts:
            return None
        attempt = failure.attempts + 1
        return attempt, failure.at + asset.retries.delay_before(attempt)

    def decide(self, asset_key: str, partition: str | None, status: Status) -> Decision:
        if (
            partition is None
            and status.state != FAILED
            and (facts := self._facts_of or self._facts()).flags[facts.order[asset_key]] & EAGER
        ):  # Most steps of a dry run: no backfill rule (no partition), no retry (not
            # failed), and what EagerPolicy.decide says without a context to build.
            return decide_eagerly(
                status.state, status.reasons, status.blockers, status.nothing_arrived
            )
        asset = self.defs.nodes[asset_key]
        assert isinstance(asset, AssetDef)
        if status.state == FRESH and type(asset.policy) is EagerPolicy:
            return _FRESH_EAGER  # most of a full evaluation: what EagerPolicy.decide says
        if (
            partition is not None
            and status.state in (MISSING, STALE)
            and self.backfill_only(asset, partition)
        ):
            return Decision.idle(
                f"{status.state}; history is a backfill: only the newest window fills itself",
                notable=False,
            )
        if status.state == FAILED and (retry := self.retry(asset, partition, status)) is not None:
            attempt, at = retry
            of = f"retry {attempt} of {asset.retries.max_attempts if asset.retries else attempt}"
            if status.blockers:
                return Decision.wait(f"{of}, but waiting: " + "; ".join(status.blockers))
            if self.now >= at:
                return Decision.run(f"{of} after: {status.reasons[0]}")
            return Decision.wait(f"{of} at {at.isoformat()}", wake_at=at)
        if type(asset.policy) is EagerPolicy:  # it reads nothing else: no context to build
            return decide_eagerly(
                status.state, status.reasons, status.blockers, status.nothing_arrived
            )
        ctx = PolicyContext(
            asset=asset_key,
            partition=partition,
            state=status.state,
            reasons=status.reasons,
            now=self.now,
            blockers=status.blockers,
            nothing_arrived=status.nothing_arrived,
            has_inputs=bool(self.graph.parents[asset_key]),
            due_tick=self.due_tick(asset),
            pull=self._pull(asset, partition, status),
        )
        return asset.policy.decide(ctx)

    def _pull(self, asset: AssetDef, partition: str | None, status: Status) -> Pull | None:
        if status.state not in (MISSING, STALE) or not getattr(
            asset.policy, "pulled_by_slas", False
        ):
            return None
        from headwater.planning._lazy import pull  # it builds on freshness, which builds on this

        return pull(self, (asset.key, partition), status)


def as_input(
    record: NodeRecord | None, defs: Definitions, key: str
) -> tuple[str | None, bool, str | None] | None:
    """What a reader's :meth:`Evaluator.status` sees of a partition as an input: its version,
    whether it is failed, and what of its checks holds it back. When this changes its
    readers must be decided again (a recovery with the same version included)."""
    if record is None:
        return None
    return record.version, record.failure is not None, _check_hold(defs, key, record)


_VERDICTS = {
    "unjudged": "has not judged its current data",
    "changed": "changed since it judged its data",
}


def _verdicts(
    defs: Definitions, key: str, record: NodeRecord, *, every: bool = False
) -> Iterator[tuple[CheckDef, str, CheckRecord | None]]:
    """Each blocking check declared now on ``key`` (``every``: each check), with where it
    stands on the partition's current data: "passed", "failed", "unjudged" (declared since it
    was materialized, or renamed) or "changed" (edited since it judged), and its verdict. A
    verdict recorded before checks' fingerprints were is taken as it is."""
    blocking = defs.blocking_checks(key)
    for check in defs.checks.get(key, ()):
        if not every and check.name not in blocking:
            continue
        verdict = next(
            (c for c in record.checks if c.name == check.name and c.data_version == record.version),
            None,
        )
        if verdict is None:
            yield check, "unjudged", None
        elif verdict.code_version not in (None, defs.check_version(check)):
            yield check, "changed", verdict
        else:
            yield check, "passed" if verdict.passed else "failed", verdict


@dataclass(frozen=True, slots=True)
class FailedCheck:
    """A check declared now that failed on a partition's current data."""

    name: str
    blocking: bool
    """Declared blocking now: the partition's readers wait until it passes."""
    error: str | None
    """What it raised, if it raised (a check that returned False has none)."""

    def describe(self) -> str:
        said = f": {self.error}" if self.error else ""
        held = "; its readers wait until it passes" if self.blocking else ""
        return f"{'blocking ' if self.blocking else ''}check {self.name!r} failed{said}{held}"


def failed_blocking(defs: Definitions, key: str, record: NodeRecord | None) -> bool:
    """Whether a blocking check failed on the partition's current data (its readers wait):
    what ``/metrics`` and the web page count."""
    return any(c.blocking for c in failed_checks(defs, key, record))


def failed_checks(defs: Definitions, key: str, record: NodeRecord | None) -> list[FailedCheck]:
    """The checks declared now that failed on the partition's current data (with the code they
    have now): what ``status`` shows of a partition whose value is there, whatever its state."""
    if record is None or record.version is None or key not in defs.checks:
        return []
    blocking = defs.blocking_checks(key)
    return [
        FailedCheck(check.name, check.name in blocking, verdict.error if verdict else None)
        for check, judged, verdict in _verdicts(defs, key, record, every=True)
        if judged == "failed"
    ]


def _check_hold(defs: Definitions, key: str, record: NodeRecord) -> str | None:
    """Why the readers of a partition must wait for its checks, or None: a blocking check
    declared now failed on its current data, or has not judged it yet (the partition runs
    again for it to: readers wait for its verdict, not read what no check has passed)."""
    for check, verdict, _ in _verdicts(defs, key, record):
        if verdict == "failed":
            return f"is blocked by failed check {check.name!r}"
        if verdict != "passed":
            return f"waits for blocking check {check.name!r} to judge its current data"
    return None


def _absence(record: NodeRecord | None, moot: bool = False, source: bool = False) -> str:
    """Why an input partition has no version: never there, failed (unless the failure no
    longer stands: ``moot``), deleted, or lost (a ``source``'s value comes back when it is
    observed again, an asset's when it runs: its policy says when)."""
    if record is None:
        return "is missing"
    if record.failure is not None:
        return "is missing (its last run failed; it runs again)" if moot else "failed"
    if record.lost_at is not None:
        if source:
            return "is missing (its stored value was lost; until it is observed again)"
        return "is missing (its stored value was lost; until it is materialized again)"
    if record.changed_at is not None:
        return f"was deleted at {record.changed_at.isoformat()}"
    return "is missing"


def _unobserved(record: NodeRecord | None) -> str:
    """Why a source partition has no version: never observed, deleted, or its value lost."""
    if record is None:
        return "never observed"
    if record.lost_at is not None:
        return f"its stored value was found gone at {record.lost_at.isoformat()}"
    if record.changed_at is not None:
        return f"deleted at {record.changed_at.isoformat()}"
    return "never observed"


def _place(store: str) -> str:
    return store or "the state directory"


def _input_changes(recorded: InputVersions, current: InputVersions) -> Iterable[str]:
    if len(recorded) == len(current):  # most often the same inputs: only versions changed
        out: list[str] = []
        # No strict=: the lengths are equal, and any keyword argument takes zip off its
        # fast path (a third of this call, once per planned step).
        for (a, p, v), (a_now, p_now, v_now) in zip(recorded, current):  # noqa: B905
            if a != a_now or p != p_now:
                break
            if v != v_now:
                out.append(input_changed(a if p is None else f"{a}[{p}]", v, v_now))
        else:
            return out
    return _reshaped_inputs(recorded, current)


def input_changed(label: str, before: str, now: str) -> str:
    return f"input {label} changed ({before[:12]} -> {now[:12]})"


CHANGES_SHOWN = 10
"""Input changes a reason names one by one; more are counted."""


def _at_most(changes: Iterable[str]) -> list[str]:
    """The first input changes and how many more: a reader of 500 partitions otherwise
    carried a reason of 28,000 characters into every event, `plan`, `why` and `status`."""
    shown = list(changes)
    if len(shown) > CHANGES_SHOWN + 1:
        more = len(shown) - CHANGES_SHOWN
        shown[CHANGES_SHOWN:] = [f"and {more} more inputs changed"]
    return shown


def _reshaped_inputs(recorded: InputVersions, current: InputVersions) -> Iterable[str]:
    before = {(a, p): v for a, p, v in recorded}
    after = {(a, p): v for a, p, v in current}
    for key in sorted(after.keys() | before.keys(), key=lambda k: (k[0], k[1] or "")):
        label = node_label(*key)
        if key not in before:
            yield f"input {label} appeared (version {_short(after[key])})"
        elif key not in after:
            yield f"input {label} disappeared"
        elif before[key] != after[key]:
            yield f"input {label} changed ({_short(before[key])} -> {_short(after[key])})"
