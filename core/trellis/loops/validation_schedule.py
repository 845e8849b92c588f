"""When validation runs during fit: the one place the loop, ModelCheckpoint and EarlyStopping ask."""

from __future__ import annotations

import math

from trellis.errors import ConfigurationError
from trellis.fit_data import FitData
from trellis.settings import TrainerSettings


class ValidationSchedule:
    """val_check_interval (a fraction of the epoch or a batch count) and check_val_every_n_epoch."""

    def __init__(self, settings: TrainerSettings, data: FitData) -> None:
        self._settings, self._data = settings, data

    @property
    def enabled(self) -> bool:
        """Whether this fit validates at all (a validation loop with batches to run)."""
        return bool(self._data.val_loaders)

    @property
    def interval_batches(self) -> int:
        """Training batches between mid-epoch validations; 0 when validation runs at epoch end only."""
        interval = self._settings.val_check_interval
        if isinstance(interval, float):
            if interval == 1.0:
                return 0
            if math.isinf(self._data.num_training_batches):
                raise ConfigurationError("a fractional val_check_interval needs a training loader with a length")
            return max(1, int(self._data.num_training_batches * interval))
        return int(interval)

    def due_after_batch(self, batches_done: int) -> bool:
        """A mid-epoch validation is due after this many batches of the epoch."""
        interval = self.interval_batches
        return bool(interval) and batches_done % interval == 0 and batches_done < self._data.num_training_batches

    def due_at_epoch_end(self, epoch: int) -> bool:
        every = self._settings.check_val_every_n_epoch
        if not self.enabled or (every is not None and (epoch + 1) % every != 0):
            return False
        interval = self._settings.val_check_interval
        return isinstance(interval, float) or self._data.num_training_batches % interval == 0
