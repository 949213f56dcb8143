"""Object keys for uploads, and the local names of downloaded ``s3://`` inputs.

Two policies, on purpose:

- A key the user gives (job spec, ``--key``) is **validated and rejected** when unsafe (:func:`validate_key`
  raises :class:`~vidpipe.errors.UsageError`): silently rewriting a key someone chose would put the result
  where nobody looks for it.
- A key we generate from an input's file name (:func:`make_object_key`) is **rewritten** safely: odd file
  names (spaces, ``..``, control characters, 500-byte names) must never fail a finished job at upload time.

Generated keys read ``<orig_stem>_<mode>_<YYYYmmdd_HHMMSS>.<ext>`` with the time in UTC, as the seed
containers named their uploads, e.g. ``clip_upscaled_20251126_143005.mp4``.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Final, Literal

from vidpipe.errors import UsageError

Mode = Literal["upscaled", "interpolated", "both", "result", "matted"]
MODES: Final[tuple[str, ...]] = ("upscaled", "interpolated", "both", "result", "matted")

# S3 (AWS, B2, SeaweedFS) caps a key at 1024 bytes of UTF-8.
MAX_KEY_BYTES: Final = 1024
TIMESTAMP_FORMAT: Final = "%Y%m%d_%H%M%S"

# Characters kept in a generated stem: letters and digits of any script, plus these.
_STEM_KEEP = frozenset("-_.+=@")
_EXT_RE = re.compile(r"^[A-Za-z0-9]{1,16}$")


def _is_control(ch: str) -> bool:
    # Cc covers NUL, C0, DEL and C1; Cf covers zero-width/bidi overrides that disguise a key.
    return unicodedata.category(ch) in ("Cc", "Cf")


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a safe object key, else raise UsageError saying why.

    Rejected: empty; a leading ``/``; a ``.`` or ``..`` segment; a backslash (some clients treat it as a
    separator, which turns ``a\\..\\b`` into traversal); NUL or other control/format characters; not
    encodable as UTF-8; more than 1024 bytes of UTF-8.
    """
    if not isinstance(key, str) or not key:
        raise UsageError("object key is empty; give a non-empty key such as 'videos/clip_upscaled.mp4'")
    bad = next((ch for ch in key if _is_control(ch)), None)
    if bad is not None:
        raise UsageError(f"object key contains control character U+{ord(bad):04X}; remove it: {key!r}")
    if key.startswith("/"):
        raise UsageError(f"object key must not start with '/': {key!r}")
    if "\\" in key:
        raise UsageError(f"object key must not contain a backslash: {key!r}")
    if any(part in (".", "..") for part in key.split("/")):
        raise UsageError(f"object key must not contain '.' or '..' path segments: {key!r}")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise UsageError(f"object key is not valid UTF-8 (lone surrogate?): {key!r}") from e
    if size > MAX_KEY_BYTES:
        raise UsageError(f"object key is {size} bytes of UTF-8; the limit is {MAX_KEY_BYTES}")
    return key


def _truncate_utf8(text: str, max_bytes: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    # errors="ignore" drops a multi-byte character cut in half at the boundary.
    return data[:max_bytes].decode("utf-8", errors="ignore")


def sanitize_component(name: str, *, fallback: str = "output") -> str:
    """Rewrite one path component into a safe name: NFC-normalised, anything but letters, digits and
    ``-_.+=@`` replaced by ``_``, no leading dots (so never ``.``/``..``/hidden), never empty."""
    name = unicodedata.normalize("NFC", name)
    out = []
    for ch in name:
        if (ch.isalnum() and not _is_control(ch)) or ch in _STEM_KEEP:
            out.append(ch)
        else:
            out.append("_")
    cleaned = re.sub(r"_+", "_", "".join(out)).lstrip(".")
    # Lone surrogates survive isalnum() == False above, so this encode cannot fail.
    return cleaned or fallback


def _normalise_ext(ext: str) -> str:
    ext = ext.lstrip(".")
    if not _EXT_RE.match(ext):
        raise UsageError(f"extension {ext!r} is not 1-16 ASCII letters or digits (e.g. 'mp4', 'mkv')")
    return ext.lower()


def format_timestamp(now: datetime | None = None) -> str:
    """UTC ``YYYYmmdd_HHMMSS``. A naive datetime is refused: guessing its zone would mislabel uploads."""
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise UsageError("timestamp for an object key must be timezone-aware (e.g. datetime.now(UTC))")
    return now.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def make_object_key(
    original: str | PurePosixPath,
    mode: str,
    *,
    ext: str | None = None,
    now: datetime | None = None,
    prefix: str = "",
) -> str:
    """``[prefix/]<orig_stem>_<mode>_<YYYYmmdd_HHMMSS>.<ext>``.

    ``original`` is the input's path or ``s3://`` URL (only its last component is used). ``ext`` defaults to
    the original's extension, else ``mp4``. ``prefix`` is validated like a user key (it is user input).
    The stem is rewritten by :func:`sanitize_component` and shortened so the key fits in 1024 bytes.
    """
    if mode not in MODES:
        raise UsageError(f"unknown upload mode {mode!r}; valid modes: {', '.join(MODES)}")
    name = str(original).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    pure = PurePosixPath(name) if name else PurePosixPath("output")
    suffix = ext if ext is not None else (pure.suffix or ".mp4")
    ext_n = _normalise_ext(suffix)
    stem = sanitize_component(pure.stem if pure.suffix else pure.name)
    prefix = prefix.strip("/")
    if prefix:
        validate_key(prefix)
        prefix += "/"
    tail = f"_{mode}_{format_timestamp(now)}.{ext_n}"
    room = MAX_KEY_BYTES - len(prefix.encode()) - len(tail.encode())
    if room < 1:
        raise UsageError(f"key prefix is too long to fit a {MAX_KEY_BYTES}-byte key: {prefix!r}")
    key = prefix + _truncate_utf8(stem, room) + tail
    return validate_key(key)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``(bucket, key)``; the key is validated (rejected, not rewritten)."""
    if not url.startswith("s3://"):
        raise UsageError(f"not an s3:// URL: {url!r} (expected s3://BUCKET/KEY)")
    bucket, sep, key = url[len("s3://") :].partition("/")
    if not bucket or not sep or not key:
        raise UsageError(f"s3 URL needs a bucket and a key: {url!r} (expected s3://BUCKET/KEY)")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
        raise UsageError(f"invalid bucket name {bucket!r}: 3-63 lowercase letters, digits, '.' or '-'")
    return bucket, validate_key(key)


def local_name_for_key(key: str) -> str:
    """A safe local file name for a downloaded object: its last key component, rewritten, so a key such
    as ``a/../../etc/passwd`` can never write outside the work directory."""
    last = key.rstrip("/").rsplit("/", 1)[-1]
    return _truncate_utf8(sanitize_component(last, fallback="input"), 200)
