"""A JSON Schema of plan files, made from the loader's own field tables.

Every section's properties are the keys its loader accepts (`TOP_KEYS`, `TASK_KEYS`, ...), so
the schema cannot list a key the loader refuses nor miss one it takes: a key without a type
below makes `plan_schema` fail (and the test suite with it). Editors use it for completion
and checking (YAML: ``# yaml-language-server: $schema=plan.schema.json``); the loader remains
the judge (it also checks the graph, ids, durations and cross-field rules).
"""

from __future__ import annotations

from typing import Any

from orchestrator.plan.load import TOP_KEYS
from orchestrator.plan.model import AGENT_KINDS, NETWORKS, PRESETS, SANDBOX_MODES, STEP_NAMES
from orchestrator.plan.sections import BUILD_KEYS, FIXER_KEYS, LIMIT_KEYS, NOTIFY_KEYS
from orchestrator.plan.taskfields import DEFAULT_KEYS
from orchestrator.plan.tasks import TASK_KEYS

Schema = dict[str, Any]

_TEXT: Schema = {"type": "string"}
_TEXTS: Schema = {"type": "array", "items": _TEXT}
_DURATION: Schema = {
    "description": "seconds, or a duration like 500ms, 90s, 20m, 1h30m",
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^\s*([0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d)?\s*)+$"},
    ],
}
_COMMAND: Schema = {
    "description": "a string is a command line run by sh -c; a list is the program and its "
    "arguments, run without a shell",
    "anyOf": [_TEXT, {**_TEXTS, "minItems": 1}],
}
_STEPS: Schema = {"type": "array", "items": {"$ref": "#/$defs/step"}}
_USD: Schema = {"type": "number", "minimum": 0, "description": "USD per million tokens"}

TYPES: dict[str, Schema] = {
    "name": _TEXT,
    "isolation": {"enum": ["auto", "worktree", "none"], "description": "per-agent checkouts"},
    "deliver": {"enum": ["branch", "apply"], "description": "how the integrated work is given"},
    "workspace": {**_TEXT, "description": "relative to the plan file"},
    "executor": {"enum": ["local", "ray"], "description": "where agents run (ray: a cluster)"},
    "address": {**_TEXT, "description": "the Ray cluster's address (executor: ray)"},
    "id": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
    "agent": {"enum": sorted(AGENT_KINDS | PRESETS)},
    "prompt": _TEXT,
    "depends_on": _TEXTS,
    "command": _COMMAND,
    "script": _STEPS,
    "retry_script": {**_STEPS, "minItems": 1},
    "model": _TEXT,
    "timeout": _DURATION,
    "stall_timeout": _DURATION,
    "grace": _DURATION,
    "max_turns": {"type": "integer", "minimum": 1},
    "env": {"type": "object", "additionalProperties": _TEXT},
    "pass_env": _TEXTS,
    "secrets": _TEXTS,
    "permission_mode": _TEXT,
    "allowed_tools": _TEXTS,
    "args": _TEXTS,
    "max_concurrency": {"type": "integer", "minimum": 1},
    "max_agents": {"type": "integer", "minimum": 1},
    "max_depth": {"type": "integer", "minimum": 0},
    "budget_usd": {"type": "number", "exclusiveMinimum": 0},
    "spawn_rate": {"type": "number", "exclusiveMinimum": 0},
    "max_fix_cycles": {"type": "integer", "minimum": 0},
    "after": _TEXTS,
    "fix_timeouts": {"type": "boolean"},
    "bell": {"type": "boolean", "description": "ring the terminal bell when the run ends"},
    "create_workspace": {
        "type": "boolean",
        "description": "create the workspace when it does not exist (default: an error)",
    },
    "defaults": {"$ref": "#/$defs/defaults"},
    "limits": {"$ref": "#/$defs/limits"},
    "build": {"$ref": "#/$defs/build"},
    "fixer": {"$ref": "#/$defs/fixer"},
    "notify": {"$ref": "#/$defs/notify"},
    "tasks": {"type": "array", "items": {"$ref": "#/$defs/task"}},
    "batches": {"type": "array", "items": {"$ref": "#/$defs/batch"}},
    "prices": {
        "type": "object",
        "description": "model -> USD per million tokens",
        "additionalProperties": {
            "type": "object",
            "properties": {"input": _USD, "output": _USD},
            "required": ["input", "output"],
            "additionalProperties": False,
        },
    },
    "memory": {
        "description": "bytes, or a size like 512m, 4g",
        "anyOf": [{"type": "integer", "minimum": 16777216}, {"type": "string"}],
    },
    "pids": {"type": "integer", "minimum": 8},
    "sandbox": {
        "anyOf": [
            {"enum": list(SANDBOX_MODES)},
            {
                "type": "object",
                "properties": {
                    "mode": {"enum": list(SANDBOX_MODES)},
                    "network": {"enum": list(NETWORKS)},
                    "writable": _TEXTS,
                    "readable": _TEXTS,
                },
                "additionalProperties": False,
            },
        ]
    },
    "presets": {
        "type": "object",
        "propertyNames": {"enum": sorted(PRESETS)},
        "additionalProperties": {
            "type": "object",
            "properties": {"command": {**_TEXTS, "minItems": 1}},
            "required": ["command"],
            "additionalProperties": False,
        },
    },
}
"""The value of each key, by name: a key means the same wherever it is allowed."""


def _section(keys: tuple[str, ...], *, required: tuple[str, ...] = ()) -> Schema:
    missing = [k for k in keys if k not in TYPES]
    if missing:
        raise KeyError(f"no schema type for plan keys {missing}: add them to TYPES")
    out: Schema = {
        "type": "object",
        "properties": {k: TYPES[k] for k in keys},
        "additionalProperties": False,
    }
    if required:
        out["required"] = list(required)
    return out


def plan_schema() -> Schema:
    """The JSON Schema (draft 2020-12) of a plan file, YAML or TOML alike."""
    top = _section(TOP_KEYS)
    top["patternProperties"] = {"^x-": {}}  # ignored: a home for YAML anchors
    top["oneOf"] = [{"required": ["tasks"]}, {"required": ["batches"]}]
    steps = {
        name: _DURATION if name == "sleep" else _TEXT if name != "write" else {
            "type": "object",
            "properties": {"path": _TEXT, "content": _TEXT},
            "required": ["path", "content"],
            "additionalProperties": False,
        }
        for name in STEP_NAMES
    }  # fmt: skip
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "orchestrator plan",
        **top,
        "$defs": {
            "task": _section(TASK_KEYS, required=("id",)),
            "batch": {
                "type": "object",
                "properties": {"name": TYPES["id"], "tasks": TYPES["tasks"]},
                "required": ["name", "tasks"],
                "additionalProperties": False,
            },
            "defaults": _section(DEFAULT_KEYS),
            "limits": _section(LIMIT_KEYS),
            "build": _section(BUILD_KEYS, required=("command",)),
            "notify": _section(NOTIFY_KEYS),
            "fixer": _section(FIXER_KEYS),
            "step": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "properties": steps,
                "additionalProperties": False,
            },
        },
    }
