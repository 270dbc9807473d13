"""The configuration reference: every :class:`~stream.settings.Settings` field as a Markdown
table row (environment variable, type, default, description).

``docs/configuration.md`` is this function's output; a test fails when the committed file is
stale. Regenerate it with ``crisis-stream config --reference > docs/configuration.md``.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from stream.settings import REPO_ROOT, Settings

__all__ = ["render_reference"]

_HEADER = """# Configuration

Every setting of the worker reads `CRISIS_<NAME>` from the environment (pydantic-settings; a
`.env` file is not read). List settings take a JSON list or comma-separated items; settings
with a closed set of values list them as the type (any case is accepted). Secrets
(`SecretStr`, and secret properties in `CRISIS_KAFKA`) never appear in logs, `repr` or
validation errors; each secret can instead be read from a file named by `CRISIS_<NAME>_FILE`
(e.g. `CRISIS_SASL_PASSWORD_FILE=/run/secrets/sasl_password`; one trailing newline is dropped).

An invalid value stops every command with one line naming the variable (exit code 3); a
`CRISIS_*` variable that is not a setting gets a warning with the closest name.
`crisis-stream config` prints the effective settings (secrets masked). Kafka connection
settings can also come from a `client.properties` file (`CRISIS_CLIENT_PROPERTIES`; see
[operations.md](operations.md#kafka-connection-and-security)).

Generated from `stream/settings.py`; regenerate with
`crisis-stream config --reference > docs/configuration.md` (a test fails when this file is stale).

| Variable | Type | Default | Description |
| --- | --- | --- | --- |
"""

#: defaults computed when the worker starts, shown as what they mean
_COMPUTED = {"worker_id": "`<hostname>-<pid>`"}


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{origin.__name__}[{args}]"
    if annotation is type(None):
        return "None"
    return str(getattr(annotation, "__name__", annotation))


def _default(name: str, field: FieldInfo) -> str:
    if name in _COMPUTED:
        return _COMPUTED[name]
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, Path):
        try:
            return f"`<repo>/{value.relative_to(REPO_ROOT).as_posix()}`"
        except ValueError:
            return f"`{value.as_posix()}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"`{value}`"
    if isinstance(value, list | dict) and not value:
        return "empty"
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_reference() -> str:
    """The Markdown reference, one row per setting in declaration order."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    rows = []
    for name, field in Settings.model_fields.items():
        rows.append(
            f"| `{prefix}{name.upper()}` | {_type_name(field.annotation)} | "
            f"{_default(name, field)} | {_cell(field.description or '')} |"
        )
    return _HEADER + "\n".join(rows) + "\n"
