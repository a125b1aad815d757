"""The ``easyphoto`` Typer app, how commands register, and how errors become one line and exit 2.

Every command module does ``from .app import app`` and decorates its function with ``@app.command()``;
:mod:`easyphoto.cli` imports each module once, which is the only registration there is. Commands
parse, call one workflow and render. Options that are settings take their help text and default from
the schema (:func:`setting`), so the CLI never restates a default.
"""

from __future__ import annotations

import re
import sys
import traceback
from typing import Any

import typer

from ..errors import ConfigError, EasyPhotoError

app = typer.Typer(
    name="easyphoto",
    help="EasyPhoto: train a face LoRA from a few photos and paint yourself into template photos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Exit status of every user mistake (bad photo, bad value, unknown user…).
EXIT_BAD_INPUT = 2


def echo_error(message: str) -> None:
    """``error: message`` on stderr."""
    typer.echo(f"error: {message}", err=True)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``error: message`` on stderr and return an Exit to raise."""
    echo_error(message)
    return typer.Exit(code)


#: Settings whose flag is not their field's name.
FLAG_NAMES = {"ui_lang": "--lang"}


def flag(field: str) -> str:
    """The command-line flag of a settings field (``grad_accum`` → ``--grad-accum``)."""
    return FLAG_NAMES.get(field, "--" + field.replace("_", "-"))


def setting(cls: type, name: str, *names: str, help: str | None = None) -> Any:
    """A ``typer.Option`` for settings field ``name``: help from its description, its default shown.

    Declare the parameter with default ``None``; pass the given values through
    :func:`overrides` to ``cls.from_layers`` so unset options keep the schema's default.
    """
    field = cls.model_fields[name]
    default = field.default
    shown = (
        "auto"
        if default is None
        else (", ".join(map(str, default)) if isinstance(default, tuple) else default)
    )
    shown = "none" if shown == "" else shown
    text = f"{help or field.description} (default: {shown})"
    return typer.Option(*(names or (flag(name),)), help=text, show_default=False)


def overrides(**values: Any) -> dict[str, Any]:
    """The options the user gave (``None`` means not given)."""
    return {k: v for k, v in values.items() if v is not None}


def model_config(base_model: str | None, device: str | None, dtype: str | None) -> Any:
    """:class:`~easyphoto.config.ModelConfig` from the environment, with the command's options on top."""
    from ..config import ModelConfig

    return ModelConfig(**overrides(base_model=base_model, device=device, dtype=dtype))


_FIELD_RE = re.compile(r"\b[A-Z][A-Za-z]*(?:Config|Settings)\.([a-z_][a-z0-9_]*)")


def _user_message(exc: EasyPhotoError) -> str:
    """Our error as the user should read it: settings named by their flag."""
    text = str(exc)
    if isinstance(exc, ConfigError) and exc.fields:
        text = _FIELD_RE.sub(lambda m: flag(m.group(1)), text)
    return text


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """EasyPhoto: train a face LoRA from a few photos and paint yourself into template photos."""


#: Placeholders shown in help for each value type (Typer's own are ``<int>``, ``<list[Path]>``…).
_METAVARS = {"int": "N", "float": "NUMBER", "Path": "PATH", "str": "TEXT"}


def _readable_help(command: Any) -> Any:
    """Plain placeholders in ``--help``: none for on/off flags, ``N`` / ``NUMBER`` / ``PATH`` / ``TEXT``
    for values (``PATH...`` for several), choices as their list. Applied to the whole click tree."""
    for param in getattr(command, "params", []):
        if getattr(param, "is_flag", False) or param.name == "help":
            label = ""
        elif getattr(param, "type_descriptor", None) is None or param.type_descriptor.is_choice:
            continue
        else:
            bare = param.bare_type()
            many = bare.startswith("list[")
            label = _METAVARS.get(bare.removeprefix("list[").removesuffix("]"))
            if label is None:
                continue
            label += "..." if many and param.param_type_name == "argument" else ""
        param.display_type_rich = lambda ctx, label=label: label  # noqa: ARG005  (Typer's hook)
    make_help = command.get_help_option  # --help is made per call, not kept in ``params``

    def help_option(ctx: Any, make: Any = make_help) -> Any:
        option = make(ctx)
        if option is not None:
            option.display_type_rich = lambda ctx: ""  # noqa: ARG005
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        _readable_help(sub)
    return command


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``easyphoto`` console script. Returns the exit status.

    Usage errors are handled by click (usage text, status 2). Our own errors (bad photo, no face,
    unknown user, out-of-range setting…) print one line naming the input and exit 2; anything
    unexpected prints one line and exits 1. ``--debug`` adds the traceback.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args
    try:
        command = _readable_help(typer.main.get_command(app))
        result = command.main(args=args, prog_name="easyphoto", standalone_mode=False)
    except typer.Abort:
        echo_error("interrupted")
        return 130
    except typer.exceptions.TyperException as exc:  # bad flag, bad value, unknown command: one line
        ctx = getattr(exc, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        echo_error(message + where)
        return int(getattr(exc, "exit_code", EXIT_BAD_INPUT) or EXIT_BAD_INPUT)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        echo_error(str(code))
        return 1
    except EasyPhotoError as exc:
        if debug:
            traceback.print_exc()
        echo_error(_user_message(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        echo_error("interrupted")
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
        echo_error(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return 1
    return result if isinstance(result, int) else 0


__all__ = [
    "EXIT_BAD_INPUT",
    "app",
    "echo_error",
    "fail",
    "flag",
    "main",
    "model_config",
    "overrides",
    "setting",
]
