"""``@asset``: a Python function that produces data, with its inputs, policy and SLA."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, overload

from headwater._durations import Duration, parse_duration
from headwater._errors import DefinitionError
from headwater.definitions._bindings import binding_of, no_loaders
from headwater.definitions._keys import check_key
from headwater.definitions._mappings import Input, MappingSpec, PartitionMapping
from headwater.definitions._partitions import PartitionsDefinition
from headwater.policies import Freshness, Policy, Retry, eager

if TYPE_CHECKING:
    from headwater.definitions._sources import SourceDef
    from headwater.execution._store import IOManager

__all__ = ["CONTEXT_PARAMETER", "AssetDef", "asset", "dependency_key"]

CONTEXT_PARAMETER = "context"


def dependency_key(dep: object, *, owner: str) -> str:
    """The key of a dependency given as a key string, an asset or a source."""
    if isinstance(dep, str):
        return check_key(dep, f"asset {owner!r}: dependency")
    key = getattr(dep, "key", None)
    if isinstance(key, str) and hasattr(dep, "partitions"):
        return key
    raise DefinitionError(
        f"asset {owner!r}: dependency {dep!r} is neither a key nor an asset or source"
    )


@dataclass(eq=False, slots=True)
class AssetDef:
    """A declared asset. Build it with :func:`asset`."""

    key: str
    fn: Callable[..., Any]
    inputs: Mapping[str, str]
    """parameter name -> upstream key, in the function's parameter order"""
    deps: tuple[str, ...]
    partitions: PartitionsDefinition | None
    policy: Policy
    freshness: Freshness | None
    code_version: str | None
    retries: Retry | None
    io: IOManager | None
    group: str | None
    description: str | None
    tags: Mapping[str, str]
    wants_context: bool
    timeout: timedelta | None = None
    mappings: Mapping[str, tuple[MappingSpec | None, bool]] = field(default_factory=dict)
    """Declared partition mappings by parameter name: ``(mapping or None, optional)``."""
    dep_mappings: Mapping[str, tuple[MappingSpec | None, bool]] = field(default_factory=dict)
    """The same for ``deps``, by upstream key."""
    """How long a run may take before it is stopped (None: the project's default, if any)."""
    _code_version_cache: str | None = field(default=None, repr=False)
    binding: str | None = field(init=False, default=None, repr=False)
    """How its parameters receive their inputs, files' loaders aside (see ``_bindings``):
    computed here, once, as the asset is declared, not at the first evaluation of 100k."""

    def __post_init__(self) -> None:
        self.binding = binding_of(self, no_loaders)

    @property
    def upstream(self) -> tuple[str, ...]:
        """Every key this asset depends on, inputs first, each once."""
        return tuple(dict.fromkeys([*self.inputs.values(), *self.deps]))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly, as a plain Python function (handy in unit tests)."""
        return self.fn(*args, **kwargs)


def _inputs_from_signature(
    key: str, fn: Callable[..., Any], ins: Mapping[str, Any] | None
) -> tuple[dict[str, str], bool, dict[str, tuple[MappingSpec | None, bool]]]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError) as exc:
        raise DefinitionError(f"asset {key!r}: cannot read the function's signature") from exc
    mapped = dict(ins or {})
    inputs: dict[str, str] = {}
    mappings: dict[str, tuple[MappingSpec | None, bool]] = {}
    wants_context = False
    for name, param in params.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise DefinitionError(
                f"asset {key!r}: parameter {name!r} is *args/**kwargs; declare each input by name"
            )
        if param.kind is param.POSITIONAL_ONLY:
            raise DefinitionError(f"asset {key!r}: parameter {name!r} must not be positional-only")
        if name == CONTEXT_PARAMETER and name not in mapped:
            wants_context = True
            continue
        upstream = mapped.pop(name, name)
        if isinstance(upstream, Input):
            mappings[name] = _declared(upstream, owner=key)
            upstream = name if upstream.key is None else upstream.key
        inputs[name] = dependency_key(upstream, owner=key)
    if mapped:
        raise DefinitionError(
            f"asset {key!r}: ins= names {sorted(mapped)}, which are not parameters of "
            f"{getattr(fn, '__name__', fn)!r}"
        )
    return inputs, wants_context, mappings


def _declared(item: Input, *, owner: str) -> tuple[MappingSpec | None, bool]:
    mapping = item.mapping
    valid = mapping is None or isinstance(mapping, PartitionMapping)
    if isinstance(mapping, Mapping):
        valid = all(
            isinstance(k, str) and isinstance(v, PartitionMapping) for k, v in mapping.items()
        )
    if not valid:
        raise DefinitionError(
            f"asset {owner!r}: mapping={mapping!r} is neither hw.Identity(), hw.AllPartitions(), "
            "hw.TimeWindow(...) nor a dict of them by dimension"
        )
    if not isinstance(item.optional, bool):
        raise DefinitionError(f"asset {owner!r}: optional={item.optional!r} is not True or False")
    return mapping, item.optional


@overload
def asset(key: Callable[..., Any], /) -> AssetDef: ...


@overload
def asset(
    key: str | None = None,
    *,
    deps: Iterable[str | AssetDef | SourceDef | Input] = (),
    ins: Mapping[str, str | AssetDef | SourceDef | Input] | None = None,
    partitions: PartitionsDefinition | None = None,
    policy: Policy | None = None,
    freshness: Freshness | None = None,
    code_version: str | None = None,
    retries: Retry | None = None,
    io: IOManager | None = None,
    group: str | None = None,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    timeout: Duration | None = None,
) -> Callable[[Callable[..., Any]], AssetDef]: ...


def asset(
    key: str | Callable[..., Any] | None = None,
    *,
    deps: Iterable[str | AssetDef | SourceDef | Input] = (),
    ins: Mapping[str, str | AssetDef | SourceDef | Input] | None = None,
    partitions: PartitionsDefinition | None = None,
    policy: Policy | None = None,
    freshness: Freshness | None = None,
    code_version: str | None = None,
    retries: Retry | None = None,
    io: IOManager | None = None,
    group: str | None = None,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    timeout: Duration | None = None,
) -> AssetDef | Callable[[Callable[..., Any]], AssetDef]:
    """Declare an asset: ``@asset`` or ``@asset("prefix/name", partitions=..., policy=...)``.

    Each parameter is an input named after its upstream key (``ins=`` maps others); a parameter
    named ``context`` receives a :class:`Context`. ``deps`` order and invalidate without passing
    values in.
    """
    if callable(key):
        return asset()(key)

    def decorate(fn: Callable[..., Any]) -> AssetDef:
        if not callable(fn):
            raise DefinitionError(f"@asset decorates a function, not {fn!r}")
        name = check_key(key if key is not None else getattr(fn, "__name__", ""))
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            raise DefinitionError(
                f"asset {name!r}: {fn.__name__} is async; an asset's function is a plain "
                "function (it runs in a worker, which awaits nothing: use asyncio.run inside)"
            )
        if inspect.isgeneratorfunction(fn):
            raise DefinitionError(
                f"asset {name!r}: {fn.__name__} is a generator (it yields); an asset's "
                "function returns its value (return list(...) for a list)"
            )
        if partitions is not None and not isinstance(partitions, PartitionsDefinition):
            raise DefinitionError(
                f"asset {name!r}: partitions={partitions!r} is not a partitions definition"
            )
        chosen_policy = eager() if policy is None else policy
        if not isinstance(chosen_policy, Policy):
            raise DefinitionError(f"asset {name!r}: policy={policy!r} is not a policy")
        if freshness is not None and not isinstance(freshness, Freshness):
            raise DefinitionError(f"asset {name!r}: freshness= takes hw.Freshness(...)")
        if retries is not None and not isinstance(retries, Retry):
            raise DefinitionError(f"asset {name!r}: retries= takes hw.Retry(...)")
        try:
            limit = (
                None
                if timeout is None
                else parse_duration(timeout, what=f"asset {name!r} timeout", positive=True)
            )
        except ValueError as exc:
            raise DefinitionError(str(exc)) from None
        inputs, wants_context, mappings = _inputs_from_signature(name, fn, ins)
        dep_keys: list[str] = []
        dep_mappings: dict[str, tuple[MappingSpec | None, bool]] = {}
        for dep in deps:
            if isinstance(dep, Input):
                if dep.key is None:
                    raise DefinitionError(f"asset {name!r}: hw.Input in deps= needs a key")
                dep_key = dependency_key(dep.key, owner=name)
                dep_mappings[dep_key] = _declared(dep, owner=name)
            else:
                dep_key = dependency_key(dep, owner=name)
            dep_keys.append(dep_key)
        return AssetDef(
            key=name,
            fn=fn,
            inputs=inputs,
            deps=tuple(dep_keys),
            partitions=partitions,
            policy=chosen_policy,
            freshness=freshness,
            code_version=code_version,
            retries=retries,
            io=io,
            group=group,
            description=description if description is not None else inspect.getdoc(fn),
            tags=dict(tags or {}),
            wants_context=wants_context,
            timeout=limit,
            mappings=mappings,
            dep_mappings=dep_mappings,
        )

    return decorate
