"""Files and paths, below every other module: media, runtime, schedule and jobs import it; it imports only the
error tree (issue 15).

- `expand_inputs`: the one input expansion of `vidpipe run` and `vidpipe job run`. An argument that names an
  existing path is taken literally (`clip[1].mp4` is that file, never a pattern); only a path that does not
  exist is a glob.
- `unique_names`: the one rule that keeps output names (files, object keys) of different inputs apart.
- `sha256_file`, `content_sample`: file hashing (whole, or sampled for re-run checks).
- `write_bytes`, `write_json`: atomic writes (temp file, fsync, rename); `jobs.atomic` re-exports them.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

from .errors import InputNotFoundError, UsageError

#: what a directory given as input contributes (globs and list files take any file they name)
VIDEO_SUFFIXES: Final = frozenset(
    {".mp4", ".m4v", ".mkv", ".mov", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".flv", ".wmv"}
    | {".ogv", ".mxf", ".y4m", ".3gp"}
)
GLOB_CHARS: Final = frozenset("*?[")
URL_SCHEMES: Final = ("s3://",)


def is_url(arg: str) -> bool:
    return arg.startswith(URL_SCHEMES)


def is_pattern(arg: str) -> bool:
    """A glob pattern: glob characters in a path that does not exist (an existing path is always literal)."""
    return bool(GLOB_CHARS & set(arg)) and not is_url(arg) and not os.path.lexists(arg)


def _glob(pattern: str) -> list[str]:
    """Files matching `pattern`, sorted. Its leading folders that exist are taken literally, so that
    `in[1]/*.mp4` looks inside the folder `in[1]`."""
    head, parts = pattern, []
    while head and not os.path.isdir(head):
        head, tail = os.path.split(head)
        if not tail:
            break
        parts.append(tail)
    literal = glob.escape(head) if head and os.path.isdir(head) else head
    full = os.path.join(literal, *reversed(parts)) if parts else literal
    return sorted(m for m in glob.glob(full) if os.path.isfile(m))


def _read_list(arg: str) -> list[str]:
    lst = Path(arg[1:]).expanduser()
    try:
        lines = lst.read_text().splitlines()
    except OSError as e:
        raise InputNotFoundError(f"cannot read input list {lst}: {e.strerror or e}") from e
    named = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    # relative paths are relative to the list file; URLs and absolute paths stay as they are
    return [p if is_url(p) or Path(p).is_absolute() else str(lst.parent / p) for p in named]


def expand_inputs(args: Sequence[str | os.PathLike[str]], *, missing: Literal["error", "keep"] = "error") -> list[str]:
    """Input files from arguments, each once, in the order first named:

    - a path that exists is taken literally: a file as it is, a directory as its video files (VIDEO_SUFFIXES,
      sorted, not recursive; none is an error);
    - `s3://…` URLs are passed through (`vidpipe job run` downloads them);
    - `@list.txt` (when no file of that name exists): one input per line, expanded in turn; blank lines and `#`
      comments skipped, relative paths relative to the list file;
    - a path that does not exist is a glob pattern if it has glob characters (sorted matches; none is an error);
    - any other path does not exist: InputNotFoundError, or, with `missing="keep"`, passed on for the caller to
      report with that input (a job records it failed and goes on with the others).
    """
    out: dict[str, str] = {}
    for arg in map(os.fspath, args):
        found: list[str]
        if is_url(arg) or os.path.isfile(arg):
            found = [arg]
        elif os.path.isdir(arg):
            found = sorted(str(p) for p in Path(arg).iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise InputNotFoundError(f"no video file ({', '.join(sorted(VIDEO_SUFFIXES))}) in directory {arg}")
        elif arg.startswith("@") and len(arg) > 1:
            found = expand_inputs(_read_list(arg), missing=missing)
        elif is_pattern(arg):
            found = _glob(arg)
            if not found:
                raise InputNotFoundError(f"no files match {arg}")
        elif missing == "keep":
            found = [arg.rstrip("/") or arg]
        else:
            raise InputNotFoundError(f"{arg}: no such file")
        for p in found:
            out.setdefault(p if is_url(p) else os.path.normpath(p), p)
    return list(out.values())


# -- output names ------------------------------------------------------------------------------------------

#: hex digits of the path hash that tells apart inputs that would get one output name
TAG_HEX: Final = 8


def _parts(source: str) -> tuple[str, ...]:
    """A source's path components: URLs as written, local paths made absolute (the same file named relatively
    or absolutely gets the same tag)."""
    if is_url(source):
        return tuple(p for p in source.split("/") if p)
    return Path(os.path.abspath(source)).parts


def name_tag(source: str, others: Sequence[str]) -> str:
    """The short hash that tells `source` apart from `others`: sha256 of its path relative to the folder they
    all share (so a run from another working directory, or with absolute paths, names outputs the same)."""
    mine = _parts(source)
    common = len(mine)
    for other in others:
        theirs = _parts(other)
        n = 0
        while n < min(common, len(theirs)) and mine[n] == theirs[n]:
            n += 1
        common = n
    relative = "/".join(mine[min(common, len(mine) - 1) :])
    return hashlib.sha256(relative.encode("utf-8", "surrogateescape")).hexdigest()[:TAG_HEX]


def unique_names(
    names: Sequence[str], sources: Sequence[str], *, key: Callable[[str], str] = str.casefold
) -> list[str]:
    """Output names that differ per source. `names[i]` is the name `sources[i]` would get (a file name or an
    object key); names equal under `key` (case-insensitively by default: some file systems are) each get
    `-<tag>` before their extension, the tag a hash of the source's path relative to the folder the colliding
    sources share (`name_tag`). Deterministic: the same sources give the same names on every run. A name
    still taken twice after that (two sources that are one path) is a UsageError, raised before any work."""
    if len(names) != len(sources):
        raise ValueError("unique_names: one name per source")
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        groups.setdefault(key(n), []).append(i)
    out = list(names)
    for members in groups.values():
        if len(members) < 2:
            continue
        for i in members:
            tag = name_tag(sources[i], [sources[j] for j in members if j != i])
            p = PurePosixPath(names[i])
            out[i] = str(p.with_name(f"{p.stem}-{tag}{p.suffix}")) if p.name else f"{names[i]}-{tag}"
    seen: dict[str, int] = {}
    for i, n in enumerate(out):
        if key(n) in seen:
            raise UsageError(f"{sources[seen[key(n)]]} and {sources[i]} would both be written to {n}; rename one")
        seen[key(n)] = i
    return out


# -- hashing -----------------------------------------------------------------------------------------------

HASH_CHUNK: Final = 1 << 20
#: content_sample: files smaller than this are hashed whole; larger ones by head, tail and SAMPLE_BLOCKS blocks
#: spread evenly between them (SAMPLE_BLOCK bytes each; an odd count, so one is centred): 17 MiB read whatever
#: the file's size, tens of milliseconds
WHOLE_FILE_BELOW: Final = 32 << 20
SAMPLE_BLOCK: Final = 1 << 20
SAMPLE_BLOCKS: Final = 15


def sha256_file(path: str | os.PathLike[str], check: Callable[[], None] | None = None) -> str:
    """sha256 of the whole file; `check` is called after each chunk (an interrupt check)."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            sha.update(chunk)
            if check is not None:
                check()
    return sha.hexdigest()


def content_sample(path: str | os.PathLike[str]) -> str:
    """sha256 of the file's size and content: all of it below WHOLE_FILE_BELOW, else its head, its tail and
    SAMPLE_BLOCKS blocks at evenly spaced offsets. Cheap enough for every re-run check of a multi-gigabyte
    video, and it tells apart files that size and mtime do not (another file copied with its mtime)."""
    size = os.stat(path).st_size
    if size < WHOLE_FILE_BELOW:
        return sha256_file(path)
    sha = hashlib.sha256(f"{size}\n".encode())
    step = (size - SAMPLE_BLOCK) // (SAMPLE_BLOCKS + 1)
    offsets = [0, *(step * (i + 1) for i in range(SAMPLE_BLOCKS)), size - SAMPLE_BLOCK]
    with open(path, "rb") as f:
        for off in offsets:
            f.seek(off)
            sha.update(f.read(SAMPLE_BLOCK))
    return sha.hexdigest()


# -- atomic writes -----------------------------------------------------------------------------------------

#: ordinary files (manifests, model caches); files that hold a presigned URL pass 0o600
DEFAULT_MODE: Final = 0o644


def write_bytes(path: Path, data: bytes, mode: int = DEFAULT_MODE) -> None:
    """Write `data` to `path` atomically: temp file in the same folder, fsync, rename. A reader sees the old
    file or the whole new one, never a torn one, even after a crash or SIGKILL."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)  # mkstemp's 0600 would make every manifest private
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # fsync the directory so the rename itself survives a power loss.
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_json(path: Path, obj: Any, mode: int = DEFAULT_MODE) -> None:
    write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode(), mode)
