"""NVFlare's FedAvg, kept as it is, with three duties added for adapters: the global adapter is saved as
safetensors (NVFlare's default file is a FOBS pickle, which a site must never load); every update the server
receives is recorded by name, shape, bytes and weight, so a run can show that only adapter tensors crossed; and
after the last round the final adapter goes to every site in a `validate` task, with the federation's record, for
the site to import through its checked import and judge with its own guard (what each site decided comes back)."""

from __future__ import annotations

import math
import os

import numpy as np
from nvflare.apis.fl_constant import FLMetaKey
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.workflows.fedavg import FedAvg
from safetensors.numpy import load_file, save_file

from ..files import atomic_path, write_json_atomic
from .exchange import nbytes

GLOBAL_ADAPTER = "global_adapter.safetensors"
EXCHANGE_LOG = "exchange.json"
DECISIONS = "site_decisions.json"
RECEIVE_TASK = "validate"  # NVFlare's evaluate task name: the Client API's is_evaluate() is true for it


class AdapterFedAvg(FedAvg):
    def __init__(self, *args, initial: str, out_dir: str, **kwargs):
        """`initial`: the safetensors file of the adapter every site starts from; `out_dir`: where the global
        adapter and the exchange record are written."""
        kwargs["persistor_id"] = ""  # no persistor: the model is read and written here, never as a pickle
        super().__init__(*args, **kwargs)
        self.initial, self.out_dir = initial, out_dir
        self._log: list[dict] = []

    def load_model(self) -> FLModel:
        return FLModel(params=load_file(self.initial))

    def run(self) -> None:
        super().run()
        final = os.path.join(self.out_dir, GLOBAL_ADAPTER)
        if self.abort_signal.triggered or not os.path.exists(final) or not self._log:
            return
        last = max(row["round"] for row in self._log)
        federation = {"id": self.fl_ctx.get_job_id(), "rounds": last + 1,
                      "sites": {row["site"]: row["weight"] for row in self._log if row["round"] == last}}
        results = self.send_model_and_wait(task_name=RECEIVE_TASK, data=FLModel(
            params=load_file(final), meta={"federation": federation}))
        decisions = {site_name(r): {"version": (r.meta or {}).get("version"),
                                    "decision": (r.meta or {}).get("decision")} for r in results}
        write_json_atomic(os.path.join(self.out_dir, DECISIONS), {"federation": federation, "sites": decisions})
        self.info(f"sites' decisions on the final adapter: {decisions}")

    def _aggregate_one_result(self, result: FLModel) -> bool:
        params = result.params or {}
        os.makedirs(self.out_dir, exist_ok=True)
        self._log.append({
            "round": self.current_round, "site": site_name(result), "params_type": str(result.params_type),
            "weight": site_weight(result), "metrics": result.metrics or {},
            "tensors": {k: list(np.shape(v)) for k, v in params.items()},
            "bytes": nbytes(params),
        })
        if self._keep_values():
            save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in params.items()},
                      os.path.join(self.out_dir, f"update-r{self.current_round}-{self._log[-1]['site']}.safetensors"))
        self._write_log()
        return super()._aggregate_one_result(result)

    def _keep_values(self) -> bool:
        """Tests check the average against what each site sent; a real run keeps names and shapes only."""
        return os.environ.get("MEDFM_FL_KEEP_UPDATES") == "1"

    def _write_log(self) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        write_json_atomic(os.path.join(self.out_dir, EXCHANGE_LOG), self._log)

    def save_model_file(self, model: FLModel, filepath: str) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        with atomic_path(os.path.join(self.out_dir, GLOBAL_ADAPTER)) as tmp:
            save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in model.params.items()}, str(tmp),
                      metadata={"round": str(self.current_round)})


def site_name(result: FLModel) -> str:
    """The site that sent `result`, as NVFlare's client API names it in the result's meta."""
    name = (result.meta or {}).get("client_name")
    return name if isinstance(name, str) and name else AppConstants.CLIENT_UNKNOWN


def site_weight(result: FLModel) -> float:
    """The weight FedAvg gives `result`: the site's training steps this round, 1 when it sent none that count
    (NVFlare 2.9's FedAvg rule, kept here so the exchange record states the weight the average used)."""
    value = (result.meta or {}).get(FLMetaKey.NUM_STEPS_CURRENT_ROUND)
    try:
        weight = float(value) if value is not None and not isinstance(value, bool) else 1.0
    except (TypeError, ValueError, OverflowError):
        return 1.0
    return weight if math.isfinite(weight) and weight > 0 else 1.0
