"""Playbooks: a named DAG of tool steps, shipped as YAML in ``processors/shared/playbooks/`` or
brought inline by a task (``constraints.playbook``), and their validation.

A step's input may refer to values that are known only later. The syntax is
``{{ namespace.path }}``:

- ``{{steps.<id>.output}}`` is the whole output of an upstream step, and
  ``{{steps.<id>.output.<field>...}}`` one field of it (a list item by its index);
  the step must be upstream, that is reachable through ``depends_on``;
- ``{{inputs.<name>}}`` is a playbook input: its default is in the playbook's ``inputs``
  and a task overrides it with ``constraints.playbook_inputs``;
- ``{{task.description}}`` is the task's description.

Inputs and the task description are substituted when the plan is made; step outputs when
the step runs. A string that is exactly one reference takes the referenced value with its
type; a reference inside a longer string, or a non-string value where the tool's schema
wants a string, becomes text (JSON for anything that is not a string). When a step's
input is checked against its tool's schema, a value that is a reference is accepted
wherever it stands. Double braces around anything that does not start with ``steps``,
``inputs`` or ``task`` are plain text (Python's ``f"{{x}}"`` in inline code stays as it is).

What a task may run is decided by who submitted it: an inline playbook needs the scope
``playbooks:inline`` and a step of a tool in :data:`~processors.tools.allocation.TOOL_SCOPES`
(code.python) that tool's scope, both read from task.submitted ``grants``.
:func:`required_scopes` tells the API at submission; :func:`authorize_constraints` and
:func:`authorize_playbook` hold the SuperAgent to it, whichever playbook it ends up with.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from processors.tools.allocation import (
    TOOL_SCOPES,
    ForbiddenToolError,
    forbidden_message,
    forbidden_tools,
)
from processors.tools.registry import PlanningError, ToolRegistry, parse_requirement

PLAYBOOKS_DIR = Path(__file__).with_name("playbooks")
REFERENCE = re.compile(r"\{\{\s*((?:steps|inputs|task)(?:\.[\w-]+)*)\s*\}\}")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
INLINE_SCOPE = "playbooks:inline"
"""The scope a task needs to bring its own playbook in ``constraints.playbook``."""


class PlaybookError(PlanningError):
    """A playbook that cannot run. ``code`` (also ``reason``) says why, stably:
    PLAYBOOK_NOT_FOUND, INVALID_PLAYBOOK, DUPLICATE_STEP, UNKNOWN_TOOL, INVALID_INPUT,
    UNKNOWN_DEPENDENCY, BAD_REFERENCE, PLAYBOOK_CYCLE or FORBIDDEN_PLAYBOOK (an inline
    playbook from a submitter without ``playbooks:inline``)."""

    code = "INVALID_PLAYBOOK"

    def __init__(self, reason: str, message: str, **details: Any) -> None:
        super().__init__(message, reason=reason, **details)
        self.code = reason
        self.reason = reason


class PlaybookStep(BaseModel):
    """One tool call of a playbook."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=_NAME.pattern, max_length=64)
    tool: str = Field(description="A tool name, optionally with a version constraint.")
    input: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    role: str | None = None
    optional: bool = Field(False, description="The task may complete without this step.")
    timeout: int | None = Field(None, ge=1, le=86_400, description="Seconds.")
    retry: int = Field(0, ge=0, le=10, description="Retries after the first attempt.")
    success_criteria: list[str] = Field(default_factory=list)


class Playbook(BaseModel):
    """A named DAG of steps. ``inputs`` holds the defaults of ``{{inputs.<name>}}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    description: str = ""
    inputs: dict[str, Any] = Field(default_factory=dict)
    steps: list[PlaybookStep] = Field(min_length=1, max_length=200)


def playbook_json_schema() -> dict[str, Any]:
    """The JSON Schema of a playbook, for files and for ``constraints.playbook`` inline."""
    return Playbook.model_json_schema()


def references(value: Any) -> list[tuple[str, ...]]:
    """Every reference in ``value`` (nested anywhere), as dotted paths split into parts."""
    found: list[tuple[str, ...]] = []
    if isinstance(value, str):
        found.extend(tuple(match.split(".")) for match in REFERENCE.findall(value))
    elif isinstance(value, Mapping):
        for item in value.values():
            found.extend(references(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(references(item))
    return found


def step_inputs(step: PlaybookStep) -> list[str]:
    """The ids of the steps whose outputs ``step`` reads, sorted."""
    return sorted({ref[1] for ref in references(step.input) if ref[0] == "steps" and len(ref) > 1})


def is_reference(value: Any) -> bool:
    """Whether ``value`` is a string that is exactly one reference."""
    return isinstance(value, str) and REFERENCE.fullmatch(value.strip()) is not None


def substitute(value: Any, inputs: Mapping[str, Any], task_description: str | None = None) -> Any:
    """``value`` with ``{{inputs.*}}`` (and ``{{task.description}}`` when given) replaced;
    references to step outputs stay as they are."""

    def lookup(parts: list[str]) -> tuple[bool, Any]:
        if parts[0] == "inputs" and len(parts) == 2 and parts[1] in inputs:
            return True, inputs[parts[1]]
        if parts == ["task", "description"] and task_description is not None:
            return True, task_description
        return False, None

    if isinstance(value, str):
        whole = REFERENCE.fullmatch(value.strip())
        if whole:
            known, found = lookup(whole.group(1).split("."))
            return found if known else value

        def text(match: re.Match[str]) -> str:
            known, found = lookup(match.group(1).split("."))
            if not known:
                return match.group(0)
            return found if isinstance(found, str) else json.dumps(found, sort_keys=True)

        return REFERENCE.sub(text, value)
    if isinstance(value, Mapping):
        return {key: substitute(item, inputs, task_description) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, inputs, task_description) for item in value]
    return value


def resolve_outputs(value: Any, outputs: Mapping[str, Any]) -> Any:
    """``value`` with every ``{{steps.<id>.output...}}`` replaced from ``outputs`` (step id
    to output, None for a skipped step), when the step runs. A path that an output lacks is
    a PlaybookError BAD_REFERENCE naming it; a path into a skipped step's output is None;
    list items are addressed by their index."""

    def lookup(parts: list[str]) -> Any:
        if len(parts) < 3 or parts[0] != "steps" or parts[2] != "output":
            raise PlaybookError("BAD_REFERENCE", f"{'.'.join(parts)} is not a step output")
        if parts[1] not in outputs:
            raise PlaybookError(
                "BAD_REFERENCE", f"step {parts[1]} has no output yet", reference=".".join(parts)
            )
        found = outputs[parts[1]]
        for part in parts[3:]:
            if found is None:
                return None  # a skipped optional step: nothing to read, not an error
            if isinstance(found, Mapping) and part in found:
                found = found[part]
            elif isinstance(found, list) and part.isdigit() and int(part) < len(found):
                found = found[int(part)]
            else:
                raise PlaybookError(
                    "BAD_REFERENCE",
                    f"the output of step {parts[1]} has nothing at {'.'.join(parts[3:])}",
                    reference=".".join(parts),
                )
        return found

    if isinstance(value, str):
        whole = REFERENCE.fullmatch(value.strip())
        if whole and whole.group(1).startswith("steps."):
            return lookup(whole.group(1).split("."))

        def text(match: re.Match[str]) -> str:
            if not match.group(1).startswith("steps."):
                return match.group(0)
            found = lookup(match.group(1).split("."))
            return found if isinstance(found, str) else json.dumps(found, sort_keys=True)

        return REFERENCE.sub(text, value)
    if isinstance(value, Mapping):
        return {key: resolve_outputs(item, outputs) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_outputs(item, outputs) for item in value]
    return value


_URL = re.compile(r"^(https?|file)://")


def as_text(value: Any) -> str:
    """Readable text of an output for a field that wants a string: a string as it is, a
    list item by item, an object by its text fields (links left out: they are sources)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, list):
        return "\n\n".join(text for text in (as_text(item) for item in value) if text)
    if isinstance(value, Mapping):
        parts = [
            as_text(item)
            for item in value.values()
            if isinstance(item, (str, list, Mapping)) and not _URL.match(str(item))
        ]
        return "\n".join(part for part in parts if part)
    return json.dumps(value, sort_keys=True)


def fit_to_schema(value: Any, schema: Mapping[str, Any] | bool) -> Any:
    """``value`` shaped for ``schema`` where a resolved reference gave another shape: text
    where a string is wanted (:func:`as_text`), a link (an object's ``url``) or text where
    a list of strings is wanted, a number from numeric text. Anything else is left for the
    tool's own validation to judge.

    A schema may be a boolean (``true`` accepts anything, ``false`` nothing), as ``items``
    or a property may be in an MCP server's input schema: there is no shape to fit, so
    the value is left as it is."""
    if not isinstance(schema, Mapping):
        return value
    kind = schema.get("type")
    if kind == "string" and not isinstance(value, str):
        return as_text(value)
    if kind in ("integer", "number") and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if kind == "integer" and number.is_integer() else number
    if kind == "array" and isinstance(value, list):
        items = schema.get("items", True)
        if not isinstance(items, Mapping):
            return value
        if items.get("type") == "string":
            return [
                item
                if isinstance(item, str)
                else str(item["url"])
                if isinstance(item, Mapping) and isinstance(item.get("url"), str)
                else as_text(item)
                for item in value
            ]
        return [fit_to_schema(item, items) for item in value]
    if kind == "object" and isinstance(value, Mapping):
        properties = schema.get("properties") or {}
        return {
            key: fit_to_schema(item, properties[key]) if key in properties else item
            for key, item in value.items()
        }
    return value


def topological_steps(playbook: Playbook) -> list[PlaybookStep]:
    """The steps with each after its dependencies; ties keep the playbook's order.

    Raises PlaybookError UNKNOWN_DEPENDENCY or PLAYBOOK_CYCLE.
    """
    index = {step.id: position for position, step in enumerate(playbook.steps)}
    pending: dict[str, set[str]] = {}
    for step in playbook.steps:
        unknown = [dep for dep in step.depends_on if dep not in index]
        if unknown:
            raise PlaybookError(
                "UNKNOWN_DEPENDENCY",
                f"step {step.id} depends on {', '.join(unknown)}, which playbook "
                f"{playbook.name} does not have; its steps: {', '.join(index)}",
                step=step.id,
                missing=unknown,
            )
        pending[step.id] = set(step.depends_on)
    ready = [(index[sid], sid) for sid, deps in pending.items() if not deps]
    heapq.heapify(ready)
    ordered: list[PlaybookStep] = []
    while ready:
        _, sid = heapq.heappop(ready)
        ordered.append(playbook.steps[index[sid]])
        for other, deps in pending.items():
            if sid in deps:
                deps.discard(sid)
                if not deps:
                    heapq.heappush(ready, (index[other], other))
    if len(ordered) != len(playbook.steps):
        stuck = sorted(sid for sid, deps in pending.items() if deps)
        raise PlaybookError(
            "PLAYBOOK_CYCLE",
            f"steps of playbook {playbook.name} depend on each other in a circle: "
            f"{', '.join(stuck)}",
            steps=stuck,
        )
    return ordered


def upstream(playbook: Playbook) -> dict[str, set[str]]:
    """For each step id, every step it depends on, directly or not."""
    ancestors: dict[str, set[str]] = {}
    for step in topological_steps(playbook):
        found = set(step.depends_on)
        for dep in step.depends_on:
            found |= ancestors[dep]
        ancestors[step.id] = found
    return ancestors


def _check_references(playbook: Playbook, step: PlaybookStep, ancestors: set[str]) -> None:
    for ref in references(step.input):
        text = "{{" + ".".join(ref) + "}}"
        if ref[0] == "steps" and len(ref) >= 3 and ref[2] == "output":
            if ref[1] not in ancestors:
                raise PlaybookError(
                    "BAD_REFERENCE",
                    f"step {step.id} reads {text}, but {ref[1]} is not upstream of it; add "
                    f"{ref[1]} to its depends_on (directly or through another step)",
                    step=step.id,
                    reference=text,
                )
        elif ref[0] == "inputs" and len(ref) == 2:
            if ref[1] not in playbook.inputs:
                raise PlaybookError(
                    "BAD_REFERENCE",
                    f"step {step.id} reads {text}, but playbook {playbook.name} declares "
                    f"no input {ref[1]!r}; its inputs: {', '.join(playbook.inputs) or 'none'}",
                    step=step.id,
                    reference=text,
                )
        elif ref != ("task", "description"):
            raise PlaybookError(
                "BAD_REFERENCE",
                f"step {step.id} has {text}, which is not a reference WrenchAI knows; use "
                "{{steps.<id>.output[.field]}}, {{inputs.<name>}} or {{task.description}}",
                step=step.id,
                reference=text,
            )


def _check_input(playbook: Playbook, step: PlaybookStep, registry: ToolRegistry) -> None:
    try:
        spec = registry.get(step.tool)
    except PlanningError as exc:
        raise PlaybookError(
            "UNKNOWN_TOOL", f"step {step.id}: {exc.message}", step=step.id, tool=step.tool
        ) from exc
    value = substitute(step.input, playbook.inputs)
    validator = Draft202012Validator(spec.input_schema)
    for error in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path)):
        if is_reference(error.instance):
            continue  # known only when the plan is made or the upstream step has run
        where = "/".join(str(part) for part in error.absolute_path) or "(input)"
        raise PlaybookError(
            "INVALID_INPUT",
            f"step {step.id}: input for {spec.ref} is invalid at {where}: {error.message}",
            step=step.id,
            tool=spec.name,
            path=where,
        )


def validate_playbook(playbook: Playbook, registry: ToolRegistry) -> Playbook:
    """``playbook`` if it can run with ``registry``'s tools; PlaybookError otherwise."""
    seen: set[str] = set()
    for step in playbook.steps:
        if step.id in seen:
            raise PlaybookError(
                "DUPLICATE_STEP",
                f"playbook {playbook.name} has two steps called {step.id}; step ids are unique",
                step=step.id,
            )
        seen.add(step.id)
    ancestors = upstream(playbook)
    for step in playbook.steps:
        _check_input(playbook, step, registry)
        _check_references(playbook, step, ancestors[step.id])
    return playbook


def list_playbooks(directory: Path = PLAYBOOKS_DIR) -> list[str]:
    """The names of the playbook files in ``directory``, sorted."""
    return sorted(path.stem for path in Path(directory).glob("*.yaml"))


def _parse(raw: Any, origin: str) -> Playbook:
    try:
        return Playbook.model_validate(raw)
    except ValidationError as exc:
        raise PlaybookError(
            "INVALID_PLAYBOOK", f"{origin} is not a valid playbook: {exc}", origin=origin
        ) from None


def load_playbook(
    name_or_inline: str | Mapping[str, Any],
    directory: Path = PLAYBOOKS_DIR,
    inputs: Mapping[str, Any] | None = None,
) -> Playbook:
    """A shipped playbook by name (``research_report``) or an inline one (a mapping in
    the playbook schema), with ``inputs`` (``constraints.playbook_inputs``) over its
    defaults. Validate it with :func:`validate_playbook` before use."""
    if isinstance(name_or_inline, str):
        name = name_or_inline
        path = Path(directory) / f"{name}.yaml"
        if not _NAME.match(name) or not path.is_file():
            raise PlaybookError(
                "PLAYBOOK_NOT_FOUND",
                f"there is no playbook called {name!r}; available: "
                f"{', '.join(list_playbooks(directory)) or 'none'}",
                playbook=name,
            )
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise PlaybookError("INVALID_PLAYBOOK", f"{path} is not YAML: {exc}") from exc
        playbook = _parse(raw, str(path))
    elif isinstance(name_or_inline, Mapping):
        playbook = _parse(dict(name_or_inline), "the inline playbook")
    else:
        raise PlaybookError(
            "INVALID_PLAYBOOK",
            "constraints.playbook must be the name of a playbook or a playbook object, not "
            f"{type(name_or_inline).__name__}",
        )
    if inputs:
        unknown = sorted(set(inputs) - set(playbook.inputs))
        if unknown:
            raise PlaybookError(
                "INVALID_PLAYBOOK",
                f"playbook {playbook.name} takes no input {', '.join(unknown)}; its inputs: "
                f"{', '.join(playbook.inputs) or 'none'}",
                playbook=playbook.name,
                unknown=unknown,
            )
        playbook = playbook.model_copy(update={"inputs": {**playbook.inputs, **inputs}})
    return playbook


def load_playbooks(extra_dir: Path | None = None) -> dict[str, Playbook]:
    """Every shipped playbook by name, then those in ``extra_dir``
    (``WRENCH_PLAYBOOKS_DIR``), which replace shipped ones of the same name. A file that
    does not parse is a PlaybookError naming it, so a bad deployment fails at start-up."""
    playbooks = {name: load_playbook(name) for name in list_playbooks()}
    if extra_dir is not None:
        if not Path(extra_dir).is_dir():
            raise PlaybookError(
                "PLAYBOOK_NOT_FOUND",
                f"the playbooks folder {extra_dir} does not exist; fix WRENCH_PLAYBOOKS_DIR",
                directory=str(extra_dir),
            )
        for name in list_playbooks(extra_dir):
            playbooks[name] = load_playbook(name, extra_dir)
    return playbooks


def playbook_roles(playbook: Playbook) -> list[str]:
    """The roles the playbook's steps name, sorted (for the SuperAgent to assign)."""
    return sorted({step.role for step in playbook.steps if step.role})


def playbook_tools(playbook: Playbook) -> dict[str, list[str]]:
    """Per role, the tool requirements of the steps assigned to it (for allocation to pin)."""
    pinned: dict[str, list[str]] = {}
    for step in playbook.steps:
        if step.role and step.tool not in pinned.setdefault(step.role, []):
            pinned[step.role].append(step.tool)
    return pinned


# -- what a task may run ---------------------------------------------------------------------
def _tool_name(requirement: str) -> str:
    try:
        return parse_requirement(requirement)[0]
    except PlanningError:
        return requirement.strip()  # not a tool anyone registers; validation says so later


def _raw_steps(playbook: Any) -> list[tuple[str, str]]:
    """(step id, tool name) of each step of a playbook that may not be valid yet."""
    steps = playbook.get("steps") if isinstance(playbook, Mapping) else None
    if not isinstance(steps, list):
        return []
    found = []
    for position, step in enumerate(steps, start=1):
        if isinstance(step, Mapping) and isinstance(step.get("tool"), str):
            step_id = str(step.get("id") or f"#{position}")[:64]
            found.append((step_id, _tool_name(step["tool"])))
    return found


def required_scopes(
    constraints: Mapping[str, Any] | None, playbooks: Mapping[str, Playbook] | None = None
) -> frozenset[str]:
    """The execution scopes a task with ``constraints`` needs, known at submission:
    ``playbooks:inline`` when ``constraints.playbook`` is a playbook object, and the scope
    of each tool its steps call (``tools:code`` for code.python). With ``playbooks`` (the
    deployment's, :func:`load_playbooks`), a playbook named in the constraints counts too.

    Pure and lenient: it never raises, whatever the constraints hold, so the API can call
    it before anything validates them. A playbook the reasoner chooses later is not known
    here; the SuperAgent checks that one against the task's grants.
    """
    chosen = constraints.get("playbook") if isinstance(constraints, Mapping) else None
    needed: set[str] = set()
    if isinstance(chosen, Mapping):
        needed.add(INLINE_SCOPE)
        tools = [tool for _, tool in _raw_steps(chosen)]
    elif isinstance(chosen, str) and playbooks is not None and chosen in playbooks:
        tools = [_tool_name(step.tool) for step in playbooks[chosen].steps]
    else:
        tools = []
    needed.update(TOOL_SCOPES[tool] for tool in tools if tool in TOOL_SCOPES)
    return frozenset(needed)


def authorize_constraints(constraints: Mapping[str, Any] | None, grants: Iterable[str]) -> None:
    """Refuse, before any planning, a task that brings what its submitter may not run: an
    inline playbook without ``playbooks:inline`` (PlaybookError FORBIDDEN_PLAYBOOK), or an
    inline step calling a tool whose scope is not granted (ForbiddenToolError)."""
    held = frozenset(grants)
    chosen = constraints.get("playbook") if isinstance(constraints, Mapping) else None
    if not isinstance(chosen, Mapping):
        return
    if INLINE_SCOPE not in held:
        raise PlaybookError(
            "FORBIDDEN_PLAYBOOK",
            "the task brings its own playbook in constraints.playbook, which needs the scope "
            f"{INLINE_SCOPE}, and its submitter did not hold it; submit it as a user or with "
            f"an API key that holds {INLINE_SCOPE}, or name a shipped playbook instead",
            scope=INLINE_SCOPE,
        )
    forbidden = forbidden_tools(held)
    for step_id, tool in _raw_steps(chosen):
        if tool in forbidden:
            raise ForbiddenToolError(
                forbidden_message(tool, f"step {step_id} of the inline playbook"),
                step=step_id,
                tool=tool,
                scope=TOOL_SCOPES[tool],
            )


def authorize_playbook(playbook: Playbook, grants: Iterable[str]) -> Playbook:
    """``playbook`` if the task's grants allow every tool its steps call; a
    ForbiddenToolError naming the first step that calls a tool whose scope is not granted
    otherwise. The plan's stages are the playbook's steps, so a plan that passes this
    never asks the JourneyAgent for a forbidden tool."""
    forbidden = forbidden_tools(grants)
    for step in playbook.steps:
        tool = _tool_name(step.tool)
        if tool in forbidden:
            raise ForbiddenToolError(
                forbidden_message(tool, f"step {step.id} of playbook {playbook.name}"),
                playbook=playbook.name,
                step=step.id,
                tool=tool,
                scope=TOOL_SCOPES[tool],
            )
    return playbook
