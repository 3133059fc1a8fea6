"""`medsam_adapt`: MONAI Label train task that adapts the FM with PEFT on the datastore's final labels."""

from __future__ import annotations

import os
import sys
import time

from monailabel.interfaces.datastore import Datastore

from lib.datastore import heldout_images, training_images
from lib.medfm.adaptation import METHODS, AdaptConfig
from lib.medfm.adaptation.job import run_adaptation
from lib.medfm.registry import Registry
from lib.medfm.service import MedFMService
from lib.trainers.stats_task import StatsTrainTask


class MedSAMAdapt(StatsTrainTask):
    def __init__(self, service: MedFMService):
        super().__init__("Adapt LiteMedSAM to this site's labels with PEFT (LoRA, DoRA, decoder-only or full)",
                         service.settings.models_dir / "train_stats.json")
        self.service = service

    def config(self):
        defaults = AdaptConfig().to_json()
        # A list option is a drop-down in MONAI Label's Slicer plugin, preselecting its first entry: the default.
        defaults["method"] = [defaults["method"], *(m for m in METHODS if m != defaults["method"])]
        # None = the method's own default (AdaptConfig.DEFAULT_LR, DEFAULT_PRESERVE): a client that sends these
        # options back (the stock Slicer plugin does) with another method must not pin the first method's values.
        defaults["lr"] = None
        defaults["preserve_weight"] = None
        return defaults

    def __call__(self, request, datastore: Datastore):
        cfg = AdaptConfig.from_request(request)
        service = self.service
        service.store.clean_stale_staging()  # a killed earlier run may have left one; it never became a version
        stats = {"status": "RUNNING", "method": cfg.method, "history": [], "started": time.time(),
                 "version": service.store.active(), "pid": os.getpid()}
        self._write_stats(stats)

        def on_epoch(row: dict) -> None:
            stats["history"].append(row)
            self._write_stats(stats)

        def log(line: str) -> None:
            print(line, flush=True)

        try:
            base = service.backend.build_model(service.settings.device)
            summary = run_adaptation(service.backend, base, service.store, training_images(datastore, cfg.images), cfg,
                                     service.settings.labels, service.settings.device, on_epoch, log=log,
                                     precision=service.settings.precision)
        except Exception as err:
            self._write_stats({**stats, "status": "ERROR", "error": str(err)})
            print(f"ERROR: {err}", file=sys.stderr, flush=True)
            raise
        decision = Registry(service).guard(summary["version"], heldout_images(datastore), cfg.regression_margin,
                                           cfg.serving_floor)
        summary["decision"] = decision
        log(f"DECISION {summary['version']}: {decision['reason']}")
        self._write_stats({**stats, "status": "DONE", "version": summary["version"], "summary": summary,
                           "active": service.store.active()})
        return summary
