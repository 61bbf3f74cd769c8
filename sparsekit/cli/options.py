"""One declaration per setting: the options of ``sparsekit prune`` come from ``PruneConfig``'s fields.

Each field of :class:`sparsekit.pipeline.PruneConfig` declares its own CLI option in its metadata:

- ``help``: what the setting means (the library's text and the ``--help`` text);
- ``cli_help``: a richer ``--help`` text where the CLI needs one (it may name other flags);
- ``flag``: the option's spelling when it is not ``--field-name`` (``--layerwise/--global``, ``--opt``);
- ``cli_type`` / ``cli_default``: the option's type and default when they differ from the field's
  (``--sparsity`` is a string, optional next to ``--budget``);
- ``cli: False``: a library-only setting (none today).

Tuple fields become repeatable options (``--include A --include B``) and the ``dict`` field a repeatable
``KEY=VALUE`` option. A few options are the CLI's own (``--json``, ``--threads``) or aliases of a method
option (``--objective V`` = ``--opt objective=V``, :data:`METHOD_ALIASES`).

The CLI must start without importing torch, and ``sparsekit.pipeline`` imports it, so the fields are
read from the module's source with ``ast`` (the pattern of ``list_cmd.static_catalog``); a field that is
not made of literals falls back to importing the live dataclass, and a test checks both agree.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from sparsekit.errors import UsageError

PIPELINE = Path(__file__).resolve().parent.parent / "pipeline.py"
REQUIRED = inspect.Parameter.empty

#: method options that keep a flag of their own (today's CLI): flag name -> help; ``--objective V`` is
#: ``--opt objective=V`` (the option of whichever --method takes it)
METHOD_ALIASES: dict[str, str] = {
    "objective": "cts objective: kl, ce, fkl, msefeature",
    "balance": "cts sparsity control: gradbalance or lagrange",
    "relaxation": "gates relaxation: hard-concrete or gaussian",
    "weight_scale": "strong tickets (gates, edge-popup): density (frozen weights x 1/sqrt(layer density)) or "
                    "none [default: density for gates, none for edge-popup]",
}


@dataclass(frozen=True)
class Setting:
    """One field of a config dataclass as the CLI sees it."""

    name: str
    type: str  # the annotation's source text, e.g. "int | None"
    default: Any  # REQUIRED when the field has no default
    metadata: dict

    @property
    def flag(self) -> str:
        """The primary spelling: ``--layerwise`` for ``--layerwise/--global``."""
        return self.metadata.get("flag", "--" + self.name.replace("_", "-")).split("/")[0]

    @property
    def help(self) -> str:
        return self.metadata.get("cli_help", self.metadata.get("help", ""))

    @property
    def on_cli(self) -> bool:
        return self.metadata.get("cli", True) is not False

    @property
    def kind(self) -> str:
        """scalar, repeat (a tuple: one option per item) or pairs (a dict: KEY=VALUE items)."""
        base = self.type.split("|")[0].strip()
        return "repeat" if base.startswith("tuple[") else "pairs" if base.startswith("dict[") else "scalar"


_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "Any": Any, "tuple": tuple, "dict": dict,
          "list": list}


def _type(text: str) -> Any:
    """The annotation text of a field as a type (a small, closed vocabulary: no arbitrary eval)."""
    node = ast.parse(text, mode="eval").body

    def build(n: ast.AST) -> Any:
        if isinstance(n, ast.Constant) and n.value in (None, Ellipsis):
            return type(None) if n.value is None else ...
        if isinstance(n, ast.Name) and n.id in _TYPES:
            return _TYPES[n.id]
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr):
            return build(n.left) | build(n.right)
        if isinstance(n, ast.Subscript):
            args = n.slice.elts if isinstance(n.slice, ast.Tuple) else [n.slice]
            return build(n.value)[tuple(build(a) for a in args)]
        raise ValueError(f"unsupported annotation {text!r}")

    return build(node)


class _NotStatic(Exception):
    pass


def static_settings(path: Path = PIPELINE, class_name: str = "PruneConfig") -> list[Setting]:
    """The fields of ``class_name`` in ``path``, read from the source (no import, no torch)."""
    src = path.read_text()
    start = src.find(f"\nclass {class_name}")
    end = src.find("\n    def ", start)
    if start < 0 or end < 0:
        raise _NotStatic(class_name)
    consts: dict[str, Any] = {}
    for m in re.finditer(r"^([A-Z][A-Z0-9_]*) = (.+)$", src[:start], re.M):
        try:
            consts[m[1]] = ast.literal_eval(m[2])
        except (ValueError, SyntaxError):
            pass
    cls = ast.parse(src[start:end]).body[0]
    assert isinstance(cls, ast.ClassDef)

    def value(n: ast.AST) -> Any:
        if isinstance(n, ast.Name) and n.id in consts:
            return consts[n.id]
        try:
            return ast.literal_eval(n)
        except ValueError:
            raise _NotStatic(ast.unparse(n)) from None

    out = []
    for stmt in cls.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        default, metadata = REQUIRED, {}
        call = stmt.value
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "field":
            kw = {k.arg: k.value for k in call.keywords}
            if "default" in kw:
                default = value(kw["default"])
            elif "default_factory" in kw:
                factory = kw["default_factory"]
                if not (isinstance(factory, ast.Name) and factory.id in ("dict", "list", "tuple")):
                    raise _NotStatic(ast.unparse(factory))
                default = _TYPES[factory.id]()
            metadata = value(kw["metadata"]) if "metadata" in kw else {}
        elif call is not None:
            default = value(call)
        out.append(Setting(stmt.target.id, ast.unparse(stmt.annotation), default, metadata))
    return out


def live_settings() -> list[Setting]:
    """The same table from the imported dataclass (imports torch)."""
    from sparsekit.pipeline import config_fields

    out = []
    for f in config_fields():
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else REQUIRED)
        out.append(Setting(f.name, str(f.type), default, dict(f.metadata)))
    return out


@functools.cache
def settings() -> tuple[Setting, ...]:
    try:
        return tuple(static_settings())
    except (_NotStatic, SyntaxError, OSError):
        return tuple(live_settings())


def by_name() -> dict[str, Setting]:
    return {s.name: s for s in settings()}


def flag_for(setting: str) -> str:
    """The CLI spelling of a setting (a PruneConfig field or a method option alias)."""
    s = by_name().get(setting)
    return s.flag if s is not None else "--" + setting.replace("_", "-")


def _parameter(s: Setting) -> inspect.Parameter:
    if s.kind == "scalar":
        typ = _type(s.metadata.get("cli_type", s.type))
        default = s.metadata.get("cli_default", s.default)
    else:  # repeatable; None = the field's default
        typ, default = list[str] | None, None
    decls = (s.metadata["flag"],) if "flag" in s.metadata else ()
    annotation = Annotated[typ, typer.Option(*decls, help=s.help)]
    return inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _extra(name: str, typ: Any, default: Any, help_text: str, *decls: str) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[typ, typer.Option(*decls, help=help_text)])


def prune_parameters() -> list[inspect.Parameter]:
    """The keyword parameters of the generated ``prune`` command, in the config's field order."""
    params = [_parameter(s) for s in settings() if s.on_cli]
    params += [_extra(name, str | None, None, f"{help_text} (= --opt {name}=VALUE)")
               for name, help_text in METHOD_ALIASES.items()]
    params += [  # the command's own options, not settings of the run
        _extra("threads", int | None, None, "CPU threads for torch [default: torch's choice]"),
        _extra("json_out", str | None, None, "write the result as JSON to PATH (- for stdout)", "--json"),
    ]
    return params


def generated_command(fn):  # noqa: ANN001, ANN201
    """Give ``fn(**values)`` the generated signature, so that Typer builds its options from it."""
    params = prune_parameters()
    fn.__signature__ = inspect.Signature(params, return_annotation=None)
    fn.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    return fn


def parse_kv(pairs: list[str] | None, what: str) -> dict[str, str]:
    """``KEY=VALUE`` items (``--opt``) as a dict; ``what`` names the option in the error."""
    out: dict[str, str] = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} expects KEY=VALUE, got {p!r}")
        out[key.strip()] = value.strip()
    return out


def config_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """PruneConfig keyword arguments from the generated command's values (fields with a ``cli_type``
    are passed as given: the command converts them). Method option aliases go into method_options."""
    kwargs: dict[str, Any] = {}
    for s in settings():
        if not s.on_cli or s.name not in values:
            continue
        v = values[s.name]
        if s.kind == "repeat":
            if v is None:
                continue  # the field's default
            v = tuple(v)
        elif s.kind == "pairs":
            v = parse_kv(v, s.flag)
        kwargs[s.name] = v
    options = kwargs.setdefault("method_options", {})
    for name in METHOD_ALIASES:
        if values.get(name) is not None:
            options[name] = values[name]
    return kwargs


def describe_options(options_cls: type) -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) of each field of a method's ``Options`` dataclass."""
    rows = []
    for f in dataclasses.fields(options_cls):
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        typ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        rows.append((f.name, typ, _as_typed(default), f.metadata.get("help", "")))
    return rows


def _as_typed(value: Any) -> str:
    """A default as one would write it after ``--opt key=``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)
