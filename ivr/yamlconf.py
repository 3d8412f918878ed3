"""YAML loading that remembers where every value came from.

Admins fix configuration from error messages, so every problem must name file, line and column. PyYAML's
composer keeps marks on nodes; we walk the node tree once, build plain Python data, and keep a map from the
data path (tuple of keys/indexes) to the (line, column) where that value starts. Pydantic validation errors
carry the same kind of path (``loc``), so they map straight back onto the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ivr.errors import ConfigError, ConfigProblem

Path_ = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass
class SourceMap:
    """Data path -> 1-based (line, column) of the value, and of the key for mappings."""

    file: str
    positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Path_) -> tuple[int, int]:
        """Closest known position: the path itself, else its nearest ancestor."""
        p = tuple(path)
        while p:
            if p in self.positions:
                return self.positions[p]
            p = p[:-1]
        return self.positions.get((), (1, 1))

    def problem(self, path: Path_, message: str, severity: str = "error") -> ConfigProblem:
        line, col = self.locate(path)
        return ConfigProblem(self.file, line, col, message, severity)


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _construct(node: yaml.Node, path: Path_, smap: SourceMap, problems: list[ConfigProblem], loader) -> Any:
    smap.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                problems.append(smap.problem(path, f"mapping key {key!r} is not a plain scalar"))
                continue
            key = str(key) if not isinstance(key, str) else key
            if key in out:
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                problems.append(ConfigProblem(smap.file, line, col,
                                              f"duplicate key {key!r}: each key may appear once in a mapping; "
                                              "remove or rename one of them"))
            out[key] = _construct(value_node, path + (key,), smap, problems, loader)
            # The key position is more useful than the value's for "unknown key" errors.
            smap.positions.setdefault(path + (key, "__key__"),
                                      (key_node.start_mark.line + 1, key_node.start_mark.column + 1))
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(child, path + (i,), smap, problems, loader) for i, child in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def load_yaml_text(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse YAML text into plain data plus its source map; syntax errors raise ConfigError with a position."""
    smap = SourceMap(file)
    problems: list[ConfigProblem] = []
    try:
        loader = _UniqueKeyLoader(text)
        try:
            root = loader.get_single_node()
            data = {} if root is None else _construct(root, (), smap, problems, loader)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or "invalid YAML"
        ctx = f" ({exc.context})" if exc.context else ""
        raise ConfigError([ConfigProblem(file, line, col,
                                         f"YAML syntax error: {what}{ctx}; check indentation and quoting")])
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(file, 1, 1, f"YAML error: {exc}")])
    if problems:
        raise ConfigError(problems)
    return data, smap


def load_yaml_file(path: str | Path) -> tuple[Any, SourceMap]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(str(p), 0, 0, "file not found: check the path")])
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(str(p), 1, 1, f"file is not UTF-8 ({exc.reason}): save it as UTF-8")])
    return load_yaml_text(text, str(p))


def _describe(err: dict) -> str:
    kind = err.get("type", "")
    msg = err.get("msg", "invalid value")
    loc = err.get("loc", ())
    key = ".".join(str(x) for x in loc) or "(top level)"
    if kind == "extra_forbidden":
        return f"unknown key {loc[-1]!r} at {key}: remove it or check its spelling"
    if kind == "missing":
        return f"missing required key {loc[-1]!r} at {key}: add it"
    inp = err.get("input")
    shown = "" if isinstance(inp, (dict, list)) else f" (got {inp!r})"
    return f"{key}: {msg}{shown}"


def validation_problems(exc: ValidationError, smap: SourceMap, prefix: Path_ = ()) -> list[ConfigProblem]:
    problems = []
    for err in exc.errors():
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        path = prefix + loc
        if err.get("type") == "extra_forbidden":
            key_path = path + ("__key__",)
            line, col = smap.positions.get(key_path, smap.locate(path))
            problems.append(ConfigProblem(smap.file, line, col, _describe({**err, "loc": loc})))
        elif err.get("type") == "missing":
            problems.append(smap.problem(path[:-1], _describe({**err, "loc": loc})))
        else:
            problems.append(smap.problem(path, _describe({**err, "loc": loc})))
    return problems


def validate(model: type[M], data: Any, smap: SourceMap, prefix: Path_ = ()) -> M:
    """Validate plain data against a pydantic model; errors become ConfigError with file:line:column."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, smap, prefix)) from None
