"""`medsam_pretrain`: MONAI Label train task that adapts the image encoder to the site's scans without labels."""

from __future__ import annotations

from lib.datastore import unlabelled_pool
from lib.medfm.adaptation.pretrain import METHOD, PretrainConfig, run_pretraining
from lib.medfm.service import MedFMService
from lib.trainers.guarded_task import GuardedTrainTask


class MedSAMPretrain(GuardedTrainTask):
    def __init__(self, service: MedFMService):
        super().__init__("Pretrain LiteMedSAM's image encoder on this site's scans, labelled or not (LoRA, "
                         "self-supervised); supervised LoRA can continue from it (parent)",
                         service, "pretrain_stats.json")

    def config(self):
        return PretrainConfig.info_options()  # the recipes as a list, the default first

    def parse(self, request: dict) -> PretrainConfig:
        return PretrainConfig.from_request(request)

    def describe(self, cfg: PretrainConfig) -> dict:
        return {"method": METHOD, "recipe": cfg.recipe}

    def run(self, cfg: PretrainConfig, datastore, base, on_epoch, log) -> dict:
        service = self.service
        return run_pretraining(service.backend, base, service.store, unlabelled_pool(datastore, cfg.images), cfg,
                               service.settings, on_epoch, log=log)
