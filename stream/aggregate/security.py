"""faust's broker credentials from the worker's librdkafka configuration.

The aggregator runs on faust-streaming, which talks to Kafka through aiokafka, not librdkafka;
it gets its connection from the same settings as the worker (``CRISIS_BOOTSTRAP_SERVERS``,
``CRISIS_SECURITY_PROTOCOL``, ``CRISIS_SASL_*``, ``CRISIS_SSL_*``, ``CRISIS_CLIENT_PROPERTIES``,
``CRISIS_KAFKA``) by translating the librdkafka properties they produce
(:meth:`~stream.settings.Settings.kafka_common`) into ``faust.SASLCredentials`` /
``faust.GSSAPICredentials`` / ``faust.SSLCredentials``. Only the connection and security
properties carry over; other librdkafka tuning has no aiokafka equivalent.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from faust.auth import GSSAPICredentials, SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from stream.errors import ConfigError

__all__ = ["broker_credentials", "broker_urls"]

_SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


def broker_urls(conf: Mapping[str, Any]) -> list[str]:
    """faust's broker URLs for librdkafka's ``host:port,host:port``."""
    hosts = str(conf.get("bootstrap.servers", "")).split(",")
    return [f"kafka://{h.strip()}" for h in hosts if h.strip()]


def _ssl_context(conf: Mapping[str, Any]) -> ssl.SSLContext:
    """The TLS context librdkafka's ``ssl.*`` properties describe."""
    if conf.get("ssl.certificate.pem") or conf.get("ssl.key.pem"):
        raise ConfigError(
            "the aggregator takes the client certificate and key as files: set "
            "CRISIS_SSL_CERTIFICATE_LOCATION and CRISIS_SSL_KEY_LOCATION"
        )
    ca = conf.get("ssl.ca.location")
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=None if ca in (None, "", "probe") else str(ca),
            cadata=conf.get("ssl.ca.pem") or None,
        )
        if conf.get("ssl.certificate.location"):
            context.load_cert_chain(
                str(conf["ssl.certificate.location"]),
                conf.get("ssl.key.location") or None,
                password=conf.get("ssl.key.password") or None,
            )
    except (OSError, ssl.SSLError) as exc:  # the message names the file, never a password
        raise ConfigError(f"the aggregator cannot set up TLS: {exc}") from None
    if str(conf.get("ssl.endpoint.identification.algorithm", "https")).lower() == "none":
        context.check_hostname = False
    if str(conf.get("enable.ssl.certificate.verification", "true")).lower() == "false":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def broker_credentials(conf: Mapping[str, Any]) -> CredentialsT | None:
    """faust's ``broker_credentials`` for a librdkafka configuration (None: plaintext)."""
    protocol = str(conf.get("security.protocol", "PLAINTEXT")).upper()
    context = _ssl_context(conf) if protocol in ("SSL", "SASL_SSL") else None
    if protocol not in _SASL_PROTOCOLS:
        return SSLCredentials(context) if context is not None else None
    mechanism = str(conf.get("sasl.mechanism", "GSSAPI")).upper()  # librdkafka's default
    if mechanism == "GSSAPI":
        return GSSAPICredentials(
            kerberos_service_name=str(conf.get("sasl.kerberos.service.name", "kafka")),
            ssl_context=context,
        )
    if mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        raise ConfigError(f"the aggregator does not support SASL mechanism {mechanism}")
    return SASLCredentials(
        username=conf.get("sasl.username"),
        password=conf.get("sasl.password"),
        ssl_context=context,
        mechanism=mechanism,
    )
