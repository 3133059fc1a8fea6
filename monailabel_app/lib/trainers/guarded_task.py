"""The glue every MedFM train task shares: progress in its stats file, the job run with the server's `Settings`,
then the guard's decision on the site's held-out images. A task says only how it reads its request and which job
it runs."""

from __future__ import annotations

import os
import sys
import time
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

from monailabel.interfaces.datastore import Datastore
from torch import nn

from lib.datastore import heldout_images
from lib.medfm.adaptation import AdaptConfig
from lib.medfm.registry import Registry
from lib.medfm.service import MedFMService
from lib.trainers.stats_task import StatsTrainTask

_GUARD_DEFAULTS = AdaptConfig()  # a task whose config names no margin or floor (pretraining) is judged by these


class GuardedTrainTask(StatsTrainTask):
    def __init__(self, description: str, service: MedFMService, stats_name: str):
        super().__init__(description, service.settings.models_dir / stats_name)
        self.service = service

    @abstractmethod
    def parse(self, request: dict) -> Any:
        """The task's config from a train request; bad values raise InputError (a 4xx)."""

    @abstractmethod
    def describe(self, cfg: Any) -> dict:
        """What the stats file says the running job is (its method, recipe)."""

    @abstractmethod
    def run(self, cfg: Any, datastore: Datastore, base: nn.Module, on_epoch: Callable[[dict], None],
            log: Callable[[str], None]) -> dict:
        """Train and commit one (inactive) version; return the job's summary with its `version`."""

    def __call__(self, request, datastore: Datastore):
        cfg = self.parse(request)
        service = self.service
        service.store.clean_stale_staging()  # a killed earlier run may have left one; it never became a version
        stats = {"status": "RUNNING", **self.describe(cfg), "history": [], "started": time.time(),
                 "version": service.store.active(), "pid": os.getpid()}
        self._write_stats(stats)

        def on_epoch(row: dict) -> None:
            stats["history"].append(row)
            self._write_stats(stats)

        def log(line: str) -> None:
            print(line, flush=True)

        try:
            base = service.backend.build_model(service.settings.device)
            summary = self.run(cfg, datastore, base, on_epoch, log)
        except Exception as err:
            self._write_stats({**stats, "status": "ERROR", "error": str(err)})
            print(f"ERROR: {err}", file=sys.stderr, flush=True)
            raise
        margin = getattr(cfg, "regression_margin", _GUARD_DEFAULTS.regression_margin)
        floor = getattr(cfg, "serving_floor", _GUARD_DEFAULTS.serving_floor)
        decision = Registry(service).guard(summary["version"], heldout_images(datastore), margin, floor)
        summary["decision"] = decision
        log(f"DECISION {summary['version']}: {decision['reason']}")
        self._write_stats({**stats, "status": "DONE", "version": summary["version"], "summary": summary,
                           "active": service.store.active()})
        return summary
