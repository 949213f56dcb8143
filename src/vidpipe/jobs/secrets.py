"""Keep credentials and request signatures out of logs, result/manifest files and exception text.

Two layers, because neither alone is enough:
- known values (the access key id and secret of the configured S3 client, and the values of environment
  variables whose names say they hold a secret) are replaced wherever they appear, whatever the format;
- patterns catch what we never held as a value: SigV2/SigV4 signatures, credentials and security tokens in
  query strings and ``Authorization`` headers, and botocore's debug line ``Signature:\\n<hex>``.

The one exception is the field named :data:`USER_URL_FIELDS` (``presigned_url``) of a result dict: that URL
is the product handed to the user, so :meth:`Redactor.redact_obj` leaves it intact. It carries the access key
id and a signature valid only for that object until it expires, never the secret.

Use :meth:`Redactor.redact` for text, :meth:`Redactor.redact_obj` for dicts about to be written, and
:func:`install_log_redaction` (a :class:`RedactingFilter` on every handler) for logging.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

MASK = "***"

# Fields whose value is the presigned URL meant for the user; left as is in redact_obj.
USER_URL_FIELDS: frozenset[str] = frozenset({"presigned_url"})

# Names of environment variables whose values are secrets (checked case-insensitively).
_SECRET_ENV_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|API_KEY|ACCESS_KEY|_KEY$|^B2_KEY)", re.I)
# Dict keys whose values are secrets (values replaced wholesale).
_SECRET_FIELD_NAME = re.compile(
    r"(secret|password|passwd|token|credential|authorization|signature|access_key|api_key|^b2_key$)", re.I
)
# Values shorter than this are not redacted by value: masking "1" or "us" everywhere would wreck the text
# and such values are not credentials anyway.
_MIN_SECRET_LEN = 6

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # SigV4 header: Credential=AKID/date/region/s3/aws4_request, SignedHeaders=..., Signature=hex
    (re.compile(r"(Credential=)[^,\s'\"&]+", re.I), r"\1" + MASK),
    # Query strings of presigned URLs (v2 and v4) and tokens.
    (
        re.compile(
            r"((?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|AWSAccessKeyId|Signature)=)[^&\s'\"]+",
            re.I,
        ),
        r"\1" + MASK,
    ),
    # botocore debug: "Signature:\n<hex>" and "Authorization: AWS key:sig" (v2).
    (re.compile(r"(Signature:\s*)[0-9a-f]{16,}", re.I), r"\1" + MASK),
    (re.compile(r"(Authorization['\"]?\s*[:=]\s*b?['\"]?AWS\s+)[^\s'\",]+", re.I), r"\1" + MASK),
    # key=value / key: value for names that say secret (aws_secret_access_key=..., "B2_SECRET": "...").
    (
        re.compile(
            r"((?:secret|password|passwd|token|api_key|access_key(?:_id)?|B2_KEY)\w*['\"]?\s*[:=]\s*['\"]?)"
            r"(?!\*\*\*)[^\s'\",&}]+",
            re.I,
        ),
        r"\1" + MASK,
    ),
)


class Redactor:
    """Replaces known secret values and credential-shaped substrings with ``***``."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        values = {s for s in secrets if s and len(s) >= _MIN_SECRET_LEN}
        # Longest first so a secret containing another is masked whole.
        self._values: tuple[str, ...] = tuple(sorted(values, key=len, reverse=True))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, extra: Iterable[str | None] = ()) -> Redactor:
        env = os.environ if env is None else env
        found = [v for k, v in env.items() if _SECRET_ENV_NAME.search(k)]
        return cls([*found, *extra])

    def with_secrets(self, secrets: Iterable[str | None]) -> Redactor:
        return Redactor([*self._values, *secrets])

    def redact(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        for pattern, repl in _PATTERNS:
            text = pattern.sub(repl, text)
        return text

    def redact_obj(self, obj: Any, *, _field: str | None = None) -> Any:
        """A redacted deep copy of JSON-like data. Secret-named fields are masked whole; the user's presigned
        URL field is kept as is."""
        if _field is not None and _field in USER_URL_FIELDS and (obj is None or isinstance(obj, str)):
            return obj
        if isinstance(obj, Mapping):
            out: dict[Any, Any] = {}
            for k, v in obj.items():
                name = str(k)
                if name not in USER_URL_FIELDS and _SECRET_FIELD_NAME.search(name) and v not in (None, ""):
                    out[k] = MASK
                else:
                    out[k] = self.redact_obj(v, _field=name)
            return out
        if isinstance(obj, list | tuple):
            return [self.redact_obj(v) for v in obj]
        if isinstance(obj, str):
            return self.redact(obj)
        return obj


class RedactingFilter(logging.Filter):
    """Logging filter that formats a record's message (and traceback) and redacts it.

    Attach it to handlers, not loggers: a logger's filters do not see records propagated from child
    loggers such as ``botocore``.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor
        self._fmt = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not hide the record, nor leak its args
            message = f"{record.msg!s} (unformattable args)"
        record.msg = self.redactor.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._fmt.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info)
        return True


def install_log_redaction(redactor: Redactor, logger: logging.Logger | None = None) -> RedactingFilter:
    """Add one RedactingFilter to every handler of ``logger`` (default: root). Returns the filter so that
    callers can remove it again (tests) or add it to handlers created later."""
    logger = logging.getLogger() if logger is None else logger
    flt = RedactingFilter(redactor)
    for handler in logger.handlers:
        handler.addFilter(flt)
    return flt


@contextmanager
def redacted_logs(redactor: Redactor, names: Sequence[str] = ("", "vidpipe")) -> Iterator[None]:
    """While the block runs, a RedactingFilter on every handler of the named loggers (root and "vidpipe"): what a
    command logs outside a job's own runner (which adds the store's credentials while it runs)."""
    filters = [(name, install_log_redaction(redactor, logging.getLogger(name))) for name in names]
    try:
        yield
    finally:
        for name, flt in filters:
            for handler in logging.getLogger(name).handlers:
                handler.removeFilter(flt)
