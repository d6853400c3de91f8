"""Data versions fingerprint content; code versions fingerprint the syntax tree."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow as pa

import headwater as hw

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
    versions = {
        subprocess.run(
            [sys.executable, "-c", FRAME_SCRIPT],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(versions) == 1
    assert len(versions.pop()) == 32


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
