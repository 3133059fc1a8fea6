"""The MedSAM task set, declared MONAI Label style: one config builds the service, its infers and its trainer."""

from __future__ import annotations

from typing import Any

from monailabel.interfaces.config import TaskConfig

from lib.activelearning.medfm_strategy import FMStrategy
from lib.infers.medsam_auto import MedSAMAuto
from lib.infers.medsam_interactive import MedSAMInteractive
from lib.medfm.active.selection import STRATEGIES
from lib.medfm.service import MedFMService
from lib.medfm.settings import Settings
from lib.scoring.medfm_scores import MedFMScores
from lib.trainers.medsam_adapt import MedSAMAdapt
from lib.trainers.medsam_pretrain import MedSAMPretrain


class MedSAMConfig(TaskConfig):
    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.settings = Settings.from_conf(conf, app_dir=kwargs.get("app_dir", model_dir))
        self.labels = self.settings.labels
        self.service = MedFMService(self.settings)

    def infer(self):
        return {
            "medsam_interactive": MedSAMInteractive(self.service, self.labels),
            "medsam_auto": MedSAMAuto(self.service, self.labels),
        }

    def trainer(self):
        return MedSAMAdapt(self.service)

    def pretrainer(self):
        return MedSAMPretrain(self.service)

    def strategy(self):
        return {name: FMStrategy(name, self.service) for name in STRATEGIES}

    def scoring_method(self):
        return {"medfm_scores": MedFMScores(self.service)}
