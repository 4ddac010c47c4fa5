"""A database DSN checked once, at config time, and written as the URL asyncpg takes.

Both libpq syntaxes are accepted: `postgresql://user:password@host:5432/dbname?sslmode=...`
and keyword/value pairs (`host=db port=5432 dbname=w user=u password='a b'`). Errors never
quote the DSN: a malformed one may put the password where a port or a key was expected.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote_plus, unquote, urlencode, urlsplit, urlunsplit

SCHEMES = ("postgresql", "postgres")
URL_HINT = (
    "write postgresql://user:password@host:5432/dbname "
    "(percent-encode @ : / ? # in the password, e.g. @ as %40)"
)
# libpq keywords asyncpg understands (as URL query parameters).
KEYWORDS = frozenset(
    {
        "host",
        "port",
        "user",
        "password",
        "dbname",
        "passfile",
        "sslmode",
        "sslcert",
        "sslkey",
        "sslrootcert",
        "sslcrl",
        "sslpassword",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "target_session_attrs",
        "krbsrvname",
        "gsslib",
        "service",
        "application_name",
    }
)
SECRET_KEYWORDS = ("password", "sslpassword")
_KEY = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*")


def normalize_dsn(text: str) -> str:
    """The DSN as a postgresql:// URL; ValueError saying what is wrong (never quoting it)."""
    dsn = text.strip()
    if not dsn:
        raise ValueError(f"is empty; {URL_HINT}")
    scheme, sep, _ = dsn.partition("://")
    if sep:
        if scheme.lower() not in SCHEMES:
            raise ValueError(f"the scheme must be postgresql:// or postgres://; {URL_HINT}")
        return _check_url(dsn)
    if "=" in dsn:
        return _keywords_to_url(_parse_keywords(dsn))
    raise ValueError(f"is neither a URL nor key=value pairs; {URL_HINT}")


def dsn_secrets(dsn: str) -> list[str]:
    """The passwords in a normalized DSN (as written and decoded), to scrub from output."""
    parts = urlsplit(dsn)
    found: list[str] = []
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    for key, value in parse_qsl(parts.query):
        if key in SECRET_KEYWORDS and value:
            found += [value, quote_plus(value)]
    return found


def _check_url(dsn: str) -> str:
    try:
        parts = urlsplit(dsn)
    except ValueError:  # e.g. an unbalanced [ in the host
        raise ValueError(f"is not a valid URL; {URL_HINT}") from None
    if parts.netloc.count("@") > 1:
        raise ValueError(f"the user info holds an unencoded @; {URL_HINT}")
    for host in parts.netloc.rpartition("@")[2].split(","):
        _check_port(
            host.rpartition("]")[2].removeprefix(":")
            if host.startswith("[")
            else host.partition(":")[2]
        )
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise ValueError(
            "the query string after ? is malformed (write key=value pairs joined by &)"
        ) from None
    for key, value in query:
        if key == "port":
            for port in value.split(","):
                _check_port(port)
    # The query written again, so that a key spelt with %-escapes is a plain key here too.
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def _check_port(port: str) -> None:
    if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"a port is not a number between 1 and 65535; {URL_HINT}")


def _parse_keywords(dsn: str) -> dict[str, str]:
    """libpq's key = value syntax: values bare or in single quotes, backslash escapes."""
    pairs: dict[str, str] = {}
    last_key = ""
    pos = 0
    while pos < len(dsn):
        if dsn[pos:].strip() == "":
            break
        match = _KEY.match(dsn, pos)
        if match is None:
            raise ValueError(
                f"expected key=value at character {pos + 1}; {URL_HINT}, "
                "or key=value pairs (host=db port=5432 dbname=w user=u password='a b')"
            )
        key = match.group(1).lower()
        if key not in KEYWORDS:
            # After an unquoted password with a space, the "key" is part of the password.
            shown = "a keyword" if last_key in SECRET_KEYWORDS else repr(key)
            raise ValueError(
                f"{shown} is not a known keyword (supported: {', '.join(sorted(KEYWORDS))}; "
                "quote values with spaces: password='a b')"
            )
        value, pos = _keyword_value(dsn, match.end(), key)
        pairs[key] = value
        last_key = key
    return pairs


def _keyword_value(dsn: str, pos: int, key: str) -> tuple[str, int]:
    chars: list[str] = []
    quoted = pos < len(dsn) and dsn[pos] == "'"
    if quoted:
        pos += 1
    while pos < len(dsn):
        char = dsn[pos]
        if char == "\\" and pos + 1 < len(dsn):
            chars.append(dsn[pos + 1])
            pos += 2
            continue
        if quoted and char == "'":
            return "".join(chars), pos + 1
        if not quoted and char.isspace():
            break
        chars.append(char)
        pos += 1
    if quoted:
        raise ValueError(f"the value of {key} has no closing quote")
    return "".join(chars), pos


def _keywords_to_url(pairs: dict[str, str]) -> str:
    for port in pairs.get("port", "").split(","):
        _check_port(port)
    return f"postgresql://?{urlencode(pairs)}"
