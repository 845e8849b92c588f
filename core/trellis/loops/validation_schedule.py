"""When validation runs during fit: the one place the fit loop, ModelCheckpoint and EarlyStopping ask.

Lightning's rules: validation runs after the training batches whose count is a multiple of the check interval
(val_check_interval as a batch count, or a fraction of the epoch's batches rounded down), in the epochs that
check_val_every_n_epoch selects (None: counting batches across epochs), and when training is about to stop
early. With an interval of one epoch that is the epoch's last batch.
"""

from __future__ import annotations

import math

from trellis.errors import ConfigurationError
from trellis.fit_data import FitData
from trellis.settings import TrainerSettings


class ValidationSchedule:
    """val_check_interval and check_val_every_n_epoch, for one fit."""

    def __init__(self, settings: TrainerSettings, data: FitData) -> None:
        self._settings, self._data = settings, data
        #: training batches between validations; inf: at the epoch's last batch (loaders of unknown length).
        self.check_batches: float = math.inf

    @property
    def enabled(self) -> bool:
        """Whether this fit validates at all (a validation_step, a limit above zero, loaders with batches)."""
        data = self._data
        return data.validation_enabled and (not data.validation_requested or bool(data.val_loaders))

    @property
    def at_epoch_end_only(self) -> bool:
        """Validation once per epoch, after its last batch (val_check_interval == 1.0 and every epoch)."""
        return self._settings.val_check_interval == 1.0 and self._settings.check_val_every_n_epoch == 1

    def connect(self) -> None:
        """Size the interval from the training loader (again when it is reloaded)."""
        interval, batches = self._settings.val_check_interval, self._data.num_training_batches
        if isinstance(interval, int) and not isinstance(interval, bool):
            if interval > batches and self._settings.check_val_every_n_epoch is not None and self.enabled:
                raise ConfigurationError(
                    f"val_check_interval={interval} is more than the {batches:g} training batches of an epoch: pass "
                    "at most that many, check_val_every_n_epoch=None to count batches across epochs, or "
                    "limit_val_batches=0 to turn validation off"
                )
            self.check_batches = interval
        elif math.isinf(batches):
            if interval != 1.0:
                raise ConfigurationError(
                    f"val_check_interval={interval} is a fraction of an epoch, but the training loader has no length: "
                    "pass 1.0 or a batch count (int)")
            self.check_batches = math.inf
        else:
            self.check_batches = max(1, int(batches * interval))

    def epoch_due(self, epoch: int) -> bool:
        every = self._settings.check_val_every_n_epoch
        return self.enabled and (every is None or (epoch + 1) % every == 0)

    def due_after_batch(self, epoch: int, batch_index: int, total_batch_index: int, is_last_batch: bool,
                        stopping: bool) -> bool:
        """After the batch `batch_index` of the epoch (`total_batch_index` counted across epochs)."""
        if not self.epoch_due(epoch):
            return False
        check = self.check_batches
        if (is_last_batch and math.isinf(check)) or stopping:
            return True
        limit = self._settings.limit_train_batches
        if isinstance(limit, int) and not isinstance(limit, bool) and math.isinf(check):
            return (batch_index + 1) % limit == 0
        if math.isinf(check):
            return is_last_batch
        counted = total_batch_index if self._settings.check_val_every_n_epoch is None else batch_index
        return (counted + 1) % check == 0
