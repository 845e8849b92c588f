"""Errors a user can cause; each message says what was wrong and how to fix it."""

from __future__ import annotations


class TrellisError(Exception):
    """Base of every error Trellis raises on purpose."""


class ConfigurationError(TrellisError, ValueError):
    """A Trainer flag, plugin combination or module definition that cannot work."""


class PluginNotFoundError(ConfigurationError):
    """A plugin name that no installed distribution provides."""


class PluginLoadError(TrellisError, ImportError):
    """A chosen plugin whose import failed."""


class PluginConflictError(TrellisError):
    """Two installed distributions claim the same plugin name."""


class HookValidationError(TrellisError, TypeError):
    """A hook implementation with a misspelled name or argument."""


class CheckpointError(TrellisError):
    """A checkpoint that is missing, corrupt, truncated or unsafe to load."""


class TrainingError(TrellisError, RuntimeError):
    """Training cannot go on (a non-finite loss, an empty dataloader)."""


class CheckpointMismatchError(CheckpointError, RuntimeError):
    """A checkpoint whose weights do not fit the model: other shapes, missing or unexpected entries.

    Build it with `from_load_error` around `module.load_state_dict(...)`, whose RuntimeError lists the entries
    but names neither the file nor the fix. It stays a RuntimeError, as torch's error was.
    """

    @classmethod
    def from_load_error(cls, path: str, model: str, error: RuntimeError) -> CheckpointMismatchError:
        lines = [line.strip().rstrip(".").strip() for line in str(error).splitlines()[1:] if line.strip()]
        details = "; ".join(lines) or str(error)
        return cls(
            f"the checkpoint {path!r} does not fit {model}: {details}. The checkpoint was written for a model built "
            f"differently: build {model} with the hyperparameters it was saved with "
            f"({model}.load_from_checkpoint(path) does), or pass the checkpoint of this model. strict=False skips "
            "missing and unexpected entries, not different shapes."
        )
