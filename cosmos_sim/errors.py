"""Typed errors raised at user-facing boundaries.

Every error carries the file (or object) and the field at fault, so the CLI can turn
it into one clear line: ``path: field: expected X, found Y``.
"""

from __future__ import annotations

from pathlib import Path


class CosmosSimError(Exception):
    """Base class: a user mistake or bad input, reported as one line (exit code 2)."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        field: str | None = None,
        expected: object = None,
        found: object = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.field = field
        self.expected = expected
        self.found = found
        self.message = message
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = [p for p in (self.path, self.field) if p]
        head = ": ".join(parts)
        text = self.message
        detail = [
            f"{k} {v}"
            for k, v in (("expected", self.expected), ("found", self.found))
            if v is not None
        ]
        if detail:
            text += f" ({', '.join(detail)})"
        return f"{head}: {text}" if head else text


class StoreError(CosmosSimError):
    """An episode store is missing, malformed, or was asked for something it lacks."""


class TaskError(CosmosSimError):
    """A task folder (scene.xml / task.toml) is missing or invalid."""


class CameraError(CosmosSimError):
    """A camera is unknown, or its parameters cannot be converted."""


class ActionError(CosmosSimError):
    """An action has the wrong shape, or non-finite values."""


class ConfigError(CosmosSimError):
    """A configuration field is out of range or inconsistent."""


class ModelError(CosmosSimError):
    """A model directory or checkpoint is unknown, incomplete or corrupt."""


class FormatError(CosmosSimError):
    """A foreign file (Replicator, Isaac Lab, USD, glTF) does not match its format."""


class MissingExtraError(CosmosSimError):
    """An optional dependency is needed: names the pip extra that installs it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the '{package}' package: pip install 'cosmos-sim[{extra}]'",
            field=package,
        )
