"""The NVFlare client script a site runs: receive the global adapter, train on the site's own datastore, send back
the change of the adapter's trained tensors, weighted by the site's labelled slices. Images and labels never leave.
After the last round the final adapter arrives in a `validate` task: the site imports it into its own registry
(checked import) and its guard decides on the site's held-out images; only the decision goes back.

Run by NVFlare's ScriptRunner (simulator or a provisioned site); `lib` must be importable (PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", required=True, help="this site's MONAI Label datastore folder")
    parser.add_argument("--config", required=True, help="the federation's config JSON")
    parser.add_argument("--labels", required=True, help="JSON file of the server labels, name -> value")
    parser.add_argument("--models", required=True, help="this site's models folder (its adapter registry)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ct-window", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="this site's CT window in HU (its server's --conf ct_window); default the server's")
    args = parser.parse_args()

    import nvflare.client as flare
    from nvflare.apis.fl_constant import FLMetaKey
    from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

    from lib.medfm.federated.config import FederatedConfig
    from lib.medfm.federated.receive import receive_global_adapter
    from lib.medfm.federated.site import SiteData, SiteTrainer
    from lib.medfm.registry import Registry
    from lib.medfm.service import MedFMService
    from lib.medfm.settings import Settings

    flare.init()
    site_name = flare.get_site_name()
    cfg = FederatedConfig.load(args.config)
    labels = json.loads(Path(args.labels).read_text())
    window = {"ct_window": tuple(args.ct_window)} if args.ct_window else {}
    # One Settings for the site: its training reads images as its registry's guard (and its server) reads them.
    settings = Settings(models_dir=Path(args.models), device=args.device, labels=labels, **window)
    service = MedFMService(settings.replace(models_dir=Path(tempfile.mkdtemp())))
    site = SiteData.read(args.studies, site_name)
    trainer = SiteTrainer(service.backend, service.segmenter.base, site, cfg, settings,
                          log=lambda line: print(f"[{site_name}] {line}", flush=True))
    while flare.is_running():
        received = flare.receive()
        if flare.is_evaluate():
            registry = Registry(MedFMService(settings))
            federation = {**(received.meta or {}).get("federation", {}), "method": cfg.method, "ffa": cfg.ffa,
                          "clip_norm": cfg.clip_norm, "noise_multiplier": cfg.noise_multiplier}
            outcome = receive_global_adapter(registry, trainer, received.params, federation, site.heldout)
            print(f"[{site_name}] final adapter imported as {outcome['version']}: "
                  f"{outcome['decision']['reason']}", flush=True)
            flare.send(FLModel(params={}, meta={"decision": outcome["decision"], "version": outcome["version"]}))
            continue
        update, metrics = trainer.train_round(received.params)
        metrics = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        print(f"[{site_name}] round {received.current_round}: {json.dumps(metrics)}", flush=True)
        flare.send(FLModel(params=update, params_type=ParamsType.DIFF, metrics=metrics,
                           meta={FLMetaKey.NUM_STEPS_CURRENT_ROUND: trainer.n_slices}))


if __name__ == "__main__":
    main()
