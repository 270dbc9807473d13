"""``client.properties`` files, as managed Kafka services hand them out, made fit for librdkafka.

Confluent Cloud, MSK and Aiven give a Java properties file (``bootstrap.servers=...``,
``security.protocol=SASL_SSL``, ``sasl.jaas.config=...``). librdkafka refuses a client outright
for one property it does not know, and several of those files' keys are Java-only, so the file
is cleaned before any client sees it:

* ``sasl.jaas.config`` with ``PlainLoginModule`` or ``ScramLoginModule`` becomes
  ``sasl.username`` / ``sasl.password`` (librdkafka has no JAAS); any other login module is
  dropped with a warning;
* ``sasl.mechanisms`` (librdkafka's alias) is read as ``sasl.mechanism``;
* keys the installed librdkafka does not know (``ssl.truststore.*``, ``key.serializer``,
  ``schema.registry.url``, ``basic.auth.*``, ``default.api.timeout.ms``, ...) are dropped with a
  warning; librdkafka itself is asked, so a key it learns in a later version is kept;
* keys the worker sets itself for at-least-once delivery (:data:`WORKER_OWNED`) are dropped with
  a warning: a provider's ``acks=1`` must not weaken the worker's ``acks=all``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "WORKER_OWNED",
    "ClientProperties",
    "clean_properties",
    "librdkafka_knows",
    "parse_properties",
    "read_client_properties",
]

#: properties the worker's clients set themselves: idempotent ``acks=all`` producers and
#: consumers that store offsets only after a batch is delivered
WORKER_OWNED = frozenset(
    {
        "acks",
        "request.required.acks",
        "enable.idempotence",
        "enable.auto.commit",
        "enable.auto.offset.store",
    }
)
_ALIASES = {"sasl.mechanisms": "sasl.mechanism", "metadata.broker.list": "bootstrap.servers"}
_JAAS_MODULES = ("PlainLoginModule", "ScramLoginModule")
_JAAS_OPTION = re.compile(r"""(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|([^\s;]+))""")
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_PROBE = "crisis.stream.probe"


@dataclass(frozen=True)
class ClientProperties:
    """The librdkafka properties of one file and what was dropped from it, and why."""

    properties: dict[str, str]
    warnings: list[str]


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2 : i + 6]):
                out.append(chr(int(text[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _logical_lines(text: str) -> list[str]:
    """Lines with comments and blanks removed and ``\\`` continuations joined."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2:  # an odd number of backslashes continues the line
            pending += line[:-1]
            continue
        lines.append(pending + line)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def parse_properties(text: str) -> dict[str, str]:
    """Java ``.properties`` text: ``key=value``, ``key: value`` or ``key value``; ``#`` and
    ``!`` comments; ``\\`` continues a line and escapes a character; the last key wins."""
    out: dict[str, str] = {}
    for line in _logical_lines(text):
        match = re.match(r"((?:[^\\=:\s]|\\.)*)\s*[=:]?\s*(.*)", line, re.DOTALL)
        assert match is not None  # the pattern matches any line
        key, value = _unescape(match.group(1)), _unescape(match.group(2))
        if key:
            out[key] = value
    return out


def _jaas(value: str) -> dict[str, str] | None:
    """``sasl.username`` / ``sasl.password`` from a PLAIN or SCRAM JAAS line, else None."""
    if not any(module in value for module in _JAAS_MODULES):
        return None
    options = {
        m.group(1): m.group(2) or m.group(3) or m.group(4) for m in _JAAS_OPTION.finditer(value)
    }
    if "username" not in options or "password" not in options:
        return None
    return {"sasl.username": options["username"], "sasl.password": options["password"]}


def librdkafka_knows(key: str, value: str) -> bool:
    """Whether librdkafka has the property ``key`` (asked by setting it, then a property that
    cannot exist, so no client is ever created). An invalid *value* still counts as known:
    librdkafka names it when the client is created."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({key: value, _PROBE: "1", "log_level": 0})
    except KafkaException as exc:
        message = exc.args[0].str() if exc.args else str(exc)
        if _PROBE in message:
            return True
        return "No such configuration property" not in message and "not supported" not in message
    return True  # pragma: no cover - the probe property never exists


def clean_properties(raw: dict[str, str], source: str) -> ClientProperties:
    """``raw`` made fit for librdkafka (see the module docstring); warnings name ``source``."""
    props: dict[str, str] = {}
    warnings: list[str] = []
    for key, value in raw.items():
        key = _ALIASES.get(key, key)
        if key == "sasl.jaas.config":
            creds = _jaas(value)
            if creds is None:
                warnings.append(
                    f"{source}: sasl.jaas.config dropped: librdkafka has no JAAS and only PLAIN/"
                    "SCRAM user names and passwords are taken from it"
                )
            else:
                for name, item in creds.items():
                    props.setdefault(name, item)
        elif key in WORKER_OWNED:
            warnings.append(
                f"{source}: {key} dropped: the worker sets it for at-least-once delivery"
            )
        elif not librdkafka_knows(key, value):
            warnings.append(f"{source}: {key} dropped: not a librdkafka property")
        else:
            props[key] = value
    return ClientProperties(props, warnings)


def read_client_properties(path: Path) -> ClientProperties:
    """The cleaned properties of the file at ``path`` (``ValueError`` if it cannot be read)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it ({exc.strerror})") from None
    except UnicodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    return clean_properties(parse_properties(text), path.name)
