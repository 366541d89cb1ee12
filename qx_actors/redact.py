"""Keeping secrets out of everything qx_actors shows: messages, logs, the CLI, ``/health``.

Two tools:

* :func:`redact_url` shows a database URL (any scheme, ``user:password@`` userinfo, with or
  without a user, percent-encoded or not, ``?password=`` query parameters) or a libpq
  key/value DSN (``host=... password=...``) with its password replaced by ``***``;
* a process-wide registry of known secrets: :func:`register_url_secret` (called with the
  database URL whenever a config is loaded, an engine built or a database opened) records the
  password in every form it may take in a text (as written, percent-decoded, percent-encoded,
  ``repr``/JSON escaped), and :func:`redact_text` replaces every registered secret, and the
  password of any URL or ``password=`` pair it finds, by ``***``.

:func:`redact_text` is idempotent and safe to apply to any text that leaves the process.
Secrets shorter than :data:`MIN_SECRET_LENGTH` are not scrubbed from free text (replacing every
``"ab"`` would garble every message); a password inside a URL or a ``password=`` pair is
redacted whatever its length.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "clear_secrets",
    "is_registered",
    "redact_text",
    "redact_url",
    "redact_value",
    "register_secret",
    "register_url_secret",
    "url_passwords",
]

#: What a password is replaced by.
MASK = "***"
#: Registered secrets shorter than this are not scrubbed from free text.
MIN_SECRET_LENGTH = 4

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<rest>.*)$", re.DOTALL)
#: ``password=value`` (libpq DSN or URL query): the value quoted (DSN) or up to a separator.
_PASSWORD_PAIR = re.compile(
    r"""(?P<key>\b[A-Za-z0-9_]*?pass(?:word|wd)\s*=\s*)"""
    r"""(?P<value>'(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|[^\s&#;,'"]+)""",
    re.IGNORECASE,
)
#: A mapping key whose value is a secret whatever it holds.
_SECRET_KEY = re.compile(r"(?i)(?:pass(?:word|wd)|secret)$")
#: A URL with userinfo inside free text: the scheme, then the authority up to its last ``@``.
_URL_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#@]*(?:@[^\s/?#@]*)*)@"
)


def _password_span(url: str) -> tuple[int, int] | None:
    """Where the userinfo password of a URL is (``start, end`` in ``url``), or None.

    The password runs from the first ``:`` of the authority to the last ``@`` of the URL, so
    that an unencoded ``@``, ``/``, ``?`` or ``#`` in it can't cut it short: in a URL that also
    has an ``@`` in its path or query this covers more than the password, never less.
    """
    match = _SCHEME.match(url)
    if match is None:
        return None
    offset, rest = match.start("rest"), match["rest"]
    authority_end = len(rest)
    for stop in "/?#":
        found = rest.find(stop)
        if found != -1:
            authority_end = min(authority_end, found)
    colon = rest.find(":")
    at = rest.rfind("@")
    if colon == -1 or colon > authority_end or at <= colon + 1:
        return None  # no userinfo password (or an empty one)
    return offset + colon + 1, offset + at


def _redact_userinfo(userinfo: str) -> str:
    user, sep, password = userinfo.partition(":")
    if not sep or not password:
        return userinfo
    return f"{user}:{MASK}"


def _unquote_pair_value(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _redact_pairs(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        if _unquote_pair_value(match["value"]) in ("", MASK):
            return match[0]
        return f"{match['key']}{MASK}"

    return _PASSWORD_PAIR.sub(replace, text)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (a DSN's ``password=`` value too).

    ``postgresql://user:s3cret@host:5432/db`` -> ``postgresql://user:***@host:5432/db``;
    ``host=db password='a b'`` -> ``host=db password=***``. Any scheme; with or without a user;
    the password percent-encoded or not (an unencoded ``@``, ``:``, ``/``, ``?`` or ``#`` in it
    included). A URL without a password is returned unchanged.
    """
    span = _password_span(url)
    if span is not None:
        start, end = span
        return url[:start] + MASK + _redact_pairs(url[end:])
    return _redact_pairs(url)


def url_passwords(url: str) -> list[str]:
    """The passwords in a URL (the userinfo's, as written: still percent-encoded, and any
    ``password=`` query parameter) or a DSN's ``password=`` values."""
    found: list[str] = []
    span = _password_span(url)
    if span is not None:
        found.append(url[span[0] : span[1]])
    for pair in _PASSWORD_PAIR.finditer(url):
        found.append(_unquote_pair_value(pair["value"]))
    return [p for p in found if p and p != MASK]


# --- the registry of known secrets ------------------------------------------------------------


class _Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self.pattern: re.Pattern[str] | None = None
        #: a secret holds part of the mask: a replacement may form it anew, so repeat
        self.repeat = False

    def add(self, forms: set[str]) -> None:
        forms = {f for f in forms if len(f) >= MIN_SECRET_LENGTH}
        with self._lock:
            if forms <= self._secrets:
                return
            self._secrets |= forms
            # Longest first: a form that contains another is replaced whole.
            ordered = sorted(self._secrets, key=lambda s: (-len(s), s))
            self.pattern = re.compile("|".join(re.escape(s) for s in ordered))
            self.repeat = any("*" in s for s in ordered)

    def clear(self) -> None:
        with self._lock:
            self._secrets.clear()
            self.pattern = None
            self.repeat = False

    def __contains__(self, value: str) -> bool:
        with self._lock:
            return value in self._secrets


_registry = _Registry()


def _forms(secret: str) -> set[str]:
    """The ways ``secret`` may be written in a text: raw, URL-encoded, repr/JSON escaped."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret, safe=""), quote(secret)}
    forms.add(repr(secret)[1:-1])
    forms.add(json.dumps(secret)[1:-1])
    forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    return forms


def register_secret(secret: str | None) -> None:
    """Scrub ``secret`` (and its encoded forms) from every text :func:`redact_text` sees."""
    if not secret:
        return
    forms = _forms(secret)
    decoded = unquote(secret)
    if decoded != secret:
        forms |= _forms(decoded)
    _registry.add(forms)


def register_url_secret(url: str | None) -> None:
    """Register the password of a database URL or DSN (nothing when it has none)."""
    if url:
        for password in url_passwords(url):
            register_secret(password)


def is_registered(secret: str) -> bool:
    """Whether ``secret`` (as given) is scrubbed from free text."""
    return secret in _registry


def clear_secrets() -> None:
    """Forget every registered secret (for tests)."""
    _registry.clear()


# --- scrubbing text -----------------------------------------------------------------------


def _redact_url_match(match: re.Match[str]) -> str:
    return f"{match['scheme']}{_redact_userinfo(match['userinfo'])}@"


def redact_text(text: str) -> str:
    """``text`` with every registered secret, and every password of a URL or ``password=``
    pair in it, replaced by ``***``."""
    pattern = _registry.pattern
    if pattern is not None:
        text, count = pattern.subn(MASK, text)
        while count and _registry.repeat:
            text, count = pattern.subn(MASK, text)
    if "://" in text:
        text = _URL_USERINFO.sub(_redact_url_match, text)
    if "=" in text:
        text = _redact_pairs(text)
    return text


def redact_value(value: Any) -> Any:
    """``value`` with :func:`redact_text` applied to every string in it (through mappings,
    lists and tuples; the text under a key such as ``password`` or ``db_secret`` becomes
    ``***`` whole); any other object but a number, bool or None becomes its redacted ``str``,
    since that is how it would be shown."""
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {
            (redact_value(k) if isinstance(k, str) else k): (
                MASK
                if isinstance(k, str) and isinstance(v, str) and v and _SECRET_KEY.search(k)
                else redact_value(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return redact_text(str(value))
