"""Local RPA projects: folders named by ``project_id``, each with a ``project.toml``.

```toml
name = "Hello"
description = "Greets params.name"
command = ["{python}", "main.py"]   # argv, run inside the folder; {python} = this interpreter
timeout = 30                        # seconds (optional; XIAOWU_RPA_TIMEOUT still applies)

[params_schema]                     # optional JSON Schema for params
type = "object"
required = ["name"]
properties.name = { type = "string" }

[output_schema]                     # optional JSON Schema for the result; a run whose
type = "object"                     # result breaks it fails
properties.greeting = { type = "string" }

[hints]                             # optional, for MCP clients; these are the defaults
read_only = false                   # it changes nothing
destructive = true                  # what it changes may be lost
idempotent = false                  # running it twice does no more than once
open_world = true                   # it reaches beyond this machine
```

A ``project_id`` is accepted only when it names a folder directly inside the
projects directory once every symlink is resolved: no ``../``, no absolute
paths, no symlinks leading out.
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

from rpa_gateway.backends.base import ToolHints

PROJECT_FILE = "project.toml"
_PROJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ProjectError(Exception):
    """A project cannot be used; ``field`` names the request field at fault."""

    def __init__(self, message: str, field: str = "project_id") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    folder: Path
    name: str
    description: str
    command: tuple[str, ...]
    timeout: float | None
    params_schema: dict[str, Any] | None = field(default=None, compare=False)
    # Built once per load: checked anew per create, a schema cost ~12 % of a burst's CPU.
    validator: Draft202012Validator | None = field(default=None, compare=False)
    output_schema: dict[str, Any] | None = field(default=None, compare=False)
    output_validator: Draft202012Validator | None = field(default=None, compare=False)
    hints: ToolHints = field(default_factory=ToolHints)

    def check_params(self, params: dict[str, Any]) -> None:
        if self.validator is None:
            return
        error = next(iter(self.validator.iter_errors(params)), None)
        if error is not None:
            where = ".".join(("params", *schema_error_path(error)))
            raise ProjectError(f"{where}: {error.message}", where)

    def output_problem(self, result: dict[str, Any]) -> str | None:
        """Why the result breaks the project's ``output_schema``; ``None`` when it fits."""
        if self.output_validator is None:
            return None
        error = next(iter(self.output_validator.iter_errors(result)), None)
        if error is None:
            return None
        where = ".".join(("result", *schema_error_path(error)))
        return f"{where}: {error.message}"


class ProjectCatalog:
    """Project folders, read again whenever their ``project.toml`` changes."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._loaded: dict[str, tuple[tuple[Path, int, int], Project]] = {}

    def get(self, project_id: str) -> Project:
        if not _PROJECT_ID.match(project_id):
            raise ProjectError(f"project_id {project_id!r} is not a project name")
        folder = (self.root / project_id).resolve()
        spec_file = folder / PROJECT_FILE
        try:
            stat = spec_file.stat()
        except OSError:
            stat = None
        if folder.parent != self.root or stat is None or not spec_file.is_file():
            self._loaded.pop(project_id, None)
            raise ProjectError(f"no project {project_id!r} in the projects directory")
        stamp = (folder, stat.st_mtime_ns, stat.st_size)
        cached = self._loaded.get(project_id)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        project = _load(project_id, folder)
        self._loaded[project_id] = (stamp, project)
        return project

    def all(self) -> list[Project]:
        if not self.root.is_dir():
            return []
        found = []
        for entry in sorted(self.root.iterdir()):
            try:
                found.append(self.get(entry.name))
            except ProjectError:
                continue
        return found


def _load(project_id: str, folder: Path) -> Project:
    try:
        spec = tomllib.loads((folder / PROJECT_FILE).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProjectError(
            f"project {project_id!r} has an unreadable {PROJECT_FILE}: {exc}"
        ) from None
    command = spec.get("command")
    if (
        not isinstance(command, list)
        or not command
        or not all(isinstance(part, str) for part in command)
    ):
        raise ProjectError(f"project {project_id!r}: command must be a list of strings")
    timeout = spec.get("timeout")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise ProjectError(f"project {project_id!r}: timeout must be a positive number")
    schema = spec.get("params_schema")
    validator = _validator(project_id, "params_schema", schema)
    output_schema = spec.get("output_schema")
    if output_schema is not None and (
        not isinstance(output_schema, dict) or output_schema.get("type", "object") != "object"
    ):
        raise ProjectError(
            f"project {project_id!r}: output_schema must describe an object (a result is)"
        )
    output_validator = _validator(project_id, "output_schema", output_schema)
    return Project(
        id=project_id,
        folder=folder,
        name=str(spec.get("name", project_id)),
        description=str(spec.get("description", "")),
        command=tuple(sys.executable if part == "{python}" else part for part in command),
        timeout=float(timeout) if timeout is not None else None,
        params_schema=schema,
        validator=validator,
        output_schema=output_schema,
        output_validator=output_validator,
        hints=_hints(project_id, spec.get("hints")),
    )


def schema_error_path(error: ValidationError) -> list[str]:
    """Where in the instance a schema error is: for a missing or unexpected property, the
    property itself (jsonschema puts those at the object holding it)."""
    path = [str(part) for part in error.absolute_path]
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        wanted = error.validator_value if isinstance(error.validator_value, list) else []
        path += [str(name) for name in wanted if name not in instance][:1]
    elif error.validator == "additionalProperties" and isinstance(instance, dict):
        schema = error.schema if isinstance(error.schema, dict) else {}
        known = schema.get("properties", {})
        path += [str(name) for name in instance if name not in known][:1]
    return path


def _validator(project_id: str, key: str, schema: Any) -> Draft202012Validator | None:
    if schema is None:
        return None
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ProjectError(f"project {project_id!r}: {key} is invalid: {exc.message}") from None
    return Draft202012Validator(schema)


_HINTS = tuple(hint.name for hint in fields(ToolHints))


def _hints(project_id: str, table: Any) -> ToolHints:
    if table is None:
        return ToolHints()
    if not isinstance(table, dict):
        raise ProjectError(f"project {project_id!r}: hints must be a table")
    for key, value in table.items():
        if key not in _HINTS:
            raise ProjectError(
                f"project {project_id!r}: hints.{key} is not one of {', '.join(_HINTS)}"
            )
        if not isinstance(value, bool):
            raise ProjectError(f"project {project_id!r}: hints.{key} must be true or false")
    return ToolHints(**table)
