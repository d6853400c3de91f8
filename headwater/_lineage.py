"""The asset graph as text, Mermaid or Graphviz dot."""

from __future__ import annotations

from headwater.definitions import AssetDef, Definitions, EdgeMapping

__all__ = ["FORMATS", "render_lineage"]

FORMATS = ("text", "mermaid", "dot")


def _kind(defs: Definitions, key: str) -> str:
    node = defs.nodes[key]
    if isinstance(node, AssetDef):
        return f"asset, {node.policy.name}"
    return node.kind_label


def _mapping(defs: Definitions, parent: str, child: str) -> str | None:
    """The partition mapping of an edge where it is not the plain same-key or whole read."""
    if defs.graph.mapping(parent, child) is not EdgeMapping.MAPPED:
        return None
    return defs.graph.edge_map(parent, child).label


def _quoted(text: str) -> str:
    """A label as one quoted string of dot: no quote, backslash or line break in it
    may end the string or start a statement (a partition dimension's name may hold any)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")


def _mermaid_label(text: str) -> str:
    """Mermaid reads no backslash escapes in a quoted label: characters that would end it or
    its line are written as its entity codes."""
    return text.replace('"', "#quot;").replace("\n", "#10;").replace("\r", "#13;")


def _one_line(text: str) -> str:
    return text.replace("\n", "\\n").replace("\r", "\\r")


def render_lineage(defs: Definitions, fmt: str) -> str:
    graph = defs.graph
    keys = sorted(graph.order, key=graph.order.__getitem__)
    edges = [(parent, key) for key in keys for parent in graph.parents[key]]
    if fmt == "mermaid":
        ids = {key: f"n{i}" for i, key in enumerate(keys)}
        lines = ["graph LR"]
        lines += [f'    {ids[k]}["{k}"]' for k in keys]
        for a, b in edges:
            label = _mapping(defs, a, b)
            arrow = "-->" if label is None else f'-- "{_mermaid_label(label)}" -->'
            lines.append(f"    {ids[a]} {arrow} {ids[b]}")
        return "\n".join(lines)
    if fmt == "dot":
        lines = ["digraph headwater {", "    rankdir=LR;"]
        for key in keys:
            shape = "box" if isinstance(defs.nodes[key], AssetDef) else "ellipse"
            lines.append(f'    "{key}" [shape={shape}];')
        for a, b in edges:
            label = _mapping(defs, a, b)
            attrs = "" if label is None else f' [label="{_quoted(label)}"]'
            lines.append(f'    "{a}" -> "{b}"{attrs};')
        lines.append("}")
        return "\n".join(lines)
    lines = []
    for key in keys:
        parents = [
            p if (label := _mapping(defs, p, key)) is None else f"{p} [{_one_line(label)}]"
            for p in graph.parents[key]
        ]
        suffix = f" <- {', '.join(parents)}" if parents else ""
        lines.append(f"{key} ({_kind(defs, key)}){suffix}")
    return "\n".join(lines)
