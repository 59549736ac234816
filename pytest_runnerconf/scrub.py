"""The one scrubber: every byte of text this project lets leave the process passes through here.

Two kinds of masking, applied together:

- **known values**: the secrets this process has seen (the GitLab token, the kubeconfig's bearer token,
  credentials harvested from evidence under secret-sounding names) are masked wherever they occur;
- **known shapes**: GitLab tokens of every prefix, JWTs, credentials in URLs, ``Authorization`` headers,
  docker ``auths``/``auth`` entries (also base64-encoded), AWS/GCP keys, PEM private keys, and the values
  of variables whose names say they are secret.

The sinks (terminal, JUnit, Allure, reports, evidence, the ``runnerconf`` command) call :func:`scrub_text`,
:func:`scrub_data` or wrap their stream in :class:`ScrubbingStream`; nothing else decides what is secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
from collections.abc import Callable, Iterable
from typing import IO, Any
from urllib.parse import quote

MASK = "[MASKED]"
MIN_SECRET_LEN = 6  # shorter "secrets" would mask ordinary words

# Variable and key names whose values are credentials (CI_JOB_TOKEN, CI_REGISTRY_PASSWORD, AWS_SECRET_ACCESS_KEY).
_SECRET_WORDS = (
    r"TOKEN|PASSWORD|PASSWD|PASSPHRASE|SECRET|JWT|DOCKER_AUTH_CONFIG|PRIVATE_KEY|API_?KEY|ACCESS_KEY"
    r"|ACCOUNT_?KEY|CREDENTIAL"
)
_SECRET_NAME = re.compile(_SECRET_WORDS, re.IGNORECASE)
# Names that point at a secret rather than hold it (token_env, secretName, secretKeyRef, token_expires_at, the
# profile's [expect.registry] password_variable: the name of the CI/CD variable, shown so it can be fixed).
# CI_RUNNER_SHORT_TOKEN is the public prefix that names every job pod, not a credential.
_SECRET_REFERENCE = re.compile(
    r"(_env|_file|_path|name|ref|_id|_at|_type|_source|_scope|_variable|short_token|s)$", re.IGNORECASE
)
# Keys that hold a credential although their name does not say so: docker config.json `auths` entries.
_CREDENTIAL_KEYS = frozenset({"auth", "identitytoken", "registrytoken", "private-token", "authorization"})

_GITLAB_PREFIXES = (
    "glpat|gldt|glrt|glrtr|glcbt|glptt|glft|glimt|glagent|gloas|glsoat|glffct|glcb|glwt|glsa|gltst|glimpt"
)
_B64 = r"[A-Za-z0-9+/]"
_NOT_SECRETS = frozenset({"true", "false", "null", "none"})  # automountServiceAccountToken: false


def _b64_text(blob: str) -> str:
    """The UTF-8 text a base64 run decodes to ("" when it is not base64 of text)."""
    try:
        return base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return ""


def _decodes_to_credentials(blob: str) -> bool:
    """A base64 run that decodes to a docker config (`"auths"`/`"auth"` entries)."""
    text = _b64_text(blob)
    return '"auths"' in text or '"auth"' in text


def _basic_credentials(blob: str) -> bool:
    """A Basic credential: base64 of `user:password`."""
    text = _b64_text(blob)
    return ":" in text and text.isprintable()


# (shape name, pattern, replacement); each replacement keeps the context and masks only the credential.
Replacement = str | Callable[[re.Match[str]], str]
SHAPES: tuple[tuple[str, re.Pattern[str], Replacement], ...] = (
    (
        "pem-private-key",
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)"
        ),
        MASK,
    ),
    ("gitlab-token", re.compile(rf"\b(?:{_GITLAB_PREFIXES})-[0-9A-Za-z_.-]{{16,}}"), MASK),
    ("gitlab-runner-registration-token", re.compile(r"\bGR1348941[0-9A-Za-z_-]{16,}"), MASK),
    ("jwt", re.compile(r"\beyJ[0-9A-Za-z_-]{8,}\.eyJ[0-9A-Za-z_-]{8,}\.[0-9A-Za-z_-]*"), MASK),
    (
        "url-credentials",
        re.compile(r"(?P<pre>\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@\"'<>]*:)[^/\s@\"'<>]+(?=@)"),
        lambda m: m.group("pre") + MASK,
    ),
    (
        "authorization-header",
        re.compile(
            r"(?P<pre>(?i:\b(?:proxy-)?authorization)[\"']?\s*[:=]\s*[\"']?(?i:bearer|basic|token|negotiate)\s+)"
            r"[^\s\"',;]+"
        ),
        lambda m: m.group("pre") + MASK,
    ),
    (
        "token-header",
        re.compile(
            r"(?P<pre>(?i:\b(?:private-token|job-token|deploy-token|x-auth-token|x-api-key))[\"']?\s*[:=]\s*"
            r"[\"']?)[^\s\"',;]+"
        ),
        lambda m: m.group("pre") + MASK,
    ),
    (
        "bearer-credential",
        re.compile(r"(?P<pre>\bBearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
        lambda m: m.group("pre") + MASK,
    ),
    (
        "basic-credential",
        re.compile(rf"(?P<pre>\bBasic\s+)(?P<cred>{_B64}{{8,}}={{0,2}})"),
        lambda m: m.group("pre") + MASK if _basic_credentials(m.group("cred")) else m.group(0),
    ),
    (
        "docker-auth-entry",
        re.compile(
            r"(?P<pre>\\?\"(?i:auth|identitytoken|registrytoken|password)\\?\"\s*:\s*\\?\")"
            r"(?P<val>[^\"\\]+)"
        ),
        lambda m: m.group("pre") + MASK,
    ),
    (
        "base64-docker-config",
        re.compile(rf"(?<![A-Za-z0-9+/]){_B64}{{24,}}={{0,2}}"),
        lambda m: MASK if _decodes_to_credentials(m.group(0)) else m.group(0),
    ),
    ("aws-access-key-id", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b"), MASK),
    ("gcp-api-key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), MASK),
    (
        "secret-named-variable",
        re.compile(
            rf"(?P<pre>\b(?P<name>[A-Za-z_][A-Za-z0-9_.-]*?(?i:{_SECRET_WORDS})[A-Za-z0-9_.-]*)"
            r"[\"']?\s*(?:=|:)\s*[\"']?)(?P<val>[^\s\"',;()<>\[\]{}]+)"
        ),
        lambda m: (
            m.group(0)
            if _SECRET_REFERENCE.search(m.group("name")) or m.group("val").lower() in _NOT_SECRETS
            else m.group("pre") + MASK
        ),
    ),
)


class _Known:
    """The secret values this process has seen; thread-safe, only ever grows."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        value = value.strip()
        if len(value) < MIN_SECRET_LEN or value == MASK:
            return
        with self._lock:
            self._values.update({value, quote(value, safe="")})

    def values(self) -> tuple[str, ...]:
        with self._lock:
            # Longest first: a secret that contains another must be masked whole.
            return tuple(sorted(self._values, key=len, reverse=True))

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


KNOWN = _Known()


def remember(*values: str | None) -> None:
    """Mask these values in every output of this process from now on (tokens the run reads or sees)."""
    for value in values:
        if value:
            KNOWN.add(value)


def is_secret_key(key: Any) -> bool:
    """A dict key or variable name whose value is a credential (not a reference to one)."""
    if not isinstance(key, str):
        return False
    if key.lower() in _CREDENTIAL_KEYS:
        return True
    return bool(_SECRET_NAME.search(key)) and not _SECRET_REFERENCE.search(key)


def _masks(key: Any, item: Any, named: Any) -> bool:
    # {"name": "CI_REGISTRY_PASSWORD", "value": "..."} (pod env, GitLab variables): judged by the name.
    if key == "value" and isinstance(named, str) and is_secret_key(named):
        return bool(item)
    return is_secret_key(key) and isinstance(item, str | int) and not isinstance(item, bool) and item != ""


HARVEST_MIN_LEN = 8  # a value masked everywhere for its name alone must not be an ordinary word


def harvest(data: Any) -> None:
    """Remember the values stored under secret-sounding names, so the same value is masked in free text."""
    if isinstance(data, dict):
        named = data.get("name", data.get("key"))
        for key, item in data.items():
            if isinstance(item, str) and _masks(key, item, named):
                if len(item.strip()) >= HARVEST_MIN_LEN:
                    remember(item)
            else:
                harvest(item)
    elif isinstance(data, list):
        for item in data:
            harvest(item)


def scrub_text(text: str, secrets: Iterable[str] = ()) -> str:
    """TEXT with the known and given secret values and every secret shape masked."""
    for secret in (*sorted((s for s in secrets if s), key=len, reverse=True), *KNOWN.values()):
        if len(secret) >= MIN_SECRET_LEN:
            text = text.replace(secret, MASK)
    for _name, pattern, replacement in SHAPES:
        text = pattern.sub(replacement, text)
    return text


def scrub_data(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of VALUE (dicts, lists, strings) with credential-named values and secret text masked."""
    hidden = tuple(secrets)
    if isinstance(value, dict):
        named = value.get("name", value.get("key"))
        return {
            key: MASK if _masks(key, item, named) else scrub_data(item, hidden) for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub_data(item, hidden) for item in value]
    if isinstance(value, str):
        return scrub_text(value, hidden)
    return value


def scrub_json(data: Any, secrets: Iterable[str] = (), *, indent: int | None = 2) -> str:
    """JSON text of DATA, scrubbed twice: by key names in the structure, then as text."""
    hidden = tuple(secrets)
    return scrub_text(json.dumps(scrub_data(data, hidden), indent=indent, default=str), hidden)


_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY-----")


class ScrubbingStream:
    """A text stream wrapper that scrubs whole lines before they reach the wrapped stream.

    Text is held until a line ends ("\\n", or "\\r" for pytest's rewritten progress line) or the stream is
    flushed, so a secret written in two pieces is still seen whole. A PEM block spans lines: every line
    from its BEGIN to its END is masked.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._pending = ""
        self._in_pem = False
        self._lock = threading.Lock()

    @property
    def wrapped(self) -> IO[str]:
        return self._stream

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            cut = max(self._pending.rfind("\n"), self._pending.rfind("\r"))
            if cut >= 0:
                done, self._pending = self._pending[: cut + 1], self._pending[cut + 1 :]
                self._stream.write(self._lines(done))
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self._stream.write(self._lines(self._pending))
                self._pending = ""
        self._stream.flush()

    def _lines(self, text: str) -> str:
        out = []
        for line in re.split(r"(?<=[\r\n])", text):
            if not line:
                continue
            if self._in_pem:
                end = _PEM_END.search(line)
                if end is None:
                    out.append(MASK + ("\n" if line.endswith("\n") else ""))
                    continue
                self._in_pem = False
                out.append(MASK)
                line = line[end.end() :]
            begin = _PEM_BEGIN.search(line)
            if begin and not _PEM_END.search(line, begin.end()):
                self._in_pem = True
                out.append(scrub_text(line[: begin.start()]) + MASK + ("\n" if line.endswith("\n") else ""))
                continue
            out.append(scrub_text(line))
        return "".join(out)

    def __getattr__(self, name: str) -> Any:
        # isatty, fileno, encoding, ...: whatever the writer asks of the real stream.
        return getattr(self._stream, name)
