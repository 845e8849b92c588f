"""What the fit loop reports while and after it runs: fit_loop.batch_idx and is_last_batch, as Lightning's."""

from __future__ import annotations

import pytest

from support import TinyRegressor, loader, quiet_trainer


@pytest.mark.parametrize(("max_epochs", "stop_at"), [(2, 3), (3, 7), (2, 20)])
def test_returning_minus_one_from_on_train_batch_start_ends_the_epoch_at_that_batch(max_epochs, stop_at):
    class EndsEarly(TinyRegressor):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[int, int, bool]] = []

        def on_train_batch_start(self, batch, batch_idx):
            self.seen.append((self.current_epoch, self.trainer.fit_loop.batch_idx, self.trainer.is_last_batch))
            return -1 if batch_idx == stop_at else None

    module = EndsEarly()
    trainer = quiet_trainer(max_epochs=max_epochs, limit_train_batches=6)  # 8 batches, 6 run
    trainer.fit(module, loader())
    ran = min(stop_at, 6)  # the batch that returned -1 is not trained on
    assert trainer.global_step == ran * max_epochs
    assert trainer.fit_loop.batch_idx == min(stop_at, 5)  # the last batch fetched
    assert trainer.is_last_batch
    assert [index for epoch, index, _ in module.seen if epoch == 0] == list(range(min(stop_at + 1, 6)))
    assert not any(last for epoch, index, last in module.seen if index < min(stop_at, 5))


def test_before_the_first_batch_the_index_is_minus_one():
    trainer = quiet_trainer(max_epochs=1)
    assert trainer.fit_loop.batch_idx == -1
