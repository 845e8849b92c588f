"""One fit calls the hooks in the order docs/hooks.md lists."""

from __future__ import annotations

from pathlib import Path

from hook_recording import recording_pair
from support import quiet_trainer

DOC = Path(__file__).parent.parent / "docs" / "hooks.md"


def _documented_order() -> list[str]:
    text = DOC.read_text()
    block = text.split("<!-- hook-order:start -->")[1].split("<!-- hook-order:end -->")[0]
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("```")]


def test_one_fit_calls_the_hooks_in_the_documented_order():
    calls: list[str] = []
    module, callback = recording_pair(calls)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=1,
                            callbacks=[callback])
    trainer.fit(module)
    assert calls == _documented_order()
