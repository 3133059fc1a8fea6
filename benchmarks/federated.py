"""Federated adaptation on NVFlare's simulator: does federating beat each site training alone?

Three sites, each its own datastore folder with training and held-out images, cut from the sample datastore's
MNI152 template (grey/white matter): site-a and site-b get different axial slabs (anatomy from low to high), and
site-c's slabs also carry a simulated scanner shift (MONAI transforms, seeded; see site_data.py). One template,
so the sites differ in anatomy level and scanner, not in subject: say so wherever a figure rests on it.

Per site, on its own held-out slabs, box-prompted (3D roi) and automatic Dice of:
- zero-shot: the base FM;
- local: the site trains alone, from the same initial adapter, for as many local epochs as the federation ran;
- federated: R rounds of FedAvg on NVFlare's simulator (the product's client script, only adapter tensors cross);
- pooled: one training on every site's training images (the centralised upper bound no hospital can run).
Every adapter reaches the site through the registry's checked import and its guard, as a federated one does.
`make fl-sim` runs the `sim` size (federated only, per-round metrics); `make bench-federated` the `cpu` size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (puts the domain core on sys.path)
from site_data import TISSUE_LABELS, build_shifted, build_slabs  # noqa: E402

from lib.medfm.federated.config import FederatedConfig  # noqa: E402
from lib.medfm.federated.exchange import nbytes  # noqa: E402
from lib.medfm.federated.receive import receive_global_adapter  # noqa: E402
from lib.medfm.federated.simulation import SiteSpec, bytes_per_round, run_simulation  # noqa: E402
from lib.medfm.federated.site import SiteData, SiteTrainer, initial_adapter, write_site_folder  # noqa: E402
from lib.medfm.registry import Registry  # noqa: E402
from lib.medfm.service import MedFMService  # noqa: E402
from lib.medfm.settings import Settings  # noqa: E402

LABELS = {"lesion": 1, **TISSUE_LABELS}
SIZES = {
    "smoke": dict(slabs=dict(n=4, slices=4, gap=2, test_slices=2), sites=2, shifted=None, rounds=1, local_epochs=1,
                  slices_per_image=2, batch=2, baselines=False),
    "sim": dict(slabs=dict(n=6, slices=6, gap=2, test_slices=2), sites=3, shifted=2, rounds=3, local_epochs=2,
                slices_per_image=4, batch=2, baselines=False),
    "cpu": dict(slabs=dict(n=6, slices=6, gap=2, test_slices=2), sites=3, shifted=2, rounds=3, local_epochs=2,
                slices_per_image=4, batch=2, baselines=True),
}


def build_sites(studies: Path, folder: Path, slabs: dict, n_sites: int, shifted: int | None) -> list[SiteSpec]:
    """Slab 2i trains and slab 2i+1 is held out at site i; site `shifted` sees both through its own scanner."""
    pool = folder / "pool"
    (pool / "labels" / "final").mkdir(parents=True, exist_ok=True)
    train, test = build_slabs(studies, pool, slabs["n"], slabs["slices"], slabs["gap"], slabs["test_slices"])
    specs = []
    for i in range(n_sites):
        name = f"site-{'abcdefgh'[i]}"
        volumes = [train[i], test[i]]
        if i == shifted:
            volumes = [build_shifted(v, pool) for v in volumes]
        (tr, te) = volumes
        source = "; ".join(v.source for v in volumes)
        studies_dir = write_site_folder(folder / name / "studies", {tr.image_id: (tr.image_path, tr.label_path)},
                                        {te.image_id: (te.image_path, te.label_path)}, source)
        specs.append(SiteSpec(name, studies_dir, folder / name / "models"))
    return specs


def checks_of(decision: dict) -> dict:
    """Held-out Dice per mode from the guard's checks: the version's, and the base FM's box Dice."""
    held = {c["mode"]: c for c in decision["checks"] if c["source"] == "held-out images"}
    return {"box": held.get("interactive", {}).get("new"), "auto": held.get("automatic", {}).get("new"),
            "click": held.get("click", {}).get("new"), "base_box": held.get("interactive", {}).get("active"),
            "base_click": held.get("click", {}).get("active"), "activated": decision["activated"],
            "serves": decision["serves"]}


def baseline(name: str, specs: list[SiteSpec], train_sites: list[SiteData], cfg: FederatedConfig, dev: str,
             work: Path, log) -> dict:
    """Train one adapter on `train_sites`' images (one site: local-only; all: pooled) for as many epochs as the
    federation ran, and receive it at every site; returns each site's guard numbers."""
    epochs = cfg.rounds * cfg.local_epochs
    long_cfg = cfg.replace(rounds=1, local_epochs=epochs)
    service = MedFMService(Settings(models_dir=work / f"{name}-server", device=dev, labels=LABELS))
    pooled = SiteData(name, [img for s in train_sites for img in s.train], [])
    trainer = SiteTrainer(service.backend, service.segmenter.base, pooled, long_cfg, service.settings,
                          log=lambda _line: None)
    start = initial_adapter(service.backend, service.segmenter.base, cfg)
    t0 = time.perf_counter()
    update, metrics = trainer.train_round(start)
    params = {k: (start[k] + update[k]) if k in update else start[k] for k in start}
    train_s = time.perf_counter() - t0
    out = {}
    for spec in specs:
        if len(train_sites) == 1 and train_sites[0].name != spec.name:
            continue
        site = SiteData.read(spec.studies, spec.name)
        site_service = MedFMService(Settings(models_dir=work / name / spec.name, device=dev, labels=LABELS))
        received = receive_global_adapter(Registry(site_service), trainer, params, {"id": name, "rounds": 1,
                                                                                     "sites": {}}, site.heldout)
        out[spec.name] = checks_of(received["decision"]) | {"train_s": round(train_s, 1), **metrics}
        log(f"{name} at {spec.name}: {out[spec.name]}")
    return out


TIE = 0.005  # Dice differences within this are called a tie: one seed, slabs of one template


def versus(new: float | None, old: float | None) -> str | None:
    if new is None or old is None:
        return None
    delta = new - old
    word = "yes" if delta > TIE else "no" if delta < -TIE else "tie"
    return f"{word} ({delta:+.3f})"


def table_rows(sites: list[str], shifted: list[str], federated: dict, local: dict, pooled: dict) -> list[dict]:
    rows = []
    for name in sites:
        f, lo, po = federated[name], local.get(name, {}), pooled.get(name, {})
        rows.append({"site": name, "data": "shifted scanner" if name in shifted else "as acquired",
                     "zero-shot box": f["base_box"], "local box": lo.get("box"), "federated box": f["box"],
                     "pooled box": po.get("box"), "local auto": lo.get("auto"), "federated auto": f["auto"],
                     "pooled auto": po.get("auto"), "federated live": f["activated"],
                     "federated beats local, box": versus(f["box"], lo.get("box")),
                     "federated beats local, auto": versus(f["auto"], lo.get("auto"))})
    return rows


def to_markdown(size_name: str, size: dict, rows: list[dict], federation: dict, exchange: list[dict],
                fl_wall_s: float, full_bytes: int, wall: float) -> str:
    lines = [f"Federated adaptation, size `{size_name}`: {size['sites']} sites, {size['rounds']} round(s) x "
             f"{size['local_epochs']} local epoch(s), method {federation['method']} (FFA-LoRA: {federation['ffa']}), "
             f"{size['slices_per_image']} labelled slices per training image, batch {size['batch']}, one seed. "
             "Held-out Dice per site (grey and white matter, mean of both; box = 3D roi from the label, auto = "
             f"prompt-free); 'tie' = within {TIE}:", ""]
    columns = ["site", "data", "zero-shot box", "local box", "federated box", "pooled box", "local auto",
               "federated auto", "pooled auto", "federated live", "federated beats local, box",
               "federated beats local, auto"]
    lines.append(common.markdown_table(rows, columns))
    sent = bytes_per_round(exchange)
    lines += ["", f"Sent per round per site: {', '.join(f'{k} {v / 2**20:.2f} MB' for k, v in sorted(sent.items()))} "
                  f"(adapter tensors only; the whole FM would be {full_bytes / 2**20:.1f} MB). Federation on "
                  f"NVFlare's simulator: {fl_wall_s} s (two client threads share the 2 cores, so each round "
                  f"waits for two sites training at once); whole benchmark {wall:.0f} s.",
              "", "Data: slabs of one template (MNI152), so sites differ in anatomy level and, at the shifted site, "
                  "a simulated scanner; not in subject. Local and pooled train as many epochs as the federation "
                  "ran, from the same initial adapter and with the same recipe (FFA-LoRA: A frozen); every adapter "
                  "reaches a site through the checked import and its guard ('federated live')."]
    return "\n".join(lines)


def render(json_path: Path) -> None:
    """Rewrite the markdown of a result JSON from its measurements (after a change to the report)."""
    data = json.loads(json_path.read_text())
    sites = sorted(data["federated"])
    rows = table_rows(sites, data.get("shifted_sites", []), data["federated"], data["local"], data["pooled"])
    markdown = to_markdown(data["size"], data["config"], rows, data["federation"], data["exchange"],
                           data["fl_wall_s"], data["full_model_bytes"], data["total_wall_s"])
    data["rows"] = rows
    common.write_results("federated", data["size"], data["machine"], {k: v for k, v in data.items()
                                                                     if k not in ("machine", "size")}, markdown)
    print(markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build sites and workspace here and keep them (default: temp)")
    parser.add_argument("--render", type=Path, help="rewrite the markdown of a result JSON, without measuring")
    args, size_name = common.parse_args(parser, SIZES)
    if args.render:
        return render(args.render)
    if size_name not in SIZES:
        size_name = "cpu"
    size = SIZES[size_name]
    dev = common.device()
    info = common.machine()
    print(f"machine: {info}\nsize: {size_name} {size}", flush=True)
    start = time.perf_counter()
    work = Path(args.keep or tempfile.mkdtemp(prefix="medfm-fl-"))

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {line}", flush=True)

    try:
        specs = build_sites(args.studies, work / "sites", size["slabs"], size["sites"], size["shifted"])
        cfg = FederatedConfig(rounds=size["rounds"], local_epochs=size["local_epochs"],
                              slices_per_image=size["slices_per_image"], batch_size=size["batch"],
                              labels=sorted(TISSUE_LABELS))
        log(f"{len(specs)} sites built in {work / 'sites'}")
        fed = run_simulation(specs, cfg, work / "federation", LABELS, dev, log)
        for row in sorted(fed["exchange"], key=lambda r: (r["round"], r["site"])):
            log(f"round {row['round']} {row['site']}: weight {row['weight']:g}, sent {len(row['tensors'])} tensors "
                f"({row['bytes'] / 2**20:.2f} MB), {row['metrics']}")
        federated = {name: checks_of(r["decision"]) for name, r in fed["received"].items()}
        sites = {spec.name: SiteData.read(spec.studies, spec.name) for spec in specs}
        local, pooled = {}, {}
        if size["baselines"]:
            for spec in specs:
                local |= baseline(f"local-{spec.name}", [spec], [sites[spec.name]], cfg, dev, work, log)
            pooled = baseline("pooled", specs, list(sites.values()), cfg, dev, work, log)
        service = MedFMService(Settings(models_dir=work / "full", device=dev, labels=LABELS))
        full_bytes = sum(v.numel() * 4 for v in service.segmenter.base.state_dict().values())
        shifted = [s.name for s in specs if "shift" in sites[s.name].heldout[0].image_id]
        rows = table_rows([s.name for s in specs], shifted, federated, local, pooled)
        wall = time.perf_counter() - start
        markdown = to_markdown(size_name, size, rows, fed["federation"], fed["exchange"], fed["fl_wall_s"],
                               full_bytes, wall)
        data = {"config": size, "shifted_sites": shifted, "federation_config": cfg.to_json(), "device": dev,
                "rows": rows,
                "federated": federated, "local": local, "pooled": pooled, "exchange": fed["exchange"],
                "federation": fed["federation"], "fl_wall_s": fed["fl_wall_s"], "adapter_bytes": fed["adapter_bytes"],
                "initial_adapter_bytes": nbytes(fed["initial"]), "full_model_bytes": full_bytes,
                "total_wall_s": round(wall, 1), "load_average_at_end": common.load_average()}
        json_path, md_path = common.write_results("federated", size_name, info, data, markdown)
        print(markdown)
        print(f"wrote {json_path}, {md_path} in {wall:.0f} s")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
