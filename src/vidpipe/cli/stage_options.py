"""`vidpipe run`'s stage options, generated from the stage registry (stages/registry.py).

Typer builds a command's options from its function's signature when the app runs, not when the command is
declared, so a command that takes `**stage_values` is given a signature here: its own parameters with one typed
parameter per registered option (`OptionSpec`: flag, type, default, help, `min`) inserted. Nothing here imports
torch or a stage module (`vidpipe --help` stays fast).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from ..stages.registry import OptionSpec, stage_options


def stage_parameter(o: OptionSpec) -> inspect.Parameter:
    """The typer parameter of one registered option: `--name-with-dashes`; a bool is a flag (`--compile`, or
    `--x/--no-x` where it defaults to on); a number with `min` is a range."""
    flag = o.type is bool and not o.default
    info = typer.Option(o.flag, help=o.help, min=o.min) if flag else typer.Option(help=o.help, min=o.min)
    value_type: Any = o.type if o.default is not None else o.type | None
    return inspect.Parameter(
        o.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=o.default, annotation=Annotated[value_type, info]
    )


def own_parameters(command: Callable[..., Any]) -> list[inspect.Parameter]:
    """`command`'s declared parameters, annotations evaluated, without its `**stage_values`; read it before
    `give_stage_options` replaces the signature."""
    params = inspect.signature(command, eval_str=True).parameters.values()
    return [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]


def give_stage_options(command: Callable[..., Any], own: list[inspect.Parameter], after: str) -> None:
    """Make `command`'s signature `own` with every registered stage option inserted after the parameter `after`
    (typer passes them to its `**stage_values`). An option `command` declares itself keeps its own parameter
    (tests/stages/test_registry.py checks that it agrees with the entry). Call again after the registry changed."""
    names = {p.name for p in own}
    stage = [stage_parameter(o) for o in stage_options().values() if o.name not in names]
    at = [p.name for p in own].index(after) + 1
    signature = inspect.Signature([*own[:at], *stage, *own[at:]], return_annotation=None)
    command.__signature__ = signature  # type: ignore[attr-defined]
    # typer resolves annotations with typing.get_type_hints, which reads __annotations__
    command.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()} | {"return": None}
