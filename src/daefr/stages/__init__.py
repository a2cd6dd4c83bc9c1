"""Training stages (LightningModules): codebook learning, association, restoration (code prediction)."""

from __future__ import annotations

from daefr.stages.association import AssociationStage
from daefr.stages.base import NonFiniteLossError, TrainingStage
from daefr.stages.callbacks import EMAWeights, ResumeState
from daefr.stages.codebook import CodebookStage
from daefr.stages.prediction import RestoredImageWriter
from daefr.stages.restoration import RestorationStage

__all__ = ["AssociationStage", "CodebookStage", "EMAWeights", "NonFiniteLossError", "RestorationStage", "RestoredImageWriter", "ResumeState", "TrainingStage"]
