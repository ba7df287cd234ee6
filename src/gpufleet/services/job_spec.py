"""Validation of a submitted JobSpec: every rule names the field it is about (InvalidInput.field).

The HTTP schema (schemas/jobs.py) checks a body against the same bounds (gpufleet.limits), but a
spec also comes from inside the server, without that edge: deployments submit their replicas'
jobs, and tests and benchmarks call the service directly. The database must never see a spec its
CHECKs would refuse with a raw error, so this stays the last word for every submitter.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from gpufleet.domain.jobs import JobSpec, whole_number
from gpufleet.errors import InvalidInput
from gpufleet.limits import (
    MAX_ATTEMPTS,
    MAX_COMMAND_ARGS,
    MAX_COMMAND_BYTES,
    MAX_CPU_MILLI,
    MAX_ENV,
    MAX_ENV_BYTES,
    MAX_JOB_NAME,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    MAX_PATH,
    MAX_PRIORITY,
    MAX_RAM_MB,
    MAX_RUNTIME_S,
    MAX_SCRIPT_BYTES,
)

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")


def _text(field: str, value: Any, max_len: int, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInput.at(field, "must be a string")
    if "\x00" in value:
        raise InvalidInput.at(field, "must not contain NUL characters")
    if not empty_ok and not value.strip():
        raise InvalidInput.at(field, "must not be empty")
    if len(value.encode()) > max_len:
        raise InvalidInput.at(field, f"must be at most {max_len} bytes")
    return value


def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput.at(field, "must be true or false")
    return value


def validate(spec: JobSpec) -> JobSpec:
    """The spec, normalised (a CPU-only job holds no milli-GPU), or InvalidInput naming the field.

    The GPU requirement's rules are ``GpuRequirement.validate``'s (domain/jobs.py), the one place.
    """
    _text("name", spec.name, MAX_JOB_NAME)
    if len(spec.name) > MAX_JOB_NAME:
        raise InvalidInput.at("name", f"must be at most {MAX_JOB_NAME} characters")
    _command_or_script(spec)
    if spec.model_type is not None:
        _text("model_type", spec.model_type, 100)
    if spec.working_dir is not None:
        _text("working_dir", spec.working_dir, MAX_PATH)
    _env(spec.env)
    _labels(spec.labels)
    whole_number("priority", spec.priority, -MAX_PRIORITY, MAX_PRIORITY)
    gpu = spec.gpu.validate()
    whole_number("cpu_milli", spec.cpu_milli, 0, MAX_CPU_MILLI)
    whole_number("ram_mb", spec.ram_mb, 0, MAX_RAM_MB)
    if spec.max_runtime_s is not None:
        whole_number("max_runtime_s", spec.max_runtime_s, 1, MAX_RUNTIME_S)
    _bool("retry_on_host_loss", spec.retry_on_host_loss)
    _bool("retry_on_failure", spec.retry_on_failure)
    whole_number("max_attempts", spec.max_attempts, 1, MAX_ATTEMPTS)
    return replace(
        spec,
        gpu=gpu,
        env=dict(spec.env),
        labels=dict(spec.labels),
        command=list(spec.command) if spec.command is not None else None,
    )


def _command_or_script(spec: JobSpec) -> None:
    if (spec.command is None) == (spec.script is None):
        field = "command" if spec.command is None else "script"
        raise InvalidInput.at(field, "give exactly one of command (a list of arguments) or script (a shell script)")
    if spec.command is not None:
        if not isinstance(spec.command, list) or not spec.command:
            raise InvalidInput.at("command", "must be a non-empty list of strings")
        if len(spec.command) > MAX_COMMAND_ARGS:
            raise InvalidInput.at("command", f"must have at most {MAX_COMMAND_ARGS} arguments")
        total = 0
        for i, arg in enumerate(spec.command):
            _text(f"command[{i}]", arg, MAX_COMMAND_BYTES, empty_ok=i > 0)
            total += len(arg.encode())
        if total > MAX_COMMAND_BYTES:
            raise InvalidInput.at("command", f"must be at most {MAX_COMMAND_BYTES} bytes in all")
    else:
        _text("script", spec.script, MAX_SCRIPT_BYTES)


def _env(env: Any) -> None:
    if not isinstance(env, dict):
        raise InvalidInput.at("env", "must be an object of string keys to string values")
    if len(env) > MAX_ENV:
        raise InvalidInput.at("env", f"must have at most {MAX_ENV} variables")
    total = 0
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_KEY.match(key):
            raise InvalidInput.at(
                "env", f"{key!r} is not a variable name (letters, digits, _; not starting with a digit)"
            )
        _text(f"env.{key}", value, MAX_ENV_BYTES, empty_ok=True)
        total += len(key) + len(value.encode())
    if total > MAX_ENV_BYTES:
        raise InvalidInput.at("env", f"must be at most {MAX_ENV_BYTES} bytes in all")


def _labels(labels: Any) -> None:
    if not isinstance(labels, dict):
        raise InvalidInput.at("labels", "must be an object of string keys to string values")
    if len(labels) > MAX_LABELS:
        raise InvalidInput.at("labels", f"must have at most {MAX_LABELS} labels")
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_KEY.match(key):
            raise InvalidInput.at("labels", f"{key!r} is not a label key (1-63 of letters, digits, '.', '_', '/', '-')")
        _text(f"labels.{key}", value, MAX_LABEL_VALUE, empty_ok=True)
