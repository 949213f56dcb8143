"""The upload half of :class:`~vidpipe.jobs.storage.S3Storage`: a file goes to its key as one PUT with
Content-MD5, or, from the multipart threshold on, in parts each with its Content-MD5 (a part size grown so no
more than 10 000 are needed), re-hashed while sent so a file changed since hashing is never completed, and
aborted on any failure so no invisible, billed parts are left. Verification (HEAD: size, SHA-256 metadata,
ETag), retries and the client stay in :mod:`vidpipe.jobs.storage`, whose `S3Storage` this mixes into."""

from __future__ import annotations

import base64
import hashlib
import logging
import mimetypes
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from vidpipe.errors import StorageError
from vidpipe.jobs.keys import validate_key

if TYPE_CHECKING:
    from vidpipe.jobs.storage import S3Settings

#: the storage module's logger: an upload's records read as before the split (log filters, tests)
log = logging.getLogger("vidpipe.jobs.storage")

MiB: Final = 1024 * 1024
# S3 and B2 refuse parts under 5 MiB (all but the last) and more than 10 000 parts.
MIN_PART_SIZE: Final = 5 * MiB
MAX_PARTS: Final = 10_000
SHA256_META: Final = "sha256"
HASH_CHUNK: Final = 1 * MiB


@dataclass(frozen=True, kw_only=True)
class UploadReceipt:
    """A verified upload."""

    bucket: str
    key: str
    size: int
    sha256: str
    etag: str
    parts: int  # 0 for a single PUT
    attempts: int  # HTTP calls made, retries included
    seconds: float
    verified: bool = True

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True, kw_only=True)
class FileDigest:
    size: int
    sha256: str
    md5: str  # hex; what a single-PUT ETag is on S3-compatible servers


def file_digest(path: Path) -> FileDigest:
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return FileDigest(size=size, sha256=sha.hexdigest(), md5=md5.hexdigest())


class Attempts:
    """HTTP calls made for one operation, retries included (an upload's receipt reports them)."""

    def __init__(self) -> None:
        self.count = 0


class Uploads:
    """Uploads of `S3Storage` (its settings, client, retried `_call` and `verify_object`; see the module
    docstring)."""

    settings: S3Settings
    client: Any
    _call: Callable[..., Any]
    verify_object: Callable[..., dict[str, Any]]

    def upload_file(
        self,
        path: Path | str,
        key: str,
        *,
        content_type: str | None = None,
        digest: FileDigest | None = None,
    ) -> UploadReceipt:
        """Upload ``path`` to ``key`` (validated, never rewritten) and verify it; see the module docstring.

        ``digest`` may be passed when the caller already hashed the file; it is re-checked while sending.
        """
        path = Path(path)
        validate_key(key)
        started = time.monotonic()
        try:
            digest = digest or file_digest(path)
        except FileNotFoundError as e:
            raise StorageError(f"cannot upload {path}: file not found") from e
        except OSError as e:
            raise StorageError(f"cannot read {path} for upload: {e.strerror or e}") from e
        counter = Attempts()
        # A real Content-Type makes the presigned link play or save as video in a browser.
        content_type = content_type or mimetypes.guess_type(key)[0] or "application/octet-stream"
        extra: dict[str, Any] = {"ContentType": content_type}
        if digest.size >= self.settings.multipart_threshold and digest.size > MIN_PART_SIZE:
            etag, parts = self._upload_multipart(path, key, digest, extra, counter)
        else:
            etag, parts = self._upload_single(path, key, digest, extra, counter), 0
        self.verify_object(key, digest=digest, parts=parts, counter=counter)
        seconds = time.monotonic() - started
        log.info(
            "uploaded s3://%s/%s: %d bytes, %s, sha256 %s verified in %.1fs",
            self.settings.bucket,
            key,
            digest.size,
            f"{parts} parts" if parts else "single PUT",
            digest.sha256[:16],
            seconds,
        )
        return UploadReceipt(
            bucket=self.settings.bucket,
            key=key,
            size=digest.size,
            sha256=digest.sha256,
            etag=etag,
            parts=parts,
            attempts=counter.count,
            seconds=seconds,
        )

    def _upload_single(self, path: Path, key: str, digest: FileDigest, extra: dict[str, Any], counter: Attempts) -> str:
        content_md5 = base64.b64encode(bytes.fromhex(digest.md5)).decode()

        def put() -> Any:
            # Reopened per attempt: a failed attempt may have consumed part of the stream. The server checks
            # Content-MD5, so a file changed since hashing is refused (BadDigest), never stored.
            with open(path, "rb") as body:
                return self.client.put_object(
                    Bucket=self.settings.bucket,
                    Key=key,
                    Body=body,
                    ContentLength=digest.size,
                    ContentMD5=content_md5,
                    Metadata={SHA256_META: digest.sha256},
                    **extra,
                )

        resp = self._call(f"upload of s3://{self.settings.bucket}/{key}", put, counter)
        return str(resp.get("ETag", ""))

    def _upload_multipart(
        self, path: Path, key: str, digest: FileDigest, extra: dict[str, Any], counter: Attempts
    ) -> tuple[str, int]:
        bucket = self.settings.bucket
        # Grow the part size if the file would need more than MAX_PARTS parts.
        part_size = max(self.settings.part_size, -(-digest.size // MAX_PARTS))
        n_parts = max(1, -(-digest.size // part_size))
        where = f"s3://{bucket}/{key}"
        created = self._call(
            f"start of multipart upload to {where}",
            lambda: self.client.create_multipart_upload(
                Bucket=bucket, Key=key, Metadata={SHA256_META: digest.sha256}, **extra
            ),
            counter,
        )
        upload_id = created["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            part_md5s: list[bytes] = []
            sha = hashlib.sha256()
            with open(path, "rb") as f:
                for number in range(1, n_parts + 1):
                    chunk = f.read(part_size)
                    sha.update(chunk)
                    md5 = hashlib.md5(chunk, usedforsecurity=False).digest()
                    part_md5s.append(md5)
                    resp = self._call(
                        f"upload of part {number}/{n_parts} of {where}",
                        lambda n=number, c=chunk, m=md5: self.client.upload_part(
                            Bucket=bucket,
                            Key=key,
                            UploadId=upload_id,
                            PartNumber=n,
                            Body=c,
                            ContentLength=len(c),
                            ContentMD5=base64.b64encode(m).decode(),
                        ),
                        counter,
                    )
                    parts.append({"PartNumber": number, "ETag": resp["ETag"]})
                if f.read(1) or sha.hexdigest() != digest.sha256:
                    raise StorageError(f"{path} changed while it was being uploaded to {where}; not completed")
            resp = self._complete(where, bucket, key, upload_id, parts, counter)
        except BaseException:
            # Parts of an unfinished upload are invisible but stored (and billed) until aborted.
            self._abort(where, bucket, key, upload_id)
            raise
        expected = hashlib.md5(b"".join(part_md5s), usedforsecurity=False).hexdigest() + f"-{n_parts}"
        etag = str(resp.get("ETag", "")) if resp else f'"{expected}"'
        return etag, n_parts

    def _complete(
        self,
        where: str,
        bucket: str,
        key: str,
        upload_id: str,
        parts: list[dict[str, Any]],
        counter: Attempts,
    ) -> dict[str, Any] | None:
        from botocore import exceptions as bex

        seen_retry = False

        def complete() -> Any:
            nonlocal seen_retry
            try:
                return self.client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
            except bex.ClientError as e:
                # The first attempt may have completed server-side with its response lost; the retry then
                # finds no upload. The HEAD verification that follows decides whether the object is right.
                if seen_retry and e.response.get("Error", {}).get("Code") == "NoSuchUpload":
                    return None
                raise
            finally:
                seen_retry = True

        return self._call(f"completion of multipart upload to {where}", complete, counter)

    def _abort(self, where: str, bucket: str, key: str, upload_id: str) -> None:
        try:
            self._call(
                f"abort of multipart upload to {where}",
                lambda: self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id),
                Attempts(),
            )
            log.info("aborted incomplete multipart upload to %s", where)
        except StorageError as e:
            # Do not mask the error that made us abort; say how to clean up instead.
            log.error("%s; parts stay stored until abort_incomplete_uploads() or a bucket lifecycle rule", e)

    def abort_incomplete_uploads(self, prefix: str = "", *, max_pages: int = 100) -> int:
        """Abort every unfinished multipart upload under ``prefix`` (e.g. left by a killed run)."""
        counter, aborted = Attempts(), 0
        kwargs: dict[str, Any] = {"Bucket": self.settings.bucket, "Prefix": prefix}
        for _ in range(max_pages):
            page = self._call(
                "listing of incomplete uploads",
                lambda kw=dict(kwargs): self.client.list_multipart_uploads(**kw),
                counter,
            )
            for upload in page.get("Uploads") or []:
                self._abort(
                    f"s3://{self.settings.bucket}/{upload['Key']}",
                    self.settings.bucket,
                    upload["Key"],
                    upload["UploadId"],
                )
                aborted += 1
            if not page.get("IsTruncated"):
                break
            kwargs["KeyMarker"] = page.get("NextKeyMarker", "")
            kwargs["UploadIdMarker"] = page.get("NextUploadIdMarker", "")
        return aborted
