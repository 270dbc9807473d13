"""Settings as a command loads them: a mistake names its variable in one line.

pydantic reports a bad value as a traceback naming the *field* (``batch_max_events``); an
operator set a *variable* (``CRISIS_BATCH_MAX_EVENTS``), and a typo in a variable name is not
an error at all. :func:`load_settings` turns validation errors into one
:class:`~stream.errors.ConfigError` line per variable, and :func:`unknown_variables` names each
``CRISIS_*`` variable nothing reads, with the closest setting.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from stream.errors import ConfigError
from stream.settings import CLIENT_PROPERTY_SETTINGS, Settings

__all__ = [
    "OTHER_VARIABLES",
    "describe_errors",
    "load_settings",
    "setting_variables",
    "unknown_variables",
]

PREFIX = "CRISIS_"
#: ``CRISIS_*`` variables read outside :class:`~stream.settings.Settings`
OTHER_VARIABLES = frozenset(
    {
        # options of `crisis-stream aggregate` (stream/cli/aggregate.py)
        "CRISIS_AGG_APP_ID",
        "CRISIS_AGG_WINDOW_S",
        "CRISIS_AGG_EXPIRES_S",
        "CRISIS_AGG_MAX_SKEW_S",
        "CRISIS_AGG_WEB_PORT",
        "CRISIS_AGG_WEB_BIND",
        "CRISIS_AGG_PARTITIONS",
        "CRISIS_AGG_REPLICATION",
        "CRISIS_AGG_GROUP_INSTANCE_ID",
        # data and build paths (stream/data, stream/build)
        "CRISIS_STREAM_DATA",
        "CRISIS_STREAM_E5_DIR",
        "CRISIS_STREAM_MPNET_DIR",
        "CRISIS_STREAM_FINETUNE",
        # the container image: which role its healthcheck probes (deploy/healthcheck.py)
        "CRISIS_ROLE",
        # tests: the crash hook (stream/ops/faults.py) and the bundle the test suite uses
        "CRISIS_FAULT_CRASH",
        "CRISIS_TEST_BUNDLE",
    }
)
_FIELD_OF_PROPERTY = {field: prop for prop, field in CLIENT_PROPERTY_SETTINGS.items()}


def _variable(field: str) -> str:
    return f"{PREFIX}{field.upper()}"


def setting_variables() -> frozenset[str]:
    """Every variable a setting reads (``CRISIS_<FIELD>``)."""
    return frozenset(_variable(name) for name in Settings.model_fields)


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per ``CRISIS_*`` variable that nothing reads, with the closest known name."""
    env = os.environ if environ is None else environ
    known = setting_variables() | OTHER_VARIABLES
    out = []
    for name in sorted(n for n in env if n.upper().startswith(PREFIX)):
        if name.upper() in known:  # pydantic-settings reads names case-insensitively
            continue
        close = difflib.get_close_matches(name.upper(), sorted(known), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        out.append(f"{name} is not a setting{hint}")
    return out


def _message(error: Any) -> str:
    msg = str(error["msg"]).removeprefix("Value error, ")
    if msg[1:2].islower():  # "Input should ...", not a variable name
        msg = msg[:1].lower() + msg[1:]
    return msg


def _where(field: str, env: Mapping[str, str], overrides: Mapping[str, Any]) -> str:
    """The variable a bad value came from: its own, or the client.properties key filling it."""
    prop = _FIELD_OF_PROPERTY.get(field)
    own = _variable(field)
    from_file = (
        prop is not None
        and env.get("CRISIS_CLIENT_PROPERTIES")
        and own not in {n.upper() for n in env}
        and field not in overrides
    )
    return f"{prop} in CRISIS_CLIENT_PROPERTIES" if from_file else own


def describe_errors(
    exc: ValidationError,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> str:
    """One line for a settings ``ValidationError``: ``VARIABLE: what is wrong`` per error, never
    the input (``hide_input_in_errors``; messages say what was expected, not what was given)."""
    env = os.environ if environ is None else environ
    parts = []
    for error in exc.errors(include_input=False):
        loc = error.get("loc") or ()
        field = str(loc[0]) if loc else ""
        if field in Settings.model_fields:
            parts.append(f"{_where(field, env, overrides or {})}: {_message(error)}")
        else:
            parts.append(_message(error))
    return "; ".join(parts)


def load_settings(**overrides: Any) -> Settings:
    """:class:`~stream.settings.Settings` from the environment and ``overrides``;
    :class:`~stream.errors.ConfigError` with one line naming the variable if they are invalid."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, overrides=overrides)) from None
