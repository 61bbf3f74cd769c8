"""Train and evaluate loops; the mask is held exactly during training."""

from sparsekit.train.loop import TrainConfig, evaluate, train_epochs

__all__ = ["TrainConfig", "evaluate", "train_epochs"]
