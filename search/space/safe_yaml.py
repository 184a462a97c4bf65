"""Reading YAML that a user (or an attacker) wrote: bounded, strict, one-line errors.

`yaml.safe_load` never runs code, but it still accepts three things that hurt us:
- anchors and aliases, which make a "billion laughs" document of a few hundred bytes;
- duplicate mapping keys, where the last one silently wins;
- deep nesting (20,000 `[`), which overflows Python's recursion limit.
None of them has a use in a spec or a settings file, so `load` refuses them outright, and
bounds the document's size, before building any Python object.
"""
from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 1 << 20  # 1 MiB: a spec is a few kB
MAX_DEPTH = 32  # mappings and lists nested deeper than this are refused
MAX_NODES = 100_000


class YamlError(ValueError):
    """Unreadable or refused YAML; the message is one line and never quotes unbounded input."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and duplicate keys (checked on the node tree, before
    any object is built)."""

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise YamlError(f"line {mark.line + 1}, column {mark.column + 1}: YAML aliases (*name) are not allowed")
        event = self.peek_event()
        if getattr(event, "anchor", None) is not None:
            mark = event.start_mark
            raise YamlError(f"line {mark.line + 1}, column {mark.column + 1}: YAML anchors (&name) are not allowed")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # noqa: ANN001
        seen: set = set()
        for key_node, _ in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
            if key in seen:
                mark = key_node.start_mark
                raise YamlError(f"line {mark.line + 1}, column {mark.column + 1}: duplicate key {_short(key)}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_shape(text: str) -> None:
    """Refuse deep nesting and huge documents by scanning PyYAML's event stream, which is
    iterative (no recursion), before the recursive composer sees the document."""
    depth = nodes = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise YamlError(f"line {mark.line + 1}, column {mark.column + 1}: nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        nodes += 1
        if nodes > MAX_NODES:
            raise YamlError(f"more than {MAX_NODES} YAML nodes")


def load(text: str | bytes) -> Any:
    """Parse one YAML document strictly; raises `YamlError` (one line) on any problem."""
    if len(text) > MAX_BYTES:
        raise YamlError(f"{len(text)} bytes: larger than the limit of {MAX_BYTES}")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise YamlError(f"not UTF-8 text (byte {err.start})") from None
    try:
        _check_shape(text)
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except YamlError:
        raise
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise YamlError(f"invalid YAML: {where}{_short(getattr(err, 'problem', None) or err)}") from None


def _short(value: Any, limit: int = 80) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
