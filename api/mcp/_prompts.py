"""One MCP prompt per playbook the deployment ships: its description, the task's description
and the playbook's inputs as arguments, and a message asking to submit the task with it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mcp.server.mcpserver.prompts.base import Prompt, PromptArgument, UserMessage

from processors.shared.playbook import Playbook

DESCRIPTION_ARGUMENT = "description"


def playbook_prompts(playbooks: Mapping[str, Playbook]) -> list[Prompt]:
    """A prompt for each of ``playbooks``, named after it."""
    return [_prompt(playbook) for _, playbook in sorted(playbooks.items())]


def _prompt(playbook: Playbook) -> Prompt:
    arguments = [
        PromptArgument(
            name=DESCRIPTION_ARGUMENT,
            description="What the task should do, in plain words (the task's description).",
            required=True,
        )
    ]
    for name, default in playbook.inputs.items():
        if name == DESCRIPTION_ARGUMENT:
            continue  # a playbook input cannot shadow the task's description
        arguments.append(
            PromptArgument(
                name=name,
                description=f"Input {name} of the playbook (default: {json.dumps(default)}).",
                required=False,
            )
        )

    async def render(**given: str) -> list[UserMessage]:
        return [UserMessage(submission_request(playbook, given))]

    return Prompt(
        name=playbook.name,
        title=f"Run the {playbook.name} playbook",
        description=playbook.description or f"Submit a task with the {playbook.name} playbook.",
        arguments=arguments,
        fn=render,
    )


def submission_request(playbook: Playbook, given: Mapping[str, str]) -> str:
    """The message of a rendered prompt: the submit_task call to make, then how to follow
    the task."""
    inputs = {
        name: _value(value, playbook.inputs[name])
        for name, value in given.items()
        if name in playbook.inputs and name != DESCRIPTION_ARGUMENT and value != ""
    }
    arguments: dict[str, Any] = {
        "description": given.get(DESCRIPTION_ARGUMENT, ""),
        "playbook": playbook.name,
    }
    if inputs:
        arguments["playbook_inputs"] = inputs
    steps = ", ".join(f"{step.id} ({step.tool})" for step in playbook.steps)
    return (
        f"Submit a WrenchAI task with the {playbook.name} playbook. "
        f"{playbook.description}\n\n"
        f"Its steps: {steps}.\n\n"
        "Call the submit_task tool with these arguments:\n\n"
        f"```json\n{json.dumps(arguments, indent=2)}\n```\n\n"
        "Then call watch_task with the task_id it returns to follow the task until it ends, "
        "and report its outcome: for a completed task the report is in output.final."
    )


def _value(text: str, default: Any) -> Any:
    """A prompt argument (always text) as the type of the input's default: JSON for a
    number, a flag, a list or an object; the text itself for a text input."""
    if isinstance(default, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text
