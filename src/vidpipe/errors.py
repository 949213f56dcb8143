"""The one error tree of vidpipe.

    VidpipeError                         exit 1   base; never raised itself
    ├── UsageError (ValueError)          exit 2   bad option, flag or value given by the user
    ├── InputError                       exit 3   the input cannot be used
    │   ├── InputNotFoundError (FileNotFoundError)
    │   ├── EmptyInputError (ValueError)          zero-byte file
    │   ├── NotMediaError (ValueError)            not a container FFmpeg can open (text, junk)
    │   ├── TruncatedInputError (ValueError)      container opens but is cut (moov missing, …)
    │   ├── NoVideoStreamError (ValueError)
    │   ├── UnsupportedFormatError (ValueError)   pixel format / codec we cannot decode
    │   ├── InputTooLargeError (ValueError)       frames over the pixel cap, or their buffers over free RAM
    │   └── CorruptInputError (ValueError)        damaged packets mid-stream (--on-corrupt fail)
    ├── OutputError                      exit 4   cannot write/encode the output
    │   ├── EncoderUnavailableError
    │   └── DiskFullError                         no space left (ENOSPC/EDQUOT), or too little to start
    ├── DeviceError (RuntimeError)       exit 5   asked-for device missing or unusable
    │   └── DeviceOutOfMemoryError                OOM that the scheduler's policy could not absorb
    ├── ModelError                       exit 6   model missing, unsafe or wrong (weights, hashes)
    ├── StorageError                     exit 7   upload / download (RetryableStorageError may be retried)
    │   └── RetryableStorageError
    ├── StageError                       exit 8   a stage failed while processing frames
    ├── WorkerFailedError                exit 9   a worker process died on the same item twice (--gpus)
    │   └── ServerLostError                       the `vidpipe serve` process running this run went away
    └── Interrupted                      exit 130 SIGINT/SIGTERM; partial output removed

`retryable` tells job runners whether repeating the same call can succeed. Messages say what was wrong and,
where there is a choice, the valid values: the CLI prints `error: <message>` and exits with `exit_code`.
"""

from __future__ import annotations


class VidpipeError(Exception):
    exit_code: int = 1
    retryable: bool = False


class UsageError(VidpipeError, ValueError):
    exit_code = 2


class InputError(VidpipeError):
    exit_code = 3


class InputNotFoundError(InputError, FileNotFoundError):
    pass


class EmptyInputError(InputError, ValueError):
    pass


class NotMediaError(InputError, ValueError):
    pass


class TruncatedInputError(InputError, ValueError):
    pass


class NoVideoStreamError(InputError, ValueError):
    pass


class UnsupportedFormatError(InputError, ValueError):
    pass


class InputTooLargeError(InputError, ValueError):
    """Frames larger than the pixel cap (`--max-pixels`, `VIDPIPE_MAX_PIXELS`), or a run whose frame buffers
    would not fit in free RAM: refused before decoding instead of failing to allocate mid-run."""


class CorruptInputError(InputError, ValueError):
    pass


class OutputError(VidpipeError):
    exit_code = 4


class EncoderUnavailableError(OutputError):
    pass


class DiskFullError(OutputError):
    """The local disk is full, or too full to start: free space and run again (a job resumes)."""


class DeviceError(VidpipeError, RuntimeError):
    exit_code = 5


class DeviceOutOfMemoryError(DeviceError):
    pass


class ModelError(VidpipeError):
    exit_code = 6


class StorageError(VidpipeError):
    exit_code = 7


class RetryableStorageError(StorageError):
    retryable = True


class StageError(VidpipeError):
    exit_code = 8


class WorkerFailedError(VidpipeError):
    """A worker process (`vidpipe run --gpus`) died twice on the same video or segment (killed, a CUDA fault): the
    run stops and names the item; what other workers finished is kept."""

    exit_code = 9


class ServerLostError(WorkerFailedError):
    """The resident server (`vidpipe serve`) a `vidpipe run` handed its run to closed the connection before the run
    ended (killed, crashed): the run's output was not finished (a partial output is a hidden temp file at most)."""


class Interrupted(VidpipeError):
    exit_code = 130
