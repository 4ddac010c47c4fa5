"""Secrets out of text meant for people: URLs without query strings, DSNs without passwords,
and, as a last net, every known secret value replaced in error lines and log lines."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# Shorter values are not scrubbed from free text: "k" or "pg" would mask half of every line.
MIN_SCRUBBED_CHARS = 4
_SECRETS: set[str] = set()

# password=... and sslpassword=... in a URL query (up to the next & or #).
_URL_PASSWORD = re.compile(r"(?i)((?:^|[?&;])(?:ssl)?password=)[^&#]*")
# password=... in a keyword/value DSN: a quoted value (backslash escapes), else up to a space.
_KEYWORD_PASSWORD = re.compile(
    r"(?i)(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|(?:[^\s'\\]|\\.)+)"
)


def redact_url(url: str) -> str:
    """The URL without its query string (chunk URLs may carry signed tokens)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def redact_dsn(dsn: str) -> str:
    """The DSN without any password, whatever its syntax: `user:password@` in a URL (an
    unencoded `@`, `/` or `?` in it included), `?password=`/`?sslpassword=` in its query,
    `password=...` (quoted or not, spaces around `=`) in a keyword/value DSN."""
    if "://" not in dsn:
        return scrub(_KEYWORD_PASSWORD.sub(rf"\1{MASK}", dsn))
    scheme, rest = dsn.split("://", 1)
    if "@" in rest:
        # Everything before the last @ is the user info (or text that swallowed part of the
        # host or query): keep only what precedes its first colon, the user name.
        creds, rest = rest.rsplit("@", 1)
        rest = f"{creds.partition(':')[0]}@{rest}"
    return scrub(_URL_PASSWORD.sub(rf"\1{MASK}", f"{scheme}://{rest}"))


def register_secret(value: str) -> None:
    """Remember a secret so that `scrub` masks it wherever it shows up."""
    if len(value) >= MIN_SCRUBBED_CHARS:
        _SECRETS.add(value)


def scrub(text: str) -> str:
    """`text` with every registered secret (API keys, the database password) masked."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text
