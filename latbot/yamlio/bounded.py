"""YAML that a user points LatBot at, read within bounds: recipes, `base:` and mixture files, a plugin's
options file, and the value of each `--set KEY=VALUE`.

YAML has large corners for a small language: one alias (`*name`) repeats a whole subtree, so 1 KB can stand
for a billion values ("billion laughs"); nesting is recursion in the parser; an integer of 5,000 digits
costs quadratic time and trips Python's int-string limit; and a path may name a FIFO or a device that
never ends. A recipe is a page of YAML, so bounds far above any real one refuse all of these before any
work is done, each with a one-line `RecipeError` that names the file (or the `--set` item), the bound and
the fix (docs/recipes.md, "Bounds").
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from latbot.errors import RecipeError

MAX_FILE_BYTES = 1 << 20  # 1 MiB per file (the largest repository recipe is ~2 KB)
MAX_DEPTH = 64  # nesting of mappings / lists (deeper would overflow Python's stack in the composer)
MAX_ALIASES = 100  # uses of `*name` in one document
MAX_NODES = 100_000  # values once aliases are expanded (what validation would walk)
MAX_INT_DIGITS = 100  # characters of one integer literal (far below Python's 4300-digit int-str limit)


class BoundExceeded(yaml.MarkedYAMLError):
    """A document past one of the bounds; raised while composing, before anything is expanded."""

    def __init__(self, problem: str, mark: Any):
        super().__init__(problem=problem, problem_mark=mark)


# What each bound refusal says: the bound, then how to write the value instead.
TOO_MANY_ALIASES = f"more than {MAX_ALIASES} aliases (*name), a recipe's limit; write the values out"
TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels, a recipe's limit; flatten the structure"
TOO_MANY_VALUES = f"more than {MAX_NODES:,} values once aliases are expanded, a recipe's limit; write it out plainly"
RECURSIVE = "a recursive alias (a value that contains itself); a recipe cannot hold one"


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that counts while it composes: nesting depth, alias uses, and the number of
    values each node stands for once aliases are expanded (so an alias bomb stops before it expands)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._sizes: dict[int, int] = {}  # id(node) → values it stands for, aliases expanded

    def compose_node(self, parent: Any, index: Any) -> Any:
        mark = self.peek_event().start_mark
        alias = self.check_event(yaml.AliasEvent)
        self._aliases += alias
        if self._aliases > MAX_ALIASES:
            raise BoundExceeded(TOO_MANY_ALIASES, mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise BoundExceeded(TOO_DEEP, mark)
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._count(node, alias, mark)
        return node

    def _count(self, node: yaml.Node, alias: bool, mark: Any) -> None:
        if alias:  # the anchored node: counted when it was composed, unless it is still being composed
            if id(node) not in self._sizes:
                raise BoundExceeded(RECURSIVE, mark)
            return
        if isinstance(node, yaml.MappingNode):
            size = 1 + sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self._sizes[id(v)] for v in node.value)
        else:
            size = 1
        if size > MAX_NODES:
            raise BoundExceeded(TOO_MANY_VALUES, mark)
        self._sizes[id(node)] = size


def _bounded_int(loader: BoundedLoader, node: yaml.ScalarNode) -> int:
    if len(node.value) > MAX_INT_DIGITS:
        problem = f"an integer of {len(node.value)} characters (at most {MAX_INT_DIGITS}); quote it if it is text"
        raise BoundExceeded(problem, node.start_mark)
    return yaml.SafeLoader.construct_yaml_int(loader, node)


BoundedLoader.add_constructor("tag:yaml.org,2002:int", _bounded_int)


def parse(text: str, where: str, positions: bool = True) -> tuple[Any, yaml.Node | None]:
    """(data, node tree) of one YAML document within the bounds; a `RecipeError` naming `where` (and, with
    `positions`, line:column) otherwise. The node tree gives each value's line."""
    if len(text) > MAX_FILE_BYTES:
        raise RecipeError(f"{where}: {len(text)} characters, more than a recipe's limit ({MAX_FILE_BYTES >> 20} MiB)")
    try:
        loader = BoundedLoader(text)  # refuses a NUL or another non-printable character here
        try:
            node = loader.get_single_node()
            return (loader.construct_document(node) if node is not None else None), node
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise RecipeError(_yaml_problem(e, where, positions)) from e
    except ValueError as e:  # a constructor's own check (a date like 2024-13-01, Python's int-str limit)
        raise RecipeError(f"{where}: invalid YAML: {e}; quote the value if it is text") from e


def _yaml_problem(e: yaml.YAMLError, where: str, positions: bool) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or getattr(e, "reason", None) or str(e)
    if not isinstance(e, BoundExceeded):
        problem = f"invalid YAML: {problem}"
    if mark is None:
        return f"{where}: {problem}"
    if positions:
        return f"{where}:{mark.line + 1}:{mark.column + 1}: {problem}"
    return f"{where}: column {mark.column + 1}: {problem}"


def read_text(path: Path, what: str = "recipe file") -> str:
    """The UTF-8 text of `path`, which must be a regular file of at most `MAX_FILE_BYTES`. A FIFO, a device,
    a socket or a directory is refused from `os.stat` alone, and the file is opened non-blocking, so
    nothing here waits for a writer that never comes or reads a stream that never ends."""
    try:
        _regular_file(path, os.stat(path).st_mode, what)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
        with open(fd, "rb") as f:
            _regular_file(path, os.fstat(fd).st_mode, what)  # swapped for a FIFO since the stat above
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError as e:
        raise RecipeError(f"{path}: {what} not found") from e
    except OSError as e:
        raise RecipeError(f"{path}: cannot read {what}: {e.strerror}") from e
    if len(raw) > MAX_FILE_BYTES:
        raise RecipeError(
            f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB, more than a {what} may be; "
            "check that this is the file you meant"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise RecipeError(f"{path}:{line}: not UTF-8 text (byte {raw[e.start]:#04x}); save the file as UTF-8") from e


_KINDS = {
    stat.S_ISDIR: "a directory",
    stat.S_ISFIFO: "a FIFO (named pipe)",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
}


def _regular_file(path: Path, mode: int, what: str) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS.items() if test(mode)), "not a regular file")
        raise RecipeError(f"{path}: {kind}; a {what} must be a regular file (give the path of the YAML file)")


def load_file(path: Path, what: str = "recipe file") -> Any:
    """The data of a YAML file, read and parsed within the bounds (errors name the file)."""
    return parse(read_text(path, what), str(path))[0]


def load_value(text: str, where: str) -> Any:
    """The data of one `--set` value, parsed within the bounds (errors name `where`, the `--set` item)."""
    return parse(text, where, positions=False)[0]
