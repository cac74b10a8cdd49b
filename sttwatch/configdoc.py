"""config.example.yaml and docs/configuration.md, generated from ``config.SCHEMA`` (and the
exit statuses in docs/operations.md, from ``exitcodes.ExitCode``).

The schema is the one description of every key, so the commented example and the reference
page cannot drift from what validation accepts: tests/test_docs.py regenerates both and
compares. After changing the schema, run ``python -m sttwatch.configdoc`` in the repository
root (``--check`` only reports). ``sttwatch config --example`` prints the example for users.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .config import SCHEMA, Field, parse
from .errors import ConfigError
from .exitcodes import ExitCode, exit_code_table

WIDTH = 100  # longest line of the example file
COMMENT_COLUMN = 31  # where a key's comment starts, unless the key's line is longer
EXAMPLE_PATH = "config.example.yaml"
DOCS_PATH = "docs/configuration.md"
REGENERATE = "python -m sttwatch.configdoc"

HEADER = f"""\
# sttwatch configuration. Relative paths resolve against this file's folder.
# Every key is optional except watch[].path; unknown keys are an error.
# Generated from the schema in sttwatch/config.py by: {REGENERATE}
# Each value shown is the default, except the watch entry's path and create.
"""

KIND_NAMES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
              "auto_bool": "true, false or auto",
              "path": "path", "strlist": "list of strings", "map": "mapping",
              "section": "section", "list": "list of entries"}


def yaml_value(value: Any) -> str:
    """One value in YAML flow style, as a person would write it (``10``, not ``10.0``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        plain = yaml.safe_dump(value, default_flow_style=True, width=1000)
        plain = plain.removesuffix("\n").removesuffix("\n...")
        return plain if plain == value else json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no YAML form for {value!r}")


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)


def _comment_block(doc: str, indent: str = "") -> list[str]:
    return [f"{indent}# {line}" for line in _wrap(doc, WIDTH - len(indent) - 2)]


def _key_lines(indent: str, name: str, field: Field) -> list[str]:
    """``key: value`` with its description as a comment beside it, wrapped in a column."""
    text = f"{indent}{'# ' if field.commented else ''}{name}: {yaml_value(field.shown)}"
    if not field.doc:
        return [text]
    column = max(COMMENT_COLUMN, len(text) + 2)
    lines = _wrap(field.doc, WIDTH - column - 2)
    return [text.ljust(column) + "# " + lines[0]] + [" " * column + "# " + line
                                                     for line in lines[1:]]


def example_yaml() -> str:
    """The commented example config: every key, its default (or example) and its comment."""
    out = [HEADER]
    for name, field in SCHEMA.items():
        out.extend(_comment_block(field.doc))
        if field.kind == "section":
            out.append(f"{name}:")
            for key, child in (field.children or {}).items():
                out.extend(_key_lines("  ", key, child))
        elif field.kind == "list":
            out.append(f"{name}:")
            for i, (key, child) in enumerate((field.children or {}).items()):
                lines = _key_lines("    ", key, child)
                if i == 0:
                    lines[0] = "  - " + lines[0][4:]
                out.extend(lines)
        else:
            out.append(f"{name}: {yaml_value(field.shown)}")
        out.append("")
    return "\n".join(out[:-1]) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _type_of(field: Field) -> str:
    name = KIND_NAMES[field.kind]
    return f"{name} or null" if field.nullable else name


def _description(field: Field) -> str:
    parts = [field.doc.rstrip(".") + "." if field.doc else ""]
    if field.required and "required" not in field.doc:
        parts.append("Required.")
    if field.choices and not all(c in field.doc for c in field.choices):
        lead = "Any of" if field.kind == "strlist" else "One of"
        parts.append(f"{lead}: " + ", ".join(f"`{c}`" for c in field.choices) + ".")
    if field.minimum is not None:
        parts.append(f"At least {field.minimum:g}.")
    return _cell(" ".join(p for p in parts if p))


def _table(prefix: str, fields: Mapping[str, Field]) -> list[str]:
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    long_defaults = []
    for key, field in fields.items():
        shown = yaml_value(field.default) if not field.required else "(none)"
        if len(shown) > 40:
            long_defaults.append(f"Default of `{prefix}{key}`: `{shown}`")
            shown = "below the table"
        else:
            shown = f"`{_cell(shown)}`" if shown != "(none)" else shown
        rows.append(f"| `{prefix}{key}` | {_type_of(field)} | {shown} | "
                    f"{_description(field)} |")
    return rows + [""] + [f"{line}\n" for line in long_defaults]


def sample_error() -> str:
    """What a broken file really prints (the same parse the daemon runs)."""
    broken = 'api:\n  max_in_flight: many\noutput:\n  formats: [docx]\n'
    try:
        parse(broken, Path("config.yaml"))
    except ConfigError as exc:
        return f"sttwatch: {exc}\n"
    raise AssertionError("the sample error config parsed")


def configuration_md() -> str:
    """The reference page: one table per section, generated like the example."""
    out = [
        "# Configuration",
        "",
        f"<!-- Generated from the schema in sttwatch/config.py by `{REGENERATE}`. "
        "Do not edit: change the schema and regenerate. -->",
        "",
        "sttwatch reads one YAML file, given with `--config FILE`. Every key is optional "
        "except `watch[].path`; a key left out takes the default below. Relative paths "
        "resolve against the config file's folder; `~` and `${VAR}` are expanded in paths. "
        "[`config.example.yaml`](../config.example.yaml) shows every key with its default "
        "and a comment (`sttwatch config --example` prints it).",
        "",
        "Unknown keys, wrong types and values out of range are errors that name the file and "
        "the key, all reported at once, and `sttwatch` exits with status "
        f"{int(ExitCode.CONFIG)} before it touches anything:",
        "",
        "```",
        sample_error().rstrip("\n"),
        "```",
        "",
        "`sttwatch check --config FILE` validates the file and also checks the folders, the "
        "inotify limit and the API key (see [operations](operations.md)).",
        "",
    ]
    for name, field in SCHEMA.items():
        out.append(f"## `{name}`")
        out.append("")
        if field.kind == "section":
            out += [field.doc, ""]
            out += _table(f"{name}.", field.children or {})
        elif field.kind == "list":
            out += [field.doc + " A list; each entry takes these keys.", ""]
            out += _table(f"{name}[].", field.children or {})
        else:
            out += _table("", {name: field})
    while out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


OPERATIONS_PATH = "docs/operations.md"
BLOCK = "exit-statuses"


def with_exit_statuses(text: str) -> str:
    """docs/operations.md with its marked block of exit statuses rewritten from ExitCode."""
    start = text.index(f"<!-- {BLOCK}:")
    start = text.index("\n", start) + 1
    end = text.index(f"<!-- /{BLOCK} -->", start)
    return text[:start] + exit_code_table() + text[end:]


GENERATED = {EXAMPLE_PATH: example_yaml, DOCS_PATH: configuration_md}


def _fresh(root: Path) -> dict[str, str]:
    """What each generated file should hold now; a partly generated one is read first."""
    out = {rel: make() for rel, make in GENERATED.items()}
    ops = root / OPERATIONS_PATH
    if ops.is_file():
        out[OPERATIONS_PATH] = with_exit_statuses(ops.read_text(encoding="utf-8"))
    return out


def stale(root: Path) -> list[str]:
    """The generated files under ``root`` that differ from what the schema gives now."""
    out = []
    for rel, text in _fresh(root).items():
        path = root / rel
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            out.append(rel)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=REGENERATE, description="Regenerate "
                                f"{EXAMPLE_PATH} and {DOCS_PATH} from the config schema.")
    p.add_argument("--root", type=Path, default=Path("."),
                   help="the repository root (default: the current folder)")
    p.add_argument("--check", action="store_true",
                   help="only report stale files (exit 1 when any is stale)")
    args = p.parse_args(argv)
    if args.check:
        for rel in stale(args.root):
            print(f"{rel}: out of date with the schema; run {REGENERATE}")
        return 1 if stale(args.root) else 0
    for rel, text in _fresh(args.root).items():
        path = args.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
