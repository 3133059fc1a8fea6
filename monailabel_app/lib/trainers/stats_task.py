"""A MONAI Label train task whose progress lives in one JSON file beside the models, for /info/ and the panel."""

from __future__ import annotations

from pathlib import Path

from monailabel.interfaces.tasks.train import TrainTask

from lib.medfm.files import read_json, write_json_atomic


class StatsTrainTask(TrainTask):
    def __init__(self, description: str, stats_path: Path):
        super().__init__(description)
        self.stats_path = stats_path

    def stats(self):
        return read_json(self.stats_path)

    def _write_stats(self, stats: dict) -> None:
        self.stats_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.stats_path, stats)
