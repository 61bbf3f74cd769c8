"""The Typer app and its one-line error handling."""

from __future__ import annotations

import os
import sys
from typing import Any

import typer
from typer._click import exceptions as click_exc  # typer vendors its own Click
from typer.core import TyperGroup


class _OneLineErrors(TyperGroup):
    """Click usage errors as ONE line on stderr (exit 2) instead of a usage block."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        # global flags are accepted anywhere on the line, not only before the command
        from sparsekit.cli.common import state

        state.debug = state.quiet = state.trust_model_code = False  # fresh per invocation (tests invoke many times)
        for flag, attr in (("--debug", "debug"), ("--quiet", "quiet"), ("-q", "quiet"),
                           ("--trust-model-code", "trust_model_code")):
            if flag in args and "--" not in args[: args.index(flag)]:
                args.remove(flag)
                setattr(state, attr, True)
        # --trust-model-code travels as the environment variable, so the fresh processes that bench
        # starts inherit it; restored afterwards (tests invoke the app many times in one process)
        trust_env = "SPARSEKIT_TRUST_MODEL_CODE"
        saved_trust = os.environ.get(trust_env)
        if state.trust_model_code:
            os.environ[trust_env] = "1"
        try:
            return self._main(args, prog_name, complete_var, **extra)
        finally:
            if saved_trust is None:
                os.environ.pop(trust_env, None)
            else:
                os.environ[trust_env] = saved_trust

    def _main(self, args: list[str], prog_name: Any, complete_var: Any, **extra: Any) -> Any:
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except click_exc.NoArgsIsHelpError as e:
            e.show()
            sys.exit(2)
        except click_exc.ClickException as e:
            sys.stderr.write(f"error: {e.format_message()}\n")
            sys.exit(e.exit_code)
        except click_exc.Abort:
            sys.stderr.write("aborted\n")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Find sparse lottery tickets near initialization and ship them as verified, smaller, faster models.",
)
