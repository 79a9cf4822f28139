"""Configuration is typed data: OmegaConf YAML under configs/, merged with `key=value` overrides into
dataclasses whose fields each carry a one-line docstring.

`load_typed(Schema, path, overrides)` merges the YAML (and the files it `extends:`) and the overrides onto
the schema in struct mode, so an unknown key or a value of the wrong type is a `ConfigError` naming the
key (and, for a typo, the nearest valid one); the dataclasses' `__post_init__` check ranges. The
`${oc.env:…}` values a config reads from the environment are resolved for the run but written back as
the interpolation (`to_yaml`), so no secret lands in a saved config.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import textwrap
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from eegfm.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
T = TypeVar("T")
_ENV_KEYS = "_env_interpolations"  # attribute of a loaded config: {dotted key: "${oc.env:…}"}


def load_config(path: str | Path, overrides: list[str] | None = None) -> DictConfig:
    """Load one YAML file and apply dotted `key=value` overrides (values parsed as YAML), untyped.

    A file may start from another: `extends: base.yaml` (relative to the file) is loaded first and the
    file's own keys are merged over it, so sizes and variants state only what they change.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # a YAML syntax error: name the file, keep the parser's position
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if "extends" in cfg:
        base = load_config(path.parent / cfg.pop("extends"))
        cfg = OmegaConf.merge(base, cfg)
    if overrides:
        cfg = OmegaConf.merge(cfg, parse_overrides(overrides))
    return cfg


def parse_overrides(overrides: list[str]) -> DictConfig:
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError(f"overrides must look like key=value, got {bad}")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot parse the overrides {overrides}: {e}") from None


def load_typed(schema: type[T], path: str | Path, overrides: list[str] | None = None) -> T:
    """`path` (with what it extends) and `overrides`, checked against the dataclass `schema`."""
    return typed(schema, load_config(path), overrides, source=str(path))


def typed(
    schema: type[T], raw: DictConfig | dict, overrides: list[str] | None = None, source: str = "config"
) -> T:
    """`raw` (and `overrides` on top) as an instance of `schema`: unknown keys, wrong types and values out
    of range are `ConfigError`s naming the key."""
    base = OmegaConf.structured(schema)
    OmegaConf.set_struct(base, True)
    _open_dict_fields(base)
    layers = [raw if isinstance(raw, DictConfig) else OmegaConf.create(raw)]
    if overrides:
        layers.append(parse_overrides(overrides))
    try:
        merged = base
        for layer in layers:
            merged = OmegaConf.merge(merged, layer)
        env = _env_interpolations(merged)
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{source}: {_explain(e, schema)}") from None
    except (ConfigError, ValueError) as e:  # a __post_init__ range check: name the file too
        raise ConfigError(f"{source}: {e}") from None
    object.__setattr__(obj, _ENV_KEYS, env)
    return obj


def _open_dict_fields(node: DictConfig) -> None:
    """Let `dict[str, …]` fields (environment variables, node selectors) take keys the schema cannot
    name; the dataclass sections around them stay strict."""
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none():
            if dataclasses.is_dataclass(child._metadata.object_type):
                _open_dict_fields(child)
            else:
                OmegaConf.set_struct(child, False)


def to_container(cfg: Any, *, keep_env: bool = True) -> dict[str, Any]:
    """A loaded config as plain dicts and lists; values read with `${oc.env:…}` stay interpolations."""
    plain = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    if keep_env:
        for key, expression in getattr(cfg, _ENV_KEYS, {}).items():
            *parents, leaf = key.split(".")
            node = plain
            for part in parents:
                node = node[int(part)] if isinstance(node, list) else node[part]
            node[int(leaf) if isinstance(node, list) else leaf] = expression
    return plain


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML, as `config.yaml` and checkpoints keep it (no secret from the env)."""
    return OmegaConf.to_yaml(OmegaConf.create(to_container(cfg)))


def documented_yaml(cfg: Any) -> str:
    """The resolved config as YAML with each field's docstring as a comment (`--print-config`)."""
    lines: list[str] = []

    def emit(obj: Any, indent: str) -> None:
        docs = field_docs(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            comment = f"  # {docs[f.name]}" if f.name in docs else ""
            if dataclasses.is_dataclass(value):
                lines.append(f"{indent}{f.name}:{comment}")
                emit(value, indent + "  ")
            else:
                rendered = OmegaConf.to_yaml(OmegaConf.create({f.name: _plain(value)})).rstrip("\n")
                first, *rest = rendered.split("\n")
                lines.append(f"{indent}{first}{comment}")
                lines.extend(indent + line for line in rest)

    emit(cfg, "")
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, tuple):
        return list(value)
    return value


@cache
def field_docs(cls: type) -> dict[str, str]:
    """{field: its docstring}: the string literal right after each field of a dataclass (as litgpt's
    `TrainArgs`), read from the source."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body
        for node, after in zip(body, [*body[1:], None], strict=True):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _env_interpolations(cfg: DictConfig) -> dict[str, str]:
    """{dotted key: expression} of every value taken from the environment with `${oc.env:…}`."""
    found: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
        for key in keys:
            dotted = f"{prefix}{key}"
            raw = node._get_node(key)._value() if node._get_node(key) is not None else None
            if isinstance(raw, str) and "oc.env:" in raw:
                found[dotted] = raw
            else:
                child = node._get_node(key)
                if isinstance(child, DictConfig | ListConfig) and not child._is_none():
                    walk(child, dotted + ".")

    walk(cfg, "")
    return found


def _explain(error: OmegaConfBaseException, schema: type) -> str:
    """OmegaConf's error as one sentence naming the key, with the nearest valid key for a typo."""
    key = getattr(error, "full_key", None) or "?"
    message = str(error).split("\n")[0]
    if isinstance(error, ConfigKeyError | ConfigAttributeError):
        parent, _, leaf = key.rpartition(".")
        valid = _keys_at(schema, parent)
        near = difflib.get_close_matches(leaf, valid, n=1)
        hint = f"; did you mean {(parent + '.' if parent else '') + near[0]}?" if near else ""
        return f"unknown key {key}{hint} (valid here: {', '.join(sorted(valid))})"
    return f"{key}: {message}"


def _keys_at(schema: type, dotted: str) -> list[str]:
    cls: Any = schema
    for part in filter(None, dotted.split(".")):
        hints = {f.name: f for f in dataclasses.fields(cls)}
        if part not in hints:
            return []
        factory = hints[part].default_factory
        cls = type(factory()) if factory is not dataclasses.MISSING else hints[part].type
        if not dataclasses.is_dataclass(cls):
            return []
    return [f.name for f in dataclasses.fields(cls)]
