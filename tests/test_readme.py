"""Every self-contained Python example in the README runs (those starting `import headwater`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = (Path(__file__).parent.parent / "README.md").read_text()
EXAMPLES = [
    block
    for block in re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
    if block.startswith("import headwater as hw")
]


def test_the_readme_has_runnable_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("source", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_readme_example_runs(source: str) -> None:
    exec(compile(source, "README.md", "exec"), {"__name__": "readme_example"})
