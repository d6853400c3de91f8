"""Data versions fingerprint content; code versions fingerprint the syntax tree."""

from __future__ import annotations

import functools
import importlib.util
import math
import re
import subprocess
import sys
import textwrap
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import headwater as hw
from headwater.testing import Harness


def _under_hash_seeds(
    args: list[str], seeds: tuple[str, ...] = ("0", "1", "4242"), pythonpath: Path | None = None
) -> set[str]:
    """What ``python args`` prints in fresh interpreters, one per hash seed: one output when
    nothing depends on the seed."""
    env = {"PATH": "/usr/bin:/bin", **({"PYTHONPATH": str(pythonpath)} if pythonpath else {})}
    return {
        subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, check=True,
            env={"PYTHONHASHSEED": seed, **env},
        ).stdout.strip()
        for seed in seeds
    }  # fmt: skip


FRAME_SCRIPT = textwrap.dedent(
    """
    import sys
    import pandas as pd
    import headwater as hw
    df = pd.DataFrame({"region": ["eu", "us", None], "amount": [1.5, 2.0, 3.25],
                       "day": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"])})
    df["region"] = df["region"].astype("category")
    print(hw.data_version(df))
    """
)


def test_dataframe_versions_are_equal_across_processes() -> None:
    """The same DataFrame built in two fresh interpreters has the same version."""
    versions = _under_hash_seeds(["-c", FRAME_SCRIPT], seeds=("1", "2"))
    assert len(versions) == 1
    assert len(versions.pop()) == 32


PLAIN_OBJECTS_SCRIPT = textwrap.dedent(
    """
    import types
    import headwater as hw

    class Plain:
        def __init__(self, n):
            self.tags = {f"t{i}" for i in range(40)}
            self.n = n
            self.me = self  # it holds itself

    print(hw.data_version(types.SimpleNamespace(tags={f"t{i}" for i in range(40)})),
          hw.data_version(Plain(1)), hw.data_version(Plain(2)))
    """
)


def test_plain_objects_holding_sets_have_one_version_under_any_hash_seed() -> None:
    """A ``SimpleNamespace`` or an instance of a plain class fell back to its pickle, which
    writes a set in hash order: the same value had another version in each process, so early
    cutoff failed across restarts (hostile32b bug9). They are encoded by type and attributes
    now; an object that holds itself too."""
    versions = _under_hash_seeds(["-c", PLAIN_OBJECTS_SCRIPT])
    assert len(versions) == 1, versions
    namespace, one, two = versions.pop().split()
    assert len({namespace, one, two}) == 3


def test_dataframe_versions_follow_content() -> None:
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    assert hw.data_version(df) == hw.data_version(df.copy())
    assert hw.data_version(df) != hw.data_version(df.assign(a=[1, 3]))
    assert hw.data_version(df) != hw.data_version(df[["b", "a"]])
    assert hw.data_version(df) != hw.data_version(df.rename(columns={"a": "c"}))
    assert hw.data_version(df) != hw.data_version(df.astype({"a": "float64"}))


def test_arrow_tables_hash_content_not_chunking() -> None:
    """An Arrow table split into different chunks has the same version."""
    one = pa.table({"x": [1, 2, 3, 4]})
    chunked = pa.concat_tables([pa.table({"x": [1, 2]}), pa.table({"x": [3, 4]})])
    assert hw.data_version(one) == hw.data_version(chunked)
    assert hw.data_version(one) != hw.data_version(pa.table({"x": [1, 2, 3, 5]}))


def test_plain_values() -> None:
    assert hw.data_version({"a": 1, "b": 2}) == hw.data_version({"b": 2, "a": 1})
    assert hw.data_version(b"x") != hw.data_version("x")
    assert hw.data_version([1, 2]) != hw.data_version([2, 1])


def _load_function(tmp_path: Path, name: str, source: str) -> object:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    namespace: dict[str, object] = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    import linecache

    linecache.checkcache(str(path))
    return namespace["f"]


def test_code_version_ignores_formatting_comments_and_docstrings(tmp_path: Path) -> None:
    """Re-formatting, comments and docstrings keep the code version; logic changes it."""
    base = _load_function(tmp_path, "a", "def f(x):\n    return x + 1\n")
    styled = _load_function(
        tmp_path,
        "b",
        '''
        def f(x):
            """Adds one."""
            # a comment
            return (x
                    + 1)
        ''',
    )
    changed = _load_function(tmp_path, "c", "def f(x):\n    return x + 2\n")
    assert hw.code_version(base) == hw.code_version(styled)  # type: ignore[arg-type]
    assert hw.code_version(base) != hw.code_version(changed)  # type: ignore[arg-type]


def test_code_version_ignores_decorators() -> None:
    """Changing an asset's policy does not change its code version."""

    def make(policy: object) -> hw.AssetDef:
        @hw.asset(policy=policy)  # type: ignore[call-overload]
        def f() -> int:
            return 1

        return f

    assert hw.code_version(make(hw.eager()).fn) == hw.code_version(make(hw.manual()).fn)


def test_assets_sharing_a_function_get_its_code_version_and_explicit_ones_win() -> None:
    """Fingerprinting every asset at open fingerprints a factory's function once: each asset
    still gets exactly what asking for it alone gives."""

    def shared(x: int) -> int:
        return x + 1

    def other(x: int) -> int:
        return x * 2

    nodes: list[object] = [hw.source("s")]
    nodes += [hw.asset(f"made{i}", ins={"x": "s"})(shared) for i in range(3)]
    nodes.append(hw.asset("pinned", ins={"x": "s"}, code_version="v7")(shared))
    nodes.append(hw.asset("own", ins={"x": "s"})(other))
    at_once = hw.Definitions(nodes)  # type: ignore[arg-type]
    at_once.compute_code_versions()
    one_by_one = hw.Definitions(nodes)  # type: ignore[arg-type]
    keys = ["made0", "made1", "made2", "pinned", "own"]
    assert {k: at_once.code_version(k) for k in keys} == {
        k: one_by_one.code_version(k) for k in keys
    }
    assert at_once.code_version("made2") == hw.code_version(shared)
    assert at_once.code_version("pinned") == "v7"
    assert at_once.code_version("own") == hw.code_version(other) != hw.code_version(shared)


def _frame(**columns: object) -> pd.DataFrame:
    return pd.DataFrame(columns)


DIFFERENT_ONLY_IN_TYPE = [
    ({1: "a"}, {"1": "a"}),
    ((1, 2), [1, 2]),
    (1, 1.0),
    (1, True),
    (0, False),
    ("1", b"1"),
    (frozenset({1}), {1}),
    (pd.DataFrame({1: [1]}), pd.DataFrame({"1": [1]})),
    (_frame(a=[1]).rename_axis(None), _frame(a=[1]).rename_axis("None")),
    (_frame(a=pd.Series([1, 2], dtype=object)), _frame(a=pd.Series(["1", "2"], dtype=object))),
    (
        _frame(a=pd.Categorical(["x"], categories=["x", "y"])),
        _frame(a=pd.Categorical(["x"], categories=["x", "z"])),
    ),
    (
        _frame(a=pd.Categorical(["x"], categories=["x", "y"], ordered=True)),
        _frame(a=pd.Categorical(["x"], categories=["x", "y"])),
    ),
    (_frame(a=[1, 2]), _frame(a=[1.0, 2.0])),
    (pd.Series([1], name=1), pd.Series([1], name="1")),
    (np.float64(1.0), 1.0),
    (np.float64(1.0), np.float32(1.0)),
    ({"m": np.float64(2.0)}, {"m": 2.0}),
]


@pytest.mark.parametrize(("left", "right"), DIFFERENT_ONLY_IN_TYPE)
def test_values_that_differ_only_in_type_have_different_versions(left: Any, right: Any) -> None:
    assert hw.data_version(left) != hw.data_version(right)


EQUAL_CONTENT = [
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
    ({3, 1, 2}, {1, 2, 3}),
    (float("nan"), float("nan")),
    (0.0, -0.0),
    (_frame(a=[1, 2]), _frame(a=[1, 2]).set_index(pd.Index([0, 1]))),
    (
        pa.table({"x": [1, 2, None]}),
        pa.concat_tables([pa.table({"x": [1]}), pa.table({"x": [2, None]})]),
    ),
    (_frame(a=[1.0, float("nan")]), _frame(a=[1.0, float("nan")]).copy()),
    (np.arange(6).reshape(2, 3), np.asfortranarray(np.arange(6).reshape(2, 3))),
    (np.float64(-0.0), np.float64(0.0)),
    (np.float32("nan"), -np.float32("nan")),
    (
        {"m": np.float64(1.5), "c": np.complex128(-0.0)},
        {"c": np.complex128(0.0), "m": np.float64(1.5)},
    ),
]


@pytest.mark.parametrize(("left", "right"), EQUAL_CONTENT)
def test_equal_content_has_one_version(left: Any, right: Any) -> None:
    assert hw.data_version(left) == hw.data_version(right)


def test_an_ordered_dicts_order_is_content_and_a_plain_dicts_is_not() -> None:
    ab, ba = OrderedDict(a=1, b=2), OrderedDict(b=2, a=1)
    assert ab != ba  # OrderedDict's own equality says so
    assert hw.data_version(ab) != hw.data_version(ba)
    assert hw.data_version(ab) == hw.data_version(OrderedDict(ab))
    assert hw.data_version(dict(ab)) == hw.data_version(dict(ba)) != hw.data_version(ab)


def test_an_asset_returning_numpy_scalars_materializes_and_cuts_off_on_equal_content() -> None:
    """`df["x"].mean()` is a numpy scalar, alone or inside a dict."""
    src = hw.source("src")

    @hw.asset
    def stats(src: list[float]) -> dict[str, Any]:
        x = pd.Series(src, dtype="float64")
        return {"mean": x.mean(), "max": x.max()}

    @hw.asset
    def mean(src: list[float]) -> Any:
        return pd.Series(src, dtype="float64").mean()

    @hw.asset
    def report(stats: dict[str, Any], mean: Any) -> str:
        return f"{stats['max']}/{mean}"

    with Harness(hw.Definitions([src, stats, mean, report])) as h:
        h.observe("src", value=[1.0, 2.0])
        assert h.tick().assets == {"stats", "mean", "report"}
        assert h.value("mean") == 1.5 and type(h.value("mean")) is np.float64
        h.observe("src", value=[2.0, 1.0])  # same mean and max: nothing below them runs again
        assert h.tick().assets == {"stats", "mean"}


def _typed_equal(a: Any, b: Any) -> bool:
    """Equal as typed content: same types all the way down, NaN equal to NaN, order of dict
    and set members irrelevant."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_typed_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            any(_typed_equal(k, k2) and _typed_equal(v, b[k2]) for k2 in b) for k, v in a.items()
        )
    if isinstance(a, set | frozenset):
        return len(a) == len(b) and all(any(_typed_equal(x, y) for y in b) for x in a)
    return bool(a == b)


_scalars = (
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True, width=16)
    | st.text(alphabet="ab1", max_size=2) | st.binary(max_size=2)
)  # fmt: skip
_hashable = st.recursive(_scalars, lambda inner: st.tuples(inner, inner), max_leaves=3)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(_hashable, inner, max_size=3)
        | st.frozensets(_hashable, max_size=3)
        | st.sets(_hashable, max_size=3)
    ),
    max_leaves=8,
)


def _rebuilt(value: Any, draw: Callable[[st.SearchStrategy[Any]], Any]) -> Any:
    """The same content built differently: dict and set members in another order, and now
    and then a container or scalar swapped for one of another type."""
    swap = draw(st.integers(0, 9)) == 0
    if isinstance(value, list | tuple):
        items = [_rebuilt(v, draw) for v in value]
        kind = (tuple if isinstance(value, list) else list) if swap else type(value)
        return kind(items)
    if isinstance(value, dict):
        return {k: _rebuilt(v, draw) for k, v in reversed(list(value.items()))}
    if isinstance(value, set | frozenset):
        return type(value)(reversed(list(value)))
    if swap and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_versions_are_equal_exactly_when_typed_content_is(data: st.DataObject) -> None:
    left = data.draw(_values)
    right = data.draw(_values)
    if data.draw(st.booleans()):
        right = _rebuilt(left, data.draw)
    assert (hw.data_version(left) == hw.data_version(right)) == _typed_equal(left, right)


SEED_SCRIPT = textwrap.dedent(
    """
    import pandas as pd
    import headwater as hw
    values = [
        {"alpha", "beta", "gamma", "delta"},
        frozenset({"x", "y", ("z", 1)}),
        {"k1": {"a", "b"}, "k2": [1, 2.5, None]},
        pd.DataFrame({"o": pd.Series(["a", 1, 2.5, None], dtype=object), "n": [1, 2, 3, 4]}),
    ]
    print(" ".join(hw.data_version(v) for v in values))
    """
)


def test_versions_do_not_depend_on_the_hash_seed() -> None:
    """Sets and dicts of strings have one version in fresh interpreters with any hash seed."""
    outputs = _under_hash_seeds(["-c", SEED_SCRIPT])
    assert len(outputs) == 1


def test_code_version_without_source_ignores_docstrings_and_layout() -> None:
    """A function defined by exec (or in a REPL) has no source: its instructions count, not
    its docstring or line numbers."""

    def define(text: str) -> Any:
        namespace: dict[str, Any] = {}
        exec(text, namespace)
        return namespace["f"]

    plain = define("def f(x):\n    return x + 1\n")
    documented = define("def f(x):\n    'Adds one.'\n    return x + 1\n")
    spaced = define("\n\n\ndef f(x):\n\n    return x + 1\n")
    changed = define("def f(x):\n    return x + 2\n")
    assert hw.code_version(plain) == hw.code_version(documented) == hw.code_version(spaced)
    assert hw.code_version(plain) != hw.code_version(changed)


def test_code_version_without_source_does_not_depend_on_the_hash_seed() -> None:
    """A set literal is a frozenset constant, whose repr lists items in hash order."""
    script = (
        "import headwater as hw; ns = {}; "
        "exec('def f(x):\\n    return x in {\\'NA\\', \\'null\\', \\'-\\', \\'?\\'}\\n', ns); "
        "print(hw.code_version(ns['f']))"
    )
    outputs = _under_hash_seeds(["-c", script])
    assert len(outputs) == 1


CALLABLES_MODULE = textwrap.dedent(
    """
    import functools

    class Scale:
        def __init__(self, factor):
            self.factor = factor

        def __call__(self, src):
            return src * self.factor

    def add(src, n):
        return src + n

    by_two, by_three = Scale(2), Scale(3)
    plus_one, plus_two = functools.partial(add, n=1), functools.partial(add, n=2)
    """
)


def test_an_asset_function_that_is_a_callable_object_or_a_partial_has_one_code_version(
    tmp_path: Path,
) -> None:
    """A class with ``__call__`` or a ``functools.partial`` as an asset's function: its code
    version was the hash of its repr, with a memory address in it, so it differed in every
    process (each run in a worker process failed as 'the definitions have changed'). Now it
    is the same in every process, and follows the object's attributes and arguments."""
    (tmp_path / "callables.py").write_text(CALLABLES_MODULE)
    script = (
        "import callables as c, headwater as hw; "
        "print(*(hw.code_version(f) for f in (c.by_two, c.by_three, c.plus_one, c.plus_two)))"
    )
    (printed,) = _under_hash_seeds(["-c", script], pythonpath=tmp_path)
    versions = printed.split()
    assert len(set(versions)) == 4, versions  # what each holds counts


def test_a_mixed_type_object_column_is_stored_and_versioned_as_stored() -> None:
    """Parquet cannot hold a column of ints and strings: it is pickled, the run succeeds, and
    the version is that of what readers load."""
    src = hw.source("src")

    @hw.asset
    def mixed(src: int) -> pd.DataFrame:
        return pd.DataFrame({"v": pd.Series([src, "x", 2.5], dtype=object)})

    @hw.asset
    def ints(src: int) -> pd.DataFrame:
        return pd.DataFrame({"v": pd.Series([src, 2], dtype=object)})

    with Harness(hw.Definitions([src, mixed, ints])) as h:
        h.observe("src", value=1)
        tick = h.tick()
        assert tick.failed == {} and tick.assets == {"mixed", "ints"}
        for key in ("mixed", "ints"):
            (event,) = h.events(kind="materialization", asset=key)
            assert event.data_version == hw.data_version(h.value(key))
        assert list(h.value("mixed")["v"]) == [1, "x", 2.5]


LOADERS_MODULE = textwrap.dedent(
    """
    import dataclasses
    import datetime
    import enum
    import functools
    import json
    import logging
    import operator
    import threading
    import types
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import dataclass

    import pandas as pd

    class Reader:
        def __init__(self, sep, columns):
            self.sep, self.columns, self.lock = sep, columns, threading.Lock()

        def __call__(self, path):
            return pd.read_csv(path, sep=self.sep)

        def read(self, path):
            return pd.read_csv(path, sep=self.sep, usecols=sorted(self.columns))

    class Missing:
        NA_VALUES = {"NA", "null", "-", "?", "n/a"}

        @classmethod
        def read(cls, path):
            return pd.read_csv(path, na_values=cls.NA_VALUES)

    class Sep(enum.Enum):
        SEMICOLON = ";"
        COMMA = ","

    @dataclass(slots=True)
    class Slotted:
        sep: str

        def __call__(self, path):
            return pd.read_csv(path, sep=self.sep)

    def plain(path):
        return pd.read_csv(path)

    def make_loader(sep):
        def load(path):
            return pd.read_csv(path, sep=sep)
        return load

    def wrapped(path):  # wrapped by a decorator that does not set __wrapped__
        return pd.read_csv(path)

    def decorate(fn):
        def wrapper(path):
            return fn(path)
        return wrapper

    class Rule:
        def __init__(self, words):
            self.words = words

    class Base:
        delimiter = ";"

        def __call__(self, path):
            return pd.read_csv(path, sep=self.delimiter)

    class Csv(Base):
        pass

    class Registry:  # rules that point back at it: a cycle, entered through a set
        def __init__(self):
            self.rules = []

    @dataclass(frozen=True)
    class Linked:
        word: str
        registry: Registry = dataclasses.field(compare=False)

    REGISTRY = Registry()
    REGISTRY.rules.extend(Linked(w, REGISTRY) for w in ("NA", "null", "-", "?", "n/a"))

    class Node:  # hashed by address: a set of them iterates in another order each time
        def __init__(self, name):
            self.name, self.edges = name, []

    R, M, N = Node("r"), Node("m"), Node("n")  # r -> m -> r, r -> n -> m: one group
    R.edges += [M, N]
    M.edges.append(R)
    N.edges.append(M)

    class Fixed(datetime.tzinfo):  # its repr holds an address
        def utcoffset(self, moment):
            return datetime.timedelta(hours=1)

    @functools.singledispatch
    def cell(value):
        return value

    @cell.register
    def _(value: str):
        return value.strip()

    class Logged:  # holds process state: a logger, a pool that has run (their types count)
        def __init__(self):
            self.log = logging.getLogger(__name__)
            self.pool = ThreadPoolExecutor()
            self.pool.submit(len, "started").result()

        def __call__(self, path):
            self.log.info("reading %s", path)
            return pd.read_csv(path)

    LOADERS = {
        "function": plain,
        "lambda": lambda path: pd.read_csv(path, sep=";"),
        "lambdas on one line": [lambda p: p.read_text(), lambda p: p.read_bytes()],
        "lambda with a set, in a call": functools.partial(
            pd.read_csv, converters={"a": lambda v: v if v not in {"NA", "null", "-"} else None}),
        "partial": functools.partial(pd.read_csv, sep=";", na_values={"-", "n/a", "?"}),
        "partial of an enum": functools.partial(pd.read_csv, sep=Sep.SEMICOLON),
        "object": Reader(";", {"a", "b", "c"}),
        "method": Reader(",", {"a", "b", "c"}).read,
        "classmethod": Missing.read,
        "class": Reader,
        "slots": Slotted(";"),
        "namespace": functools.partial(pd.read_csv, na_values=types.SimpleNamespace(
            values={"x", "y", "z", "w"}).values),
        "methodcaller": [operator.methodcaller("read_text"), operator.methodcaller("read_bytes")],
        "method descriptors": [str.strip, str.upper],
        "builtin": json.loads,
        "closures": [make_loader(";"), make_loader(",")],
        "decorated": decorate(wrapped),
        "objects in a series": functools.partial(
            pd.read_csv, rules=pd.Series([Rule({"NA", "null", "-"}), Rule({"x", "y", "z"})])),
        "inherited": Csv(),
        "process state": Logged(),
        "a cycle through a set": functools.partial(pd.read_csv, rules=set(REGISTRY.rules)),
        "a custom time zone": functools.partial(
            pd.read_csv, since=datetime.datetime(2024, 1, 1, tzinfo=Fixed())),
        "singledispatch": functools.partial(pd.read_csv, converters={"a": cell}),
        "a group reached through a set": functools.partial(pd.read_csv, nodes={R, N, M}),
    }
    """
)
LOADERS_SCRIPT = (
    "import os\n"
    "if os.environ['PYTHONHASHSEED'] == '1':  # another import order: abc's counter moves\n"
    "    import pyarrow, headwater.testing\n"
    "import loaders; from headwater.versions import callable_version as v\n"
    "for k, f in sorted(loaders.LOADERS.items()):\n"
    "    print(k, [v(x) for x in f] if isinstance(f, list) else v(f))"
)


def test_a_loaders_fingerprint_is_the_same_in_every_process(tmp_path: Path) -> None:
    """Readers record their sources' loader fingerprints: one that differed between two
    starts (a memory address in a repr, a set's order under another hash seed, a module's
    name) would make every reader stale at every start. Every kind of loader here differs
    from every other, and the two of each pair from each other."""
    (tmp_path / "loaders.py").write_text(LOADERS_MODULE)
    outputs = _under_hash_seeds(["-c", LOADERS_SCRIPT], pythonpath=tmp_path)
    assert len(outputs) == 1
    (printed,) = outputs
    fingerprints = re.findall(r"\b([0-9a-f]{32})\b", printed)
    assert len(fingerprints) == 28
    assert len(set(fingerprints)) == 28


DEFINITIONS_WITH_A_LOADER_OBJECT = textwrap.dedent(
    """
    import headwater as hw

    class Lines:
        def __init__(self, skip):
            self.skip = skip

        def __call__(self, path):
            return path.read_text().splitlines()[self.skip:]

    raw = hw.FileSource("raw", "raw.txt", loader=Lines(1))

    @hw.asset
    def count(raw):
        return len(raw)

    defs = hw.Definitions([raw, count])
    """
)


def test_a_definitions_file_gives_its_loaders_one_fingerprint_in_every_process(
    tmp_path: Path,
) -> None:
    """The file is imported as a module of a name that does not depend on the hash seed: a
    loader object of a class defined there fingerprints (and pickles) alike at every start."""
    (tmp_path / "defs.py").write_text(DEFINITIONS_WITH_A_LOADER_OBJECT)
    script = (
        "from headwater._loading import load_definitions; import sys; "
        "defs = load_definitions(sys.argv[1]); defs.compute_fingerprints(); "
        "print(defs.binding('count'))"
    )
    outputs = _under_hash_seeds(["-c", script, str(tmp_path / "defs.py")])
    assert len(outputs) == 1
    assert re.fullmatch(r"raw=raw~[0-9a-f]{16}", outputs.pop())


def test_a_loaders_fingerprint_tells_apart_what_makes_it_load_otherwise() -> None:
    """Its settings, wherever they live: an inherited class attribute or method, a property,
    a slot beside a ``__dict__``, a compiled pattern, a struct format, a csv dialect."""
    import collections
    import csv
    import struct

    from headwater.versions import callable_version

    def hierarchy(sep: str, body: str) -> Any:
        namespace: dict[str, Any] = {"__name__": __name__}  # a module of the user's
        exec(
            f"class Base:\n    __slots__ = ()\n    delimiter = {sep!r}\n"
            f"    def __call__(self, path):\n        return {body}\n"
            "    @property\n    def quoted(self):\n        return '\"' + self.delimiter\n"
            "class Csv(Base):\n    __slots__ = ('sep', '__dict__')\n"
            "    def __init__(self, sep):\n        self.sep = sep\n",
            namespace,
        )
        return namespace["Csv"]

    def read(path: Any, *, how: Any) -> Any:
        return path

    same = hierarchy(";", "path")
    assert callable_version(same(",")) == callable_version(hierarchy(";", "path")(","))
    for other in (hierarchy(",", "path")(","), hierarchy(";", "path.strip()")(","), same(";")):
        assert callable_version(other) != callable_version(same(","))
    cached = [functools.lru_cache(maxsize=None)(eval(f"lambda p: p.split({sep!r})"))
              for sep in (",", ";")]  # fmt: skip
    assert callable_version(cached[0]) != callable_version(cached[1])
    cached[0]("a,b")  # its cache fills: not a setting
    assert callable_version(cached[0]) == callable_version(
        functools.lru_cache(maxsize=None)(eval("lambda p: p.split(',')"))
    )
    pairs = [
        (pd.DataFrame({"code": [1, 2]}), pd.DataFrame({"code": [1, 3]})),
        (pd.DataFrame({"code": ["a"]}), pd.DataFrame({"code": ["b"]})),
        (re.compile(r"\d+"), re.compile(r"[a-z]+")),
        (re.compile("a", re.I), re.compile("a")),
        (struct.Struct("<iq"), struct.Struct(">qq")),
        (csv.get_dialect("excel"), csv.get_dialect("excel-tab")),
        (collections.deque([","]), collections.deque([";"])),
    ]
    for one, two in pairs:
        assert callable_version(functools.partial(read, how=one)) != callable_version(
            functools.partial(read, how=two)
        ), (one, two)


def test_a_loaders_fingerprint_costs_what_it_holds_not_its_paths() -> None:
    """One list held six times at each of twenty levels is 21 objects, not 6**20 walks."""
    from headwater.versions import callable_version

    shared: list[Any] = []
    for _ in range(20):
        shared = [shared] * 6
    assert callable_version(functools.partial(print, shared)) == callable_version(
        functools.partial(print, shared)
    )


def test_a_definitions_file_under_a_folder_named_in_latin_1_loads(tmp_path: Path) -> None:
    """Its module name comes from the path's bytes, whatever they encode."""
    import os

    from headwater._loading import load_definitions

    folder = tmp_path / os.fsdecode(b"donn\xe9es")
    folder.mkdir()
    (folder / "defs.py").write_text(DEFINITIONS_WITH_A_LOADER_OBJECT)
    assert sorted(load_definitions(str(folder / "defs.py")).assets) == ["count"]


def test_a_project_moved_to_another_folder_keeps_its_loaders_fingerprints(
    tmp_path: Path,
) -> None:
    """A deploy into a new folder per release: the definitions module's name changes with the
    path, which no fingerprint may hold (an enum of the file among pandas categories did)."""
    from headwater._loading import load_definitions

    text = textwrap.dedent(
        """
        import enum, functools
        import pandas as pd
        import headwater as hw

        class Region(enum.Enum):
            EU = "eu"
            US = "us"

        raw = hw.FileSource("raw", "raw.csv", loader=functools.partial(
            pd.read_csv, dtype={"region": pd.CategoricalDtype([Region.EU, Region.US])}))

        @hw.asset
        def count(raw):
            return len(raw)

        defs = hw.Definitions([raw, count])
        """
    )
    bindings = set()
    for release in ("1", "2"):
        (tmp_path / release).mkdir()
        (tmp_path / release / "defs.py").write_text(text)
        defs = load_definitions(str(tmp_path / release / "defs.py"))
        bindings.add(defs.binding("count"))
    assert len(bindings) == 1


def test_installed_code_is_not_yours_wherever_it_is_installed() -> None:
    """A library's objects count by type: whether from site-packages, Debian's dist-packages
    or the user site, it is a library."""
    from headwater._usercode import users_file

    assert not users_file("/usr/lib/python3/dist-packages/httplib2/__init__.py")
    assert not users_file("/home/me/.local/lib/python3.11/site-packages/fsspec/spec.py")
    assert users_file("/srv/project/pipelines/defs.py")


def test_a_loaders_fingerprint_follows_its_code_and_settings() -> None:
    from headwater.versions import callable_version

    def semicolons(path: Any) -> Any:
        return pd.read_csv(path, sep=";")

    def commas(path: Any) -> Any:
        return pd.read_csv(path, sep=",")

    assert callable_version(semicolons) != callable_version(commas)
    partial = functools.partial(pd.read_csv, sep=";")
    assert callable_version(partial) == callable_version(functools.partial(pd.read_csv, sep=";"))
    assert callable_version(partial) != callable_version(functools.partial(pd.read_csv, sep=","))
    assert callable_version(partial) != callable_version(functools.partial(pd.read_json, sep=";"))


def test_a_loader_with_parts_that_cannot_be_encoded_counts_them_by_their_type() -> None:
    """A ``__wrapped__`` loop, a lock: no error, and the same fingerprint every time."""
    import threading

    from headwater.versions import callable_version

    def loader(path: Any) -> Any:
        return path

    loader.__wrapped__ = loader  # type: ignore[attr-defined]  # inspect.unwrap: a loop
    held = functools.partial(loader, lock=threading.Lock())

    @hw.asset
    def size(raw: Any) -> int:
        return len(raw)

    first = hw.Definitions([hw.FileSource("raw", "raw.csv", loader=held), size])
    again = hw.Definitions([hw.FileSource("raw", "raw.csv", loader=held), size])
    first.compute_fingerprints()
    assert first.binding("size") == again.binding("size")
    other = functools.partial(loader, lock=threading.Lock(), sep=";")
    assert callable_version(other) != callable_version(held)


def test_a_lambdas_code_version_is_its_own_code_not_its_line(tmp_path: Path) -> None:
    """A lambda's source is its whole line: a decorator argument added, or another lambda on
    that line edited, changed its version (and reran it); a change to it still counts."""
    (tmp_path / "lambdas.py").write_text(
        "f = lambda x: x + 1\n"
        "g = (lambda x: x + 1), 'policy=manual() beside it'\n"
        "h, other = (lambda x: x + 1), (lambda y: y * 2)\n"
        "k = lambda x: x + 2\n"
    )
    spec = importlib.util.spec_from_file_location("lambdas_for_versions", tmp_path / "lambdas.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    versions = {hw.code_version(fn) for fn in (module.f, module.g[0], module.h)}
    assert len(versions) == 1
    assert hw.code_version(module.k) not in versions
