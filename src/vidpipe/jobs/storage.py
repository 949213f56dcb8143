"""Verified uploads to, and downloads from, any S3-compatible store (Backblaze B2, AWS, SeaweedFS, MinIO).

Needs boto3 (``pip install vidpipe[s3]``).

What an upload guarantees when :meth:`S3Storage.upload_file` returns: the object at the key has our size and
the SHA-256 we computed is in its metadata (``x-amz-meta-sha256``), checked by a HEAD after the upload; every
byte sent was covered by a Content-MD5 the server checked; the file did not change while it was being sent.
Anything else raises :class:`~vidpipe.errors.StorageError` (or :class:`~vidpipe.errors.RetryableStorageError`
when repeating the whole upload later may succeed), and a multipart upload that failed is aborted so no
invisible, billed parts are left behind.

Retries: botocore's own retries are switched off so that one policy (:class:`RetryPolicy`, exponential
back-off with jitter) applies to every call and is counted. Only transient failures are retried: connection
errors and timeouts, HTTP 5xx, 408, 429 and the codes in :data:`RETRYABLE_CODES`. 400, 403 and 404 are not:
repeating a request with a wrong secret or a missing bucket only burns time (and B2 may lock the key). An
:class:`~vidpipe.errors.Interrupted` (SIGINT/SIGTERM) is never retried, though botocore hands it over wrapped
as a connection error: it is re-raised as it is, and a multipart upload it cut short is aborted.

Before hours of work, :meth:`S3Storage.preflight` tries in a few requests what the job's upload will do (the
listing of unfinished uploads under the job's prefix, a tiny object put there, its HEAD and delete), so a wrong
secret, a missing bucket or a malformed endpoint or region fails in seconds; the client itself is set up (and a
malformed endpoint or region refused) by :func:`make_client`, as a StorageError too. After the upload,
:meth:`S3Storage.recorded_problem` tells whether an object is still the one a receipt describes.

Environment (the seed's vast.ai containers): ``B2_KEY`` (key id), ``B2_SECRET``, ``B2_ENDPOINT`` (any S3 URL;
``https://`` is added when no scheme is given), ``B2_BUCKET``, optional ``B2_REGION`` (else taken from a
``s3.<region>.backblazeb2.com`` endpoint, else ``us-east-1``) and ``AUTO_UPLOAD_B2`` (see
:func:`upload_enabled_from_env`).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import random
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

from vidpipe.errors import Interrupted, OutputError, RetryableStorageError, StorageError, UsageError
from vidpipe.jobs.keys import local_name_for_key, parse_s3_url, validate_key
from vidpipe.jobs.result import disk_error
from vidpipe.jobs.secrets import Redactor
from vidpipe.jobs.upload import HASH_CHUNK, MIN_PART_SIZE, SHA256_META, Attempts, FileDigest, MiB, Uploads
from vidpipe.jobs.upload import UploadReceipt as UploadReceipt  # re-exported: importable from here as before
from vidpipe.jobs.upload import file_digest as file_digest  # re-exported likewise

log = logging.getLogger(__name__)

DEFAULT_MULTIPART_THRESHOLD: Final = 64 * MiB
DEFAULT_PART_SIZE: Final = 16 * MiB
DEFAULT_PRESIGN_SECONDS: Final = 24 * 3600
# SigV4 presigned URLs cannot live longer than 7 days (AWS and B2 reject them).
MAX_PRESIGN_SECONDS: Final = 7 * 24 * 3600

# Error codes worth repeating even when the HTTP status is 4xx: throttling, server-side timeouts, and a
# Content-MD5 mismatch (bytes damaged on the wire; the next attempt re-reads the file).
RETRYABLE_CODES: Final = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "BadDigest",
    }
)
_RETRYABLE_STATUS: Final = frozenset({408, 429})
#: a clock this far off the store's makes it refuse SigV4 signatures (AWS and B2 allow 15 minutes)
MAX_CLOCK_SKEW_S: Final = 15 * 60
#: what the pre-flight writes (and deletes) under the job's prefix
PREFLIGHT_BODY: Final = b"vidpipe pre-flight: this key may write here\n"
_B2_REGION_RE = re.compile(r"^s3\.([a-z0-9-]+)\.backblazeb2\.com$")
_MD5_ETAG_RE = re.compile(r'^"?([0-9a-f]{32})(?:-(\d+))?"?$')

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential back-off with jitter: attempt n waits uniform(0.5, 1) x min(max_delay, base x 2^(n-1))."""

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 20.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise UsageError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise UsageError("retry delays must be >= 0")

    def delay(self, attempt: int, rng: random.Random) -> float:
        return min(self.max_delay, self.base_delay * 2 ** (attempt - 1)) * rng.uniform(0.5, 1.0)


def _parse_bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise UsageError(f"{name}={value!r} is not a boolean; use 1/0, true/false, yes/no or on/off")


def upload_enabled_from_env(env: Mapping[str, str] | None = None) -> bool:
    """``AUTO_UPLOAD_B2`` if set; unset means: upload when ``B2_BUCKET`` is set (as seed containers did)."""
    env = os.environ if env is None else env
    if "AUTO_UPLOAD_B2" in env:
        return _parse_bool("AUTO_UPLOAD_B2", env["AUTO_UPLOAD_B2"])
    return bool(env.get("B2_BUCKET"))


def _normalise_endpoint(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "https://" + url
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise UsageError(f"S3 endpoint {url!r} must be an http:// or https:// URL")
    return url


def region_for_endpoint(endpoint_url: str | None) -> str:
    """B2 checks the SigV4 region: endpoint ``s3.us-west-004.backblazeb2.com`` means ``us-west-004``."""
    if endpoint_url:
        host = endpoint_url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
        m = _B2_REGION_RE.match(host)
        if m:
            return m.group(1)
    return "us-east-1"


@dataclass(frozen=True, kw_only=True)
class S3Settings:
    """Where and how to talk to the store. Secrets are kept out of ``repr`` (and so out of logs)."""

    bucket: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    endpoint_url: str | None = None
    region: str | None = None
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD
    part_size: int = DEFAULT_PART_SIZE
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", self.bucket or ""):
            raise UsageError(f"invalid bucket name {self.bucket!r}: 3-63 lowercase letters, digits, '.' or '-'")
        if not self.access_key or not self.secret_key:
            raise UsageError("S3 access key and secret are both required (B2_KEY and B2_SECRET)")
        if self.endpoint_url is not None:
            object.__setattr__(self, "endpoint_url", _normalise_endpoint(self.endpoint_url))
        if self.part_size < MIN_PART_SIZE:
            raise UsageError(f"part_size {self.part_size} is below the S3/B2 minimum of {MIN_PART_SIZE} bytes")
        if self.multipart_threshold < 0:
            raise UsageError(f"multipart_threshold must be >= 0, got {self.multipart_threshold}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise UsageError("connect_timeout and read_timeout must be > 0 seconds")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> S3Settings:
        """Settings from ``B2_*`` variables; keyword overrides win. Missing variables are named in the error
        (their values never are)."""
        env = os.environ if env is None else env
        names = {"access_key": "B2_KEY", "secret_key": "B2_SECRET", "bucket": "B2_BUCKET"}
        values: dict[str, Any] = {k: env.get(v, "") for k, v in names.items()}
        values["endpoint_url"] = env.get("B2_ENDPOINT") or None
        values["region"] = env.get("B2_REGION") or None
        values.update(overrides)
        missing = [names[k] for k in names if not values.get(k)]
        if missing:
            raise UsageError(f"S3 upload is enabled but {', '.join(missing)} not set (also need B2_ENDPOINT)")
        return cls(**values)

    @property
    def effective_region(self) -> str:
        return self.region or region_for_endpoint(self.endpoint_url)

    def secret_values(self) -> tuple[str, str]:
        """For :class:`~vidpipe.jobs.secrets.Redactor`."""
        return (self.access_key, self.secret_key)


def _check_endpoint(url: str) -> None:
    """Host and port of an endpoint URL (the scheme is checked by S3Settings); botocore would otherwise fail only
    at the first request, or with a bare ValueError."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # ValueError when out of range or not a number
    except ValueError as e:
        raise StorageError(f"S3 endpoint {url!r} is malformed: {e} (check B2_ENDPOINT)") from None
    if not parts.hostname or any(ch.isspace() for ch in url):
        raise StorageError(f"S3 endpoint {url!r} is malformed: no host name (check B2_ENDPOINT)")
    if port == 0:
        raise StorageError(f"S3 endpoint {url!r} is malformed: port 0 (check B2_ENDPOINT)")


def make_client(settings: S3Settings) -> Any:
    """A boto3 S3 client for `settings`; a malformed endpoint or region is a StorageError (exit 7) here."""
    # boto3 is imported where a client is made: `vidpipe` commands that never touch S3 start without it
    import boto3
    from botocore import exceptions as bex
    from botocore.config import Config

    if settings.endpoint_url:
        _check_endpoint(settings.endpoint_url)

    config = Config(
        signature_version="s3v4",
        region_name=settings.effective_region,
        # Path style works with every S3-compatible server (SeaweedFS, MinIO need it; B2 accepts it).
        s3={"addressing_style": "path" if settings.endpoint_url else "auto"},
        # B2 rejects the CRC32 checksum headers boto3 >= 1.36 sends by default.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # One retry policy, ours (see module docstring).
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
    )
    try:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=settings.endpoint_url,
            aws_access_key_id=settings.access_key,
            aws_secret_access_key=settings.secret_key,
            region_name=settings.effective_region,
            config=config,
        )
    except (ValueError, bex.BotoCoreError) as e:  # InvalidRegionError is both; "Invalid endpoint" a ValueError
        raise StorageError(
            f"cannot set up the S3 client for endpoint {settings.endpoint_url!r}, region "
            f"{settings.effective_region!r}: {e} (check B2_ENDPOINT and B2_REGION)"
        ) from None


def _interruption(exc: BaseException) -> BaseException | None:
    """The Interrupted (or KeyboardInterrupt) inside `exc`, if any. The signal handler raises it inside urllib3,
    and botocore wraps whatever its HTTP send raises as HTTPClientError (kept in ``kwargs["error"]``), which
    would otherwise count as a network failure and be retried."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, Interrupted | KeyboardInterrupt):
            return e
        wrapped = getattr(e, "kwargs", None)
        if isinstance(wrapped, dict) and isinstance(wrapped.get("error"), BaseException):
            todo.append(wrapped["error"])
        todo += [e.__cause__, e.__context__]
    return None


def _clock_skew(response: Mapping[str, Any]) -> float | None:
    """Seconds between this machine's clock and the store's, from the response's Date header (None: unknown).
    A HEAD's 403 carries no error code, so a skewed clock is recognised by this as well."""
    date = (response.get("ResponseMetadata", {}).get("HTTPHeaders") or {}).get("date")
    if not date:
        return None
    try:
        from email.utils import parsedate_to_datetime

        return (datetime.now(UTC) - parsedate_to_datetime(date)).total_seconds()
    except (TypeError, ValueError):
        return None


class S3Storage(Uploads):
    """Upload (the `Uploads` half, jobs/upload.py), verify, presign and download against one bucket (downloads
    may name any bucket).

    ``client`` may be injected (tests register botocore event hooks on it); ``sleep`` and ``rng`` make the
    back-off deterministic in tests.
    """

    def __init__(
        self,
        settings: S3Settings,
        *,
        client: Any | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.settings = settings
        self.client = client if client is not None else make_client(settings)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.redactor = (redactor or Redactor.from_env()).with_secrets(settings.secret_values())

    # -- errors and retries ------------------------------------------------------------------------------

    def _classify(self, exc: BaseException, what: str) -> StorageError | None:
        """The StorageError for ``exc``, or None when it is no storage failure (a bug) and must propagate."""
        from botocore import exceptions as bex

        if isinstance(exc, StorageError):
            return exc
        if isinstance(exc, bex.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            message = self.redactor.redact(str(err.get("Message") or ""))
            text = f"{what} failed: HTTP {status} {code}" + (f": {message}" if message else "")
            if status >= 500 or status in _RETRYABLE_STATUS or code in RETRYABLE_CODES:
                return RetryableStorageError(text)
            skew = _clock_skew(exc.response)
            if code == "RequestTimeTooSkewed" or (status == 403 and skew is not None and abs(skew) > MAX_CLOCK_SKEW_S):
                # the signature's time is refused, not the key: retrying or checking the key does not help
                off = f" (off by {skew:+.0f}s)" if skew is not None and abs(skew) > MAX_CLOCK_SKEW_S else ""
                return StorageError(
                    f"{text}: clock skew: this machine's clock is too far from the store's{off}; "
                    "set it right (NTP, chrony, timedatectl set-ntp true) and run again"
                )
            if status == 403:
                text += " (check B2_KEY/B2_SECRET and the key's bucket permissions)"
            elif status == 404 or code in ("NoSuchBucket", "NoSuchKey"):
                text += " (does the bucket, or the object, exist?)"
            return StorageError(text)
        if isinstance(exc, bex.HTTPClientError | bex.ConnectionError | bex.IncompleteReadError):
            # Connection refused/reset, timeouts, a response cut short: the network, not the request.
            return RetryableStorageError(f"{what} failed: {self.redactor.redact(str(exc))}")
        if isinstance(exc, bex.BotoCoreError):
            return StorageError(f"{what} failed: {self.redactor.redact(str(exc))}")
        if isinstance(exc, OSError):  # reading the local file
            return StorageError(f"{what} failed: {type(exc).__name__}: {self.redactor.redact(str(exc))}")
        return None

    def _call(self, what: str, fn: Callable[[], T], counter: Attempts) -> T:
        policy = self.settings.retry
        for attempt in range(1, policy.max_attempts + 1):
            counter.count += 1
            try:
                return fn()
            except (OutputError, UsageError):
                raise
            except Exception as exc:
                stop = _interruption(exc)
                if stop is not None:
                    raise stop from None
                err = self._classify(exc, what)
                if err is None:
                    raise
                if not err.retryable or attempt == policy.max_attempts:
                    if err.retryable:
                        err = RetryableStorageError(f"{err} (gave up after {attempt} attempts)")
                    if err is exc:
                        raise
                    raise err from exc
                delay = policy.delay(attempt, self._rng)
                log.warning("%s (attempt %d/%d); retrying in %.2fs", err, attempt, policy.max_attempts, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    # -- verification ----------------------------------------------------------------------------------

    def head(self, key: str, *, bucket: str | None = None, counter: Attempts | None = None) -> dict[str, Any]:
        bucket = bucket or self.settings.bucket
        return self._call(
            f"HEAD of s3://{bucket}/{key}",
            lambda: self.client.head_object(Bucket=bucket, Key=key),
            counter or Attempts(),
        )

    def verify_object(
        self, key: str, *, digest: FileDigest, parts: int = 0, counter: Attempts | None = None
    ) -> dict[str, Any]:
        """HEAD the object; raise StorageError unless its size and ``x-amz-meta-sha256`` are ours. Where the
        server's ETag has the MD5 form, it must match the MD5 (single PUT) or MD5-of-part-MD5s (multipart)."""
        where = f"s3://{self.settings.bucket}/{key}"
        head = self.head(key, counter=counter)
        problems = []
        size = int(head.get("ContentLength", -1))
        if size != digest.size:
            problems.append(f"size {size} != {digest.size}")
        meta_sha = (head.get("Metadata") or {}).get(SHA256_META)
        if meta_sha != digest.sha256:
            problems.append(f"sha256 metadata {meta_sha!r} != {digest.sha256!r}")
        m = _MD5_ETAG_RE.match(str(head.get("ETag", "")))
        if m and parts == 0 and m.group(2) is None and m.group(1) != digest.md5:
            problems.append(f"ETag {m.group(1)} != MD5 {digest.md5}")
        if m and parts and m.group(2) is not None and int(m.group(2)) != parts:
            problems.append(f"ETag says {m.group(2)} parts, we sent {parts}")
        if problems:
            raise StorageError(f"verification of {where} after upload failed: {'; '.join(problems)}")
        return head

    def recorded_problem(self, record: Mapping[str, Any]) -> str | None:
        """What differs between an upload recorded in the result JSON (``bucket``, ``key``, ``size``, ``sha256``,
        ``etag``, ``parts``) and the object in the bucket now; None when they match. The object may have been
        deleted or replaced since its upload was verified (by another job writing the same key, a lifecycle
        rule, a person). Failing to ask (403, the network after retries) raises StorageError."""
        from botocore import exceptions as bex

        bucket, key = str(record.get("bucket")), str(record.get("key"))
        where = f"s3://{bucket}/{key}"

        def head() -> Any:
            try:
                return self.client.head_object(Bucket=bucket, Key=key)
            except bex.ClientError as e:
                if int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) == 404:
                    return None
                raise

        found = self._call(f"HEAD of {where}", head, Attempts())
        if found is None:
            return f"{where} is missing from the bucket"
        problems = []
        size = int(found.get("ContentLength", -1))
        if size != record.get("size"):
            problems.append(f"size {size} != {record.get('size')} uploaded")
        meta_sha = (found.get("Metadata") or {}).get(SHA256_META)
        if meta_sha != record.get("sha256"):
            problems.append(f"sha256 {meta_sha!r} != {record.get('sha256')!r} uploaded")
        now, then = _MD5_ETAG_RE.match(str(found.get("ETag", ""))), _MD5_ETAG_RE.match(str(record.get("etag") or ""))
        # a single PUT's ETag is the MD5 of the bytes on S3-compatible servers: another object, another ETag
        if now and then and not record.get("parts") and now.group(0).strip('"') != then.group(0).strip('"'):
            problems.append(f"ETag {now.group(1)} != {then.group(1)} uploaded")
        return f"{where} is not what was uploaded: {'; '.join(problems)}" if problems else None

    # -- pre-flight --------------------------------------------------------------------------------------

    def preflight(self, prefix: str = "") -> None:
        """Try, in a few small requests, what an upload under ``prefix`` will need: the listing of unfinished
        multipart uploads (first: a GET, whose errors carry their code, and one that never creates a bucket, as a
        PUT to a missing one does on SeaweedFS and MinIO), a tiny object put (with Content-MD5, as uploads are),
        its HEAD and its delete.
        Raises StorageError (exit 7) naming the cause: a wrong key or secret, a missing bucket, a key without
        write or list permission, a skewed clock, an unreachable endpoint. The delete failing is only a warning
        (a key may write without deleting; the object is a few bytes)."""
        bucket, counter = self.settings.bucket, Attempts()
        prefix = prefix.strip("/")
        key = validate_key(f"{prefix}/" * bool(prefix) + f".vidpipe-preflight-{uuid.uuid4().hex[:12]}")
        where = f"s3://{bucket}/{key}"
        md5 = base64.b64encode(hashlib.md5(PREFLIGHT_BODY, usedforsecurity=False).digest()).decode()
        started = time.monotonic()
        self._call(
            f"pre-flight listing of unfinished uploads in s3://{bucket}/{prefix}",
            lambda: self.client.list_multipart_uploads(Bucket=bucket, Prefix=prefix, MaxUploads=1),
            counter,
        )
        self._call(
            f"pre-flight upload to {where}",
            lambda: self.client.put_object(Bucket=bucket, Key=key, Body=PREFLIGHT_BODY, ContentMD5=md5),
            counter,
        )
        try:
            self._call(f"pre-flight HEAD of {where}", lambda: self.client.head_object(Bucket=bucket, Key=key), counter)
        finally:
            try:
                self._call(
                    f"pre-flight delete of {where}", lambda: self.client.delete_object(Bucket=bucket, Key=key), counter
                )
            except StorageError as e:
                log.warning("%s; the %d-byte pre-flight object stays", e, len(PREFLIGHT_BODY))
        log.info("pre-flight of s3://%s/%s: ok (%d requests, %.1fs)", bucket, prefix, counter.count,
                 time.monotonic() - started)  # fmt: skip

    # -- presigned URLs --------------------------------------------------------------------------------

    def presign_get(self, key: str, expires_in: int = DEFAULT_PRESIGN_SECONDS) -> tuple[str, datetime]:
        """A GET URL for ``key`` valid ``expires_in`` seconds (1 .. 7 days) and when it expires (UTC)."""
        if isinstance(expires_in, bool) or not isinstance(expires_in, int):
            raise UsageError(f"presigned URL lifetime must be whole seconds, got {expires_in!r}")
        if not 1 <= expires_in <= MAX_PRESIGN_SECONDS:
            raise UsageError(
                f"presigned URL lifetime {expires_in}s is out of range: 1 .. {MAX_PRESIGN_SECONDS} (7 days)"
            )
        validate_key(key)
        now = datetime.now(UTC)
        url = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.settings.bucket, "Key": key}, ExpiresIn=expires_in
        )
        return str(url), now + timedelta(seconds=expires_in)

    # -- download --------------------------------------------------------------------------------------

    def download(self, url: str, dest_dir: Path | str) -> Path:
        """Download ``s3://bucket/key`` into ``dest_dir`` under a safe local name; the size must equal the
        HEAD's, and the SHA-256 too when the object carries our metadata. Written as temp file + rename."""
        bucket, key = parse_s3_url(url)
        dest_dir = Path(dest_dir)
        dest = dest_dir / local_name_for_key(key)
        counter = Attempts()
        head = self.head(key, bucket=bucket, counter=counter)
        size = int(head.get("ContentLength", -1))
        want_sha = (head.get("Metadata") or {}).get(SHA256_META)
        etag = head.get("ETag")
        try:
            dest_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise disk_error(e, dest_dir, "creating the download directory") from None
        tmp = dest.with_name(f".{dest.name}.part")

        def fetch() -> str:
            sha, got = hashlib.sha256(), 0
            kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
            if etag:
                kwargs["IfMatch"] = etag  # the object must not change between attempts
            body = self.client.get_object(**kwargs)["Body"]
            try:
                with open(tmp, "wb") as f:
                    for chunk in body.iter_chunks(HASH_CHUNK):
                        try:
                            f.write(chunk)
                        except OSError as e:
                            raise disk_error(e, dest, "downloading") from None
                        sha.update(chunk)
                        got += len(chunk)
                    try:
                        f.flush()
                        os.fsync(f.fileno())
                    except OSError as e:
                        raise disk_error(e, dest, "downloading") from None
            finally:
                body.close()
            if got != size:
                raise RetryableStorageError(f"download of {url} was cut short: {got} of {size} bytes")
            return sha.hexdigest()

        started = time.monotonic()
        try:
            got_sha = self._call(f"download of {url}", fetch, counter)
            if want_sha and got_sha != want_sha:
                raise StorageError(f"download of {url}: sha256 {got_sha} != metadata {want_sha}")
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        log.info("downloaded %s → %s (%d bytes in %.1fs)", url, dest, size, time.monotonic() - started)
        return dest
