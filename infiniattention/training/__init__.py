"""Training system: configs, the loop, checkpoints, distributed setup, evaluation, metrics.

Imports the model modules and data_utils; the model modules never import this package.
"""

from .config import ConfigError, DataConfig, EvalConfig, OptimConfig, RunConfig, TrainConfig, load_config
from .evaluate import EvalResult, evaluate, load_for_inference
from .optim import build_optimizer, lr_at
from .trainer import Trainer, TrainingError

__all__ = [
    "ConfigError", "DataConfig", "EvalConfig", "EvalResult", "OptimConfig", "RunConfig", "TrainConfig",
    "Trainer", "TrainingError", "build_optimizer", "evaluate", "load_config", "load_for_inference", "lr_at",
]
