"""What a launch config may put into a rendered sbatch script, and how: a config value is data, never shell.

An sbatch script is shell plus `#SBATCH` directives, so a value with `;`, a newline, `$(…)` or a backtick
pasted into it would run commands or add directives on the cluster. Values that land in `#SBATCH` lines
(job name, partition, account, QoS, time, log folder) and in comments must match a narrow pattern, since
no quoting works there; environment keys must be shell identifiers; everything else is quoted.

A value read from the environment (`${oc.env:NAME}`) is rendered as a reference, `"${NAME}"`, that the
node's environment resolves when the job runs, so no secret is written into the script saved with the run.
Credentials given as literal values are refused: they would sit in the launch config, the rendered script
and the job's record.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from eegfm.errors import ConfigError

ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# SLURM names: job name, partition (a comma-separated list), account, QoS.
SLURM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
SLURM_PARTITIONS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*(,[A-Za-z0-9_][A-Za-z0-9_.+-]*)*")
SLURM_TIME = re.compile(r"[0-9]+(-[0-9]+)?(:[0-9]+){0,2}|UNLIMITED|INFINITE")
# A path in an #SBATCH line: sbatch splits directives at whitespace and no quoting is reliable there.
DIRECTIVE_PATH = re.compile(r"[A-Za-z0-9_./%+@=,:~-]+")
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

# ${oc.env:NAME} or ${oc.env:NAME,default}, as OmegaConf writes an environment lookup.
_ENV_LOOKUP = re.compile(r"\$\{oc\.env:\s*([^,}\s]*)\s*(?:,\s*([^}]*?)\s*)?\}")
_SAFE_DEFAULT = re.compile(r"[A-Za-z0-9_./:@+=,%~-]*")


def check_pattern(key: str, value: Any, pattern: re.Pattern[str], what: str) -> None:
    """Refuse `value` of `key` unless it matches `pattern` whole (it is pasted into an #SBATCH line)."""
    if value is None:
        return
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ConfigError(f"{key}={value!r} is not {what}; it goes into the sbatch script unquoted")


def check_line(key: str, value: Any) -> None:
    """Refuse a newline or another control character in `value`: one would start a new script line."""
    if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in str(value)):
        raise ConfigError(f"{key}={str(value)!r} has a newline or control character; give it on one line")


def check_env_keys(section: str, env: dict[str, Any]) -> None:
    """Environment keys must be shell identifiers: `export KEY=…` is pasted unquoted."""
    for key in env:
        if not isinstance(key, str) or not ENV_KEY.fullmatch(key):
            raise ConfigError(f"{section}.env: {key!r} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)")


def refuse_inline_credentials(section: str, env: dict[str, Any], written: dict[str, Any]) -> None:
    """Credentials only as `${oc.env:…}` references (`written`: the env section as written), never as
    literals, which would sit in the config, the rendered script and the job's record."""
    for key in env:
        if key in CREDENTIALS and not _is_env_lookup(written.get(key)):
            raise ConfigError(
                f"{section}.env.{key} is a credential given inline: leave it out (sbatch passes the "
                f"submitter's environment to the job) or write ${{oc.env:{key}}}, which the script keeps "
                "as a reference that the node resolves"
            )


def _is_env_lookup(raw: Any) -> bool:
    return isinstance(raw, str) and bool(_ENV_LOOKUP.fullmatch(raw.strip()))


def shell_word(key: str, value: Any, raw: Any = None) -> str:
    """One shell word for a config value: `value` quoted, or, where the unresolved `raw` reads the
    environment, a double-quoted word whose `${oc.env:NAME}` parts are `${NAME}` for the node to expand."""
    if not (isinstance(raw, str) and "oc.env:" in raw):
        check_line(key, value)
        return shlex.quote(str(value))
    parts, end = [], 0
    for lookup in _ENV_LOOKUP.finditer(raw):
        parts.append(_double_quoted(key, raw[end : lookup.start()]))
        name, default = lookup[1], lookup[2]
        if not ENV_KEY.fullmatch(name):
            raise ConfigError(f"{key}: {name!r} in {lookup[0]} is not an environment variable name")
        if default is None:
            parts.append(f"${{{name}}}")
        else:
            default = default.strip("'\"")
            if not _SAFE_DEFAULT.fullmatch(default):
                raise ConfigError(
                    f"{key}: the default {default!r} in {lookup[0]} cannot be passed to the job; "
                    "use letters, digits and ./:@+=,%~_-"
                )
            parts.append(f"${{{name}-{default}}}")
        end = lookup.end()
    parts.append(_double_quoted(key, raw[end:]))
    return '"' + "".join(parts) + '"'


def _double_quoted(key: str, literal: str) -> str:
    """Literal text for inside "…": the four characters bash still expands there are escaped."""
    if "${" in literal:
        raise ConfigError(
            f"{key}: only ${{oc.env:NAME}} can be combined with other text in a value passed to the job, "
            f"not {literal!r}"
        )
    check_line(key, literal)
    return re.sub(r'([\\"$`])', r"\\\1", literal)
