"""fit produces the same weights, to the last bit, as the plain PyTorch loop."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from support import TinyRegressor, quiet_trainer, regression_data


def _plain_loop(model: torch.nn.Module, epochs: int) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    data = DataLoader(regression_data(640), batch_size=32, shuffle=True)
    for _ in range(epochs):
        for x, y in data:
            loss = torch.nn.functional.mse_loss(model.net(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()


def test_fit_is_bit_identical_to_a_plain_loop_after_hundreds_of_steps():
    epochs = 15  # 20 batches an epoch: 300 optimizer steps
    torch.manual_seed(1234)
    reference = TinyRegressor()
    _plain_loop(reference, epochs)

    torch.manual_seed(1234)
    module = TinyRegressor()
    trainer = quiet_trainer(max_epochs=epochs)
    trainer.fit(module, DataLoader(regression_data(640), batch_size=32, shuffle=True))

    assert trainer.global_step == 300
    for (name, expected), actual in zip(reference.state_dict().items(), module.state_dict().values()):
        assert torch.equal(expected, actual), f"{name} differs from the plain loop"


def test_sanity_validation_does_not_change_the_training_run():
    def train(sanity_steps: int) -> dict:
        torch.manual_seed(7)
        module = TinyRegressor()
        trainer = quiet_trainer(max_epochs=2, num_sanity_val_steps=sanity_steps)
        trainer.fit(module, DataLoader(regression_data(), batch_size=32, shuffle=True),
                    DataLoader(regression_data(64, seed=1), batch_size=32, shuffle=True))
        return module.state_dict()

    without, with_sanity = train(0), train(2)
    assert all(torch.equal(without[key], with_sanity[key]) for key in without)
