"""Training stages (LightningModules): codebook learning, association, restoration (code prediction)."""

from __future__ import annotations

from daefr.stages.base import NonFiniteLossError, TrainingStage
from daefr.stages.callbacks import EMAWeights, ResumeState
from daefr.stages.codebook import CodebookStage

__all__ = ["CodebookStage", "EMAWeights", "NonFiniteLossError", "ResumeState", "TrainingStage"]
