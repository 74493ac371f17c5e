"""URLs that may carry credentials, shown safely: only their origin, or with the password masked.

Webhook URLs hold tokens in their path or query, sink URLs a password in their userinfo. Logs and
errors show :func:`url_origin` (``scheme://host[:port]``) or :func:`mask_password`; neither ever
raises, whatever the text (a URL that does not parse shows as ``<unparseable URL>``).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

UNPARSEABLE = "<unparseable URL>"


def url_origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: no userinfo, path, query or fragment."""
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return UNPARSEABLE
    if not parts.scheme or not host:
        return UNPARSEABLE
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def mask_password(url: str) -> str:
    """``url`` with the password of its userinfo replaced by ``***`` (the user, host and path kept)."""
    try:
        parts = urlsplit(str(url))
    except ValueError:
        return UNPARSEABLE
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return str(url)
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))
