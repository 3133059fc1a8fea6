"""`medsam_adapt`: MONAI Label train task that adapts the FM with PEFT on the datastore's final labels."""

from __future__ import annotations

from lib.datastore import training_images
from lib.medfm.adaptation import AdaptConfig
from lib.medfm.adaptation.job import run_adaptation
from lib.medfm.service import MedFMService
from lib.trainers.guarded_task import GuardedTrainTask


class MedSAMAdapt(GuardedTrainTask):
    def __init__(self, service: MedFMService):
        super().__init__("Adapt LiteMedSAM to this site's labels with PEFT (LoRA, DoRA, decoder-only or full)",
                         service, "train_stats.json")

    def config(self):
        # The defaults, lists with the default first; lr and preserve_weight empty (the method's own default): a
        # client that sends these options back (the stock Slicer plugin does) with another method must not pin the
        # first method's values.
        return AdaptConfig.info_options()

    def parse(self, request: dict) -> AdaptConfig:
        return AdaptConfig.from_request(request)

    def describe(self, cfg: AdaptConfig) -> dict:
        return {"method": cfg.method}

    def run(self, cfg: AdaptConfig, datastore, base, on_epoch, log) -> dict:
        service = self.service
        return run_adaptation(service.backend, base, service.store, training_images(datastore, cfg.images), cfg,
                              service.settings, on_epoch, log=log)
