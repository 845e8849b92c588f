"""Errors a user can cause; each message says what was wrong and how to fix it."""


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
