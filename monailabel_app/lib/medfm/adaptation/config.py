"""Adaptation hyperparameters: one dataclass that refuses bad values when it is built, however it is built.

As peft's `LoraConfig`, each field carries its help text in `metadata["help"]`; `/info/` and the docs show it.
A request's strings ("8", "true", "lung,brain") are converted by pydantic's lax rules, never by hand.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, get_type_hints

from pydantic import TypeAdapter, ValidationError

from ..errors import InputError

METHODS = ("lora", "dora", "decoder", "full")
# Learning rates that worked on the sample cases, per method: weights that start from a good pretrained value
# take small steps. The prompt-free label tokens (head_lr) are new embeddings and need a far larger one.
DEFAULT_LR = {"lora": 5e-4, "dora": 5e-4, "decoder": 1e-4, "full": 2e-5}
# Weight of the self-distillation toward the base FM's box answers, per method. LoRA/DoRA also move the image
# encoder, so what they learn on one case reaches every image: on the site benchmark's lesion pairs (cpu-train size,
# one labelled case) LoRA at weight 1 lost 0.015 box Dice against zero-shot (brain1 -> brain2 0.518 vs 0.592), at
# weight 3 0.002 (0.547; lung 0.896 vs 0.887, brain2 -> brain1 0.318 vs 0.289), at lr 2.5e-4 instead 0.011. The
# decoder-only default held +0.095 at weight 1. The price: LoRA from an SSL-pretrained encoder beat LoRA alone by
# +0.025 mean Dice at K=1 instead of +0.034 (benchmarks/README.md, pretraining). DoRA follows LoRA (the same
# wrapped modules; not measured apart).
DEFAULT_PRESERVE = {"lora": 3.0, "dora": 3.0, "decoder": 1.0, "full": 1.0}
# Held-out Dice below which a prompt mode serves no one on a label. On the site benchmark one click gave grey and
# white matter Dice 0.02-0.09 with the base FM and every adapted version, and the guard refused 8 of 11 slab versions
# whose box Dice had risen by up to 0.12 on that noise; one click on a lesion scored 0.38-0.86. A label where both
# versions are below the floor in a mode is recorded as not judged in that mode (0 judges everything).
SERVING_FLOOR = 0.2


def _help(text: str, default: Any = None) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class AdaptConfig:
    # `decoder` by default, from the site benchmark (benchmarks/results/site-cpu-train-*): with 1-2 labelled
    # volumes it raised held-out box Dice most (+0.05/+0.07 vs LoRA's +0.01/+0.02 on slabs, +0.095 vs -0.015 on
    # lesion pairs) and trained 2.7-5x faster on the CPU (a frozen encoder is embedded once); LoRA led automatic
    # mode at K=4 (0.63 vs 0.50) and is 20x smaller to exchange.
    method: str = _help(f"what is trained: one of {', '.join(METHODS)} (LoRA/DoRA through peft, the mask "
                        "decoders alone, or every weight)", "decoder")
    rank: int = _help("LoRA/DoRA rank, 1-256", 8)
    alpha: int = _help("LoRA/DoRA scaling numerator (scale = alpha / rank), 1-4096", 16)
    dropout: float = _help("LoRA dropout in [0, 1); 0 is peft's default, and 0.05 kept a dropped copy of every "
                           "LoRA input (+38 % training memory)", 0.0)
    target_modules: str | None = _help("regular expression over module names that LoRA/DoRA wraps; empty = the "
                                       "backend's attention and MLP linears", None)
    lr: float | None = _help("learning rate of the adapted weights in (0, 1]; empty = the method's default "
                             f"({DEFAULT_LR})", None)
    head_lr: float = _help("learning rate of the prompt-free label tokens in (0, 10]", 1e-2)
    max_epochs: int = _help("most passes over the training slices, 1-10000", 10)
    max_seconds: float = _help("wall-clock budget in seconds; training stops after the step that passes it", 1800.0)
    slices_per_image: int = _help("labelled slices drawn per training image, evenly spread, 1-4096", 8)
    batch_size: int = _help("slices per optimiser step, 1-1024", 4)
    val_fraction: float = _help("share of the labelled images kept apart for validation, in [0, 1); the split "
                                "is by image", 0.25)
    patience: int = _help("epochs without a better validation Dice before stopping early, 1-1000", 3)
    seed: int = _help("seed of the split, the slice draw and the box jitter", 0)
    auto_head: bool = _help("also learn one prompt per label for prompt-free (automatic) segmentation", True)
    gradient_checkpointing: bool | None = _help(
        "recompute activations in backward instead of keeping them; empty = on with a GPU, where memory runs out "
        "(LoRA batch 4: 3.3 -> 0.7 GB of tensors), off on a CPU, where it cost 1.6x the step time", None)
    preserve_weight: float | None = _help("weight of the self-distillation loss that keeps box prompts answering "
                                          "as the base FM does on random boxes of the training slices, in [0, 100]; "
                                          f"0 = off; empty = the method's default ({DEFAULT_PRESERVE})", None)
    box_jitter: float = _help("each side of a training box moves by up to this share of the box size, in [0, 1] "
                              "(a user's box is never exact)", 0.1)
    labels: list[str] | None = _help("adapt to these label names only (a list, or names separated by commas); "
                                     "empty = every label of the server", None)
    val_gap_slices: int = _help("with one labelled image, slices left out between its training slices and the "
                                "validation slices above them (fewer when the structure is too thin), 1-64", 2)
    regression_margin: float = _help("Dice the new version may lose against the active one, on data it did not "
                                     "train on, and still go live, in [-1, 1]; 0 = at least as good", 0.0)
    serving_floor: float = _help("held-out Dice below which a mode serves no one on a label, in [0, 1]: where the "
                                 "new and the active version both score below it on a label in a mode (one click "
                                 "on grey matter), the guard records that label as not judged in that mode instead "
                                 "of deciding on noise; 0 = judge every label", SERVING_FLOOR)
    images: list[str] | None = _help("train on these datastore image ids only; empty = every labelled image that "
                                     "is not held out", None)
    freeze_lora_a: bool = _help("keep LoRA's A factors at their initial values and train B only (FFA-LoRA): what "
                                "makes averaging adapters across sites exact; LoRA/DoRA only", False)
    parent: str | None = _help("start from this version's LoRA, e.g. an `ssl-lora` version pretrained on the site's "
                               "unlabelled scans (the hybrid: self-supervised, then supervised); method lora or dora "
                               "with the parent's rank; empty = from the base FM", None)
    note: str = _help("free text kept in the version's manifest", "")

    def __post_init__(self) -> None:
        def bad(msg: str):
            raise InputError(f"bad training parameter: {msg}")

        check_types(self, _TYPES)
        if self.method not in METHODS:
            bad(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name, lo, hi in (("rank", 1, 256), ("alpha", 1, 4096), ("max_epochs", 1, 10000),
                             ("slices_per_image", 1, 4096), ("batch_size", 1, 1024), ("patience", 1, 1000),
                             ("val_gap_slices", 1, 64)):
            value = getattr(self, name)
            if not lo <= value <= hi:
                bad(f"{name} must be between {lo} and {hi}, got {value}")
        if not 0 <= self.dropout < 1:
            bad(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.learning_rate <= 1 or not 0 < self.head_lr <= 10:
            bad(f"lr must be in (0, 1] and head_lr in (0, 10], got {self.learning_rate} and {self.head_lr}")
        if self.max_seconds <= 0:
            bad(f"max_seconds must be positive, got {self.max_seconds}")
        if not 0 <= self.val_fraction < 1:
            bad(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not -1 <= self.regression_margin <= 1:
            bad(f"regression_margin must be in [-1, 1], got {self.regression_margin}")
        if not 0 <= self.serving_floor <= 1:
            bad(f"serving_floor must be in [0, 1], got {self.serving_floor}")
        if not 0 <= self.preservation <= 100:
            bad(f"preserve_weight must be in [0, 100], got {self.preservation}")
        if not 0 <= self.box_jitter <= 1:
            bad(f"box_jitter must be in [0, 1], got {self.box_jitter}")
        if self.freeze_lora_a and self.method not in ("lora", "dora"):
            bad(f"freeze_lora_a needs method lora or dora, got {self.method!r}")
        if self.parent is not None and (self.method not in ("lora", "dora") or not re.match(r"^v\d{4,}$",
                                                                                               self.parent)):
            bad(f"parent must be a version like v0001 and needs method lora or dora, got {self.parent!r} with "
                f"{self.method!r}")
        if self.target_modules is not None:
            try:
                re.compile(self.target_modules)
            except re.error as err:
                bad(f"target_modules is not a valid regular expression: {err}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    @property
    def preservation(self) -> float:
        """The self-distillation weight in force: `preserve_weight`, else the method's default."""
        return self.preserve_weight if self.preserve_weight is not None else DEFAULT_PRESERVE[self.method]

    def to_json(self) -> dict:
        return {**asdict(self), "lr": self.learning_rate, "preserve_weight": self.preservation}

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata["help"] for f in fields(cls)}

    @classmethod
    def from_request(cls, request: dict) -> AdaptConfig:
        """Pick our fields out of a MONAI Label train request (which also carries model, device, ...)."""
        return cls(**request_values(cls, request, _TYPES))


def request_values(cls, request: dict, types: dict) -> dict:
    """A config dataclass's fields from a request's strings ("8", "true", "lung,brain"), by pydantic's lax rules;
    a value that is not of its field's type is refused in words."""
    values = {}
    for f in fields(cls):
        value = request.get(f.name)
        if value in (None, "", "None", "null"):
            continue
        kind = types[f.name]
        if isinstance(value, str) and _is_list(kind):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list | tuple) and _is_list(kind):
            value = [str(v) for v in value]
        try:
            if isinstance(value, bool) and "bool" not in str(kind):
                raise ValueError(value)  # pydantic's lax mode would read true as 1
            values[f.name] = TypeAdapter(kind).validate_python(value)
        except (ValidationError, ValueError) as err:
            raise InputError(f"bad training parameter: {f.name} = {value!r} is not {_type_words(kind)}") from err
    return values


def check_types(config, types: dict) -> None:
    """Every field holds its declared type (strictly: a config built in code gets no lax conversion)."""
    for name, kind in types.items():
        try:
            TypeAdapter(kind).validate_python(getattr(config, name), strict=True)
        except ValidationError:
            raise InputError(f"bad training parameter: {name} must be {_type_words(kind)}, "
                             f"got {getattr(config, name)!r}") from None


def _is_list(kind) -> bool:
    return "list" in str(kind)


def _type_words(kind) -> str:
    words = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}
    for base, text in words.items():
        if kind in (base, base | None):
            return text + (" or empty" if kind is not base else "")
    return "a list of names" + (" or empty" if "None" in str(kind) else "")


_TYPES = get_type_hints(AdaptConfig)  # field name -> its type, resolved from the postponed annotations
