"""The loops a Trainer runs: fit (training with validation), evaluation, prediction."""
