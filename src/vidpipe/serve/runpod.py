"""The RunPod serverless handler: ``python -m vidpipe.serve.runpod`` (the image's command for a serverless endpoint,
docker/runpod-template.json) starts the SDK's worker loop with :func:`handler`; with ``--test_input '{"input": …}'``
or a ``test_input.json`` in the working directory the SDK runs that one job locally and exits (its test mode).

A job's ``input`` is a :mod:`vidpipe.serve.worker` request: ``{"video": "s3://…" | "https://…", "options": {…the
options of vidpipe run…}, "output": {"bucket", "prefix", "object_key", …}}``. The answer is the result: status,
the uploaded object (bucket, key, size, sha256, presigned URL), timings, the device and whether the models were
already loaded. A failed job answers with ``error`` (one line: the error class and what was wrong), which the SDK
reports as the job's error.

- Models stay loaded between jobs (`worker.WarmChains`, one per worker process).
- Concurrency: one job per GPU (``concurrency_modifier`` returns the number of devices; `worker.DevicePool`).
- Progress: each step (download, start, segment N done, join, upload) through ``runpod.serverless.progress_update``.
- Cancellation: the SDK cancels the job's task; the job stops at its next step and uploads nothing more.

Store credentials come from the endpoint's environment (``B2_KEY``, ``B2_SECRET``, ``B2_ENDPOINT``, ``B2_BUCKET``).
``VIDPIPE_SERVE_DIR`` is where jobs work (default: the system's temp directory); each job's folder is removed
after it. Needs the optional extra: ``pip install 'vidpipe[runpod]'``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from .worker import Worker

log = logging.getLogger(__name__)

_worker: Worker | None = None
_worker_lock = threading.Lock()


def worker() -> Worker:
    """This process's worker, made on first use (its chains then live as long as the process)."""
    global _worker
    with _worker_lock:
        if _worker is None:
            root = Path(os.environ.get("VIDPIPE_SERVE_DIR") or Path(tempfile.gettempdir()) / "vidpipe-serve")
            _worker = Worker(root)
        return _worker


def send_progress(job: dict[str, Any], update: dict[str, Any]) -> None:
    """A progress update through the SDK (posted in a thread of its own; never blocks the job)."""
    import runpod

    runpod.serverless.progress_update(job, update)


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    """One job: run in a thread (the SDK's event loop stays free to receive a cancel), one per device."""
    cancel = threading.Event()
    w = worker()
    try:
        return await asyncio.to_thread(
            w.run, str(job["id"]), job.get("input"), progress=lambda update: send_progress(job, update), cancel=cancel
        )
    except asyncio.CancelledError:
        cancel.set()  # the thread stops at the job's next step; the device is held until then
        log.warning("serve: job %s cancelled", job.get("id"))
        raise


def concurrency(_current: int) -> int:
    """One job per device of this worker."""
    return len(worker().devices)


def main() -> None:
    import runpod

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runpod.serverless.start({"handler": handler, "concurrency_modifier": concurrency})


if __name__ == "__main__":
    main()
