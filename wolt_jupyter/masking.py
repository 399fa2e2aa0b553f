"""The one masking function: every URL, DSN, header, log line or error the project shows goes through
:func:`mask_url`, so no place can forget a form of credential the others hide.

Forms hidden (``tests/test_security.py`` keeps a corpus of each):

- ``scheme://user:PASSWORD@host`` — the password, whatever characters it holds (``/``, ``@``, ``:``, ``%40``);
- ``scheme://TOKEN@host`` — a userinfo without a password is a token as often as a user name (git hosts,
  proxies), so it is hidden whole;
- ``Authorization: Bearer TOKEN``, ``Basic CREDENTIALS``;
- ``KEY=VALUE`` where the key names a credential: ``password=`` (libpq DSNs), ``?token=`` (query strings),
  ``PGPASSWORD=``, ``MLFLOW_TRACKING_TOKEN=``, ``AWS_SECRET_ACCESS_KEY=`` (environment lines);
- ``KEY: VALUE`` and ``"KEY": "VALUE"`` for the same keys (YAML, JSON, headers).
"""

from __future__ import annotations

import re
from typing import Any, overload

MASK = "****"
_STOP = "\\s'\"<>`"  # where a credential in running text ends
# scheme://user:password@ — the userinfo runs to the LAST "@" of the token, so a password holding "@", "/" or
# ":" (unencoded, as people paste them) is hidden whole; the user part never holds "/" (that is a path)
_URL_USERINFO = re.compile(
    rf"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@{_STOP}]*):(?P<pw>[^{_STOP}]*)@"
    rf"(?=[^@{_STOP}]*(?:[{_STOP}]|$))"
)
# scheme://TOKEN@host: no ":" in the userinfo (a password form was masked above), up to the last "@"
_URL_TOKEN = re.compile(
    rf"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<token>[^:/{_STOP}]+)@(?=[^@/{_STOP}]*(?:[/{_STOP}]|$))"
)
_AUTH_SCHEME = re.compile(r"(?i)\b(?P<scheme>bearer|basic)[ \t]+(?P<value>[A-Za-z0-9._~+/=-]+)")
# a key that names a credential, with any prefix or suffix: PGPASSWORD, MLFLOW_TRACKING_TOKEN, api-key, ...
_KEY = (
    r"[A-Za-z0-9_.-]*?(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|credentials?)[A-Za-z0-9_]*"
)
_QUOTED = r"\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'"
# KEY=VALUE: the value may hold anything but a separator (a DSN's password holds "@", "/", ":")
_KEY_EQUALS = re.compile(
    rf"(?i)(?<![A-Za-z0-9_.-])(?P<key>[\"']?{_KEY}[\"']?[ \t]*=[ \t]*)(?P<value>{_QUOTED}|[^&;{_STOP}]+)"
)
# KEY: VALUE (YAML, headers) and "KEY": VALUE (JSON); never a nested mapping or list ("secretKeyRef: {...}")
_KEY_COLON = re.compile(
    rf"(?i)(?<![A-Za-z0-9_.-])(?P<key>\"{_KEY}\"[ \t]*:[ \t]*|'{_KEY}'[ \t]*:[ \t]*|{_KEY}[ \t]*:[ \t]+)"
    rf"(?P<value>{_QUOTED}|(?![{{\[])[^,{{}}\[\]&;{_STOP}]+)"
)


def _masked_value(m: re.Match[str]) -> str:
    value = m["value"]
    quote = value[0] if value[0] in "\"'" and len(value) > 1 and value[-1] == value[0] else ""
    return f"{m['key']}{quote}{MASK}{quote}"


@overload
def mask_url(text: str) -> str: ...
@overload
def mask_url(text: None) -> None: ...
def mask_url(text: str | None) -> str | None:
    """``text`` with every credential of the forms above replaced by ``****`` (hosts, paths and key names stay
    readable); None and "" as they are."""
    if not text:
        return text
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _URL_TOKEN.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m['scheme']} {MASK}", text)
    text = _KEY_EQUALS.sub(_masked_value, text)
    return _KEY_COLON.sub(_masked_value, text)


def masked_secret(manifest: dict[str, Any]) -> dict[str, Any]:
    """A Secret as shown (dry-run manifests, diffs): its keys, never its values."""
    out = dict(manifest)
    for key in ("data", "stringData"):
        if isinstance(out.get(key), dict):
            out[key] = dict.fromkeys(out[key], MASK)
    return out


def shown_manifests(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Manifests as shown anywhere but the apply: each Secret's keys without its values
    (:func:`masked_secret`), and every credential in any other string masked (``mask_url``). Already-shown
    manifests pass through unchanged."""
    def masked(value: Any) -> Any:
        if isinstance(value, str):
            return mask_url(value)
        if isinstance(value, dict):
            return {k: masked(v) for k, v in value.items()}
        if isinstance(value, list):
            return [masked(v) for v in value]
        return value

    return [masked(masked_secret(m) if m.get("kind") == "Secret" else m) for m in manifests]
