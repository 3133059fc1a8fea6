"""`medsam_pretrain`: MONAI Label train task that adapts the image encoder to the site's scans without labels."""

from __future__ import annotations

import os
import sys
import time

from monailabel.interfaces.datastore import Datastore

from lib.datastore import heldout_images, unlabelled_pool
from lib.medfm.adaptation.pretrain import RECIPES, PretrainConfig, run_pretraining
from lib.medfm.registry import Registry
from lib.medfm.service import MedFMService
from lib.trainers.stats_task import StatsTrainTask


class MedSAMPretrain(StatsTrainTask):
    def __init__(self, service: MedFMService):
        super().__init__("Pretrain LiteMedSAM's image encoder on this site's scans, labelled or not (LoRA, "
                         "self-supervised); supervised LoRA can continue from it (parent)",
                         service.settings.models_dir / "pretrain_stats.json")
        self.service = service

    def config(self):
        defaults = PretrainConfig().to_json()
        # The default first: MONAI Label's Slicer plugin preselects a list option's first entry.
        defaults["recipe"] = [defaults["recipe"], *(r for r in RECIPES if r != defaults["recipe"])]
        return defaults

    def __call__(self, request, datastore: Datastore):
        cfg = PretrainConfig.from_request(request)
        service = self.service
        service.store.clean_stale_staging()
        stats = {"status": "RUNNING", "method": "ssl-lora", "recipe": cfg.recipe, "history": [],
                 "started": time.time(), "version": service.store.active(), "pid": os.getpid()}
        self._write_stats(stats)

        def on_epoch(row: dict) -> None:
            stats["history"].append(row)
            self._write_stats(stats)

        try:
            base = service.backend.build_model(service.settings.device)
            summary = run_pretraining(service.backend, base, service.store, unlabelled_pool(datastore, cfg.images),
                                      cfg, service.settings.device, on_epoch, log=lambda line: print(line, flush=True),
                                      precision=service.settings.precision)
        except Exception as err:
            self._write_stats({**stats, "status": "ERROR", "error": str(err)})
            print(f"ERROR: {err}", file=sys.stderr, flush=True)
            raise
        decision = Registry(service).guard(summary["version"], heldout_images(datastore))
        summary["decision"] = decision
        print(f"DECISION {summary['version']}: {decision['reason']}", flush=True)
        self._write_stats({**stats, "status": "DONE", "version": summary["version"], "summary": summary,
                           "active": service.store.active()})
        return summary
