"""What `vidpipe run ARGS -o OUTPUT` makes of its arguments (issue 6): input files from files, folders, globs and
`@list.txt`, and one output path each (`plan_outputs`), checked for clashes before any work. `runtime.multi` runs
them; `paths.expand_inputs` does the expansion, for `job run` as well."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..errors import UsageError


def expand_inputs(args: Sequence[str | Path]) -> list[Path]:
    """Input files from arguments that are files, directories (their video files, sorted, not recursive), glob
    patterns (sorted; only where no such path exists: `clip[1].mp4` is that file) or `@list.txt` (one path per
    line; blank lines and `#` comments skipped; relative paths are relative to the list file). Each file once,
    in the order first named. `paths.expand_inputs` does it, for `job run` as well."""
    found = paths.expand_inputs(args)
    urls = [f for f in found if paths.is_url(f)]
    if urls:
        raise UsageError(f"vidpipe run reads local files; {urls[0]} needs `vidpipe job run` (it downloads inputs)")
    return [Path(f) for f in found]


def single_file(args: Sequence[str | Path]) -> bool:
    """True for one argument that is not a directory, a glob pattern or a list: `vidpipe run IN -o OUT` keeps its
    one-input meaning (OUT a file, or an image-sequence directory) and its errors (a missing IN included)."""
    if len(args) != 1:
        return False
    arg = str(args[0])
    if Path(arg).is_file():  # an existing file is itself, whatever its name looks like
        return True
    return not (arg.startswith("@") or paths.is_pattern(arg) or Path(arg).is_dir())


@dataclass(frozen=True, slots=True)
class Job:
    input: Path
    output: Path


def output_jobs(inputs: Sequence[Path], out_dir: Path, suffix: str | None = None, *, png: bool = False) -> list[Job]:
    """`OUTDIR/<input stem><suffix>` for each input (suffix: the input's own by default; a PNG sequence: the
    folder `OUTDIR/<input stem>`). Inputs that would get one name (case-insensitively: some file systems are)
    get `<stem>-<hash of their path>` each (`paths.unique_names`: the same inputs, the same names on every run).
    An output that is one of the inputs is refused, before any work."""
    if suffix is not None and not suffix.startswith("."):
        suffix = "." + suffix
    wanted = [p.stem if png else f"{p.stem}{suffix or p.suffix}" for p in inputs]
    names = paths.unique_names(wanted, [str(p) for p in inputs])
    jobs = [Job(p, Path(out_dir) / n) for p, n in zip(inputs, names, strict=True)]
    sources = {p.resolve(): p for p in inputs}
    for j in jobs:
        clash = sources.get(j.output.resolve())
        if clash is not None:
            which = "its input" if clash == j.input else f"the input {clash}"
            raise UsageError(f"output {j.output} would overwrite {which}; choose another -o folder or --suffix")
    return jobs


def plan_outputs(
    args: Sequence[str], output: str, *, suffix: str | None = None, png: bool = False
) -> tuple[list[Job], bool]:
    """The jobs of `vidpipe run ARGS -o OUTPUT`, and whether it is a one-input run:

    - several inputs (or a folder, pattern or list): OUTPUT is a folder, one output each (`output_jobs`);
    - one input, OUTPUT an existing folder or ending in '/': `OUTPUT/<input stem><suffix>` in it, as with several
      (with --encoder png: the PNG sequence in that folder, which must be new or empty);
    - one input, any other OUTPUT: that file (its extension picks the container; none is refused by the
      writer), or with --encoder png that folder.
    Nothing is guessed: the writer refuses what does not fit (`media.writer.check_target`)."""
    out = Path(output)
    if not single_file(args):
        if out.exists() and not out.is_dir():
            raise UsageError(f"-o {out} is a file; several inputs need a folder")
        return output_jobs(expand_inputs(args), out, suffix, png=png), False
    src = Path(str(args[0]))
    as_folder = output.endswith(("/", os.sep)) or out.is_dir()
    if as_folder and not png:
        return output_jobs([src], out, suffix), True
    return [Job(src, out)], True
