"""Secrets out of URLs: every repr, message, log line and CLI output shows URLs through here.

``redact`` parses a URL's userinfo by hand, because the parsers we would borrow disagree
on hostile passwords: ``urlsplit`` ends the authority at an unescaped ``#``, ``/`` or
``?`` (so the password lands in the path or fragment) and SQLAlchemy splits at the first
``@`` (so the rest of the password becomes the host). When every ``@`` lies inside the
authority, the user name stays and the password becomes ``***``; when an ``@`` comes
after a ``/``, ``?`` or ``#`` the string cannot be parsed unambiguously, and everything
between the scheme and the last ``@`` is hidden. Strings without a scheme (not URLs at
all, such as ``app:pw@host/db``) are hidden up to their last ``@`` too.

``secrets`` lists what must not appear in text we did not write (a driver's message);
``scrub`` replaces those in such text.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import quote, unquote

from sqlalchemy.engine import URL

__all__ = ["HIDDEN", "leaks", "parses", "redact", "scrub", "secrets", "splits_at_first_at"]

HIDDEN: Final = "***"

_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_AUTHORITY_END: Final = re.compile(r"[/?#]")
_PASSWORD_PARAM: Final = re.compile(r"(?i)(password=)[^&\s]*")
_PIECES: Final = re.compile(r"[@/?#:&=]")
_MIN_PIECE: Final = 4
"""Pieces of a password split at URL delimiters are secrets too (a parser that splits
there shows them as a host or a path); shorter ones would blank ordinary words."""


def _userinfo(text: str) -> tuple[int, int, bool] | None:
    """Where the userinfo of ``text`` lies (start, end) and whether it parsed; None if none."""
    scheme = _SCHEME.match(text)
    start = scheme.end() if scheme else 0
    at = text.rfind("@", start)
    if at < 0:
        return None
    end = _AUTHORITY_END.search(text, start)
    parsed = scheme is not None and (end is None or at < end.start())
    return start, at, parsed


def parses(text: str) -> bool:
    """Whether ``urlsplit`` (and so redis-py) reads ``text``'s user info as written.

    Those end the authority at the first ``/``, ``?`` or ``#`` and the user info at the
    authority's last ``@``.
    """
    where = _userinfo(text)
    return where is None or where[2]


def splits_at_first_at(text: str) -> bool:
    """Whether SQLAlchemy (and libpq) read ``text``'s password as written.

    Those end the password at its first ``@``, so it must hold none.
    """
    where = _userinfo(text)
    if where is None:
        return True
    start, at, parsed = where
    if parsed:
        return "@" not in text[start:at].partition(":")[2]
    return text.count("@", start) == 1


def _text(url: object) -> str:
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return str(url)


def redact(url: object) -> str:
    """``url`` as text safe to print: no password, in the userinfo or in a query option."""
    text = _text(url)
    where = _userinfo(text)
    if where is not None:
        start, at, parsed = where
        userinfo = text[start:at]
        if parsed:
            user, colon, _ = userinfo.partition(":")
            shown = f"{user}:{HIDDEN}" if colon else user
        else:
            shown = HIDDEN
        text = f"{text[:start]}{shown}{text[at:]}"
    return _PASSWORD_PARAM.sub(rf"\g<1>{HIDDEN}", text)


def secrets(url: object) -> tuple[str, ...]:
    """Every string ``redact`` hides from ``url``, as typed and percent-decoded and -encoded.

    For a SQLAlchemy ``URL`` that is its password; for text, the password part of the
    userinfo (all of it when it cannot be parsed), plus ``password=`` query options.
    Longest first, so ``scrub`` replaces whole secrets before their pieces.
    """
    found: list[str] = []
    if isinstance(url, URL):
        if url.password:
            found.append(str(url.password))
        for name, value in url.query.items():
            if name.lower() == "password":
                found.extend([value] if isinstance(value, str) else value)
    text = url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url)
    where = _userinfo(text)
    if where is not None:
        start, at, parsed = where
        userinfo = text[start:at]
        found.append(userinfo.partition(":")[2] if parsed else userinfo)
    found.extend(m.group(0)[len("password=") :] for m in _PASSWORD_PARAM.finditer(text))
    expanded: set[str] = set()
    for secret in found:
        for form in (secret, unquote(secret), quote(secret, safe="")):
            expanded.add(form)
            expanded.update(_PIECES.split(form))
    kept = (s for s in expanded if s and (len(s) >= _MIN_PIECE or s in found))
    return tuple(sorted(kept, key=len, reverse=True))


def scrub(text: str, hidden: tuple[str, ...]) -> str:
    """``text`` (a foreign error message) with every secret in ``hidden`` replaced."""
    for secret in hidden:
        if secret:
            text = text.replace(secret, HIDDEN)
    return text


def leaks(exc: BaseException | None, hidden: tuple[str, ...]) -> bool:
    """Whether ``exc`` or anything in its cause/context chain shows one of ``hidden``."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = f"{exc} {exc.args!r}"
        if any(secret and secret in text for secret in hidden):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
