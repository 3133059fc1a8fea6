"""The one options base: bounds written once (in the field) reach the help text, the checks and their words, and
every set of options (training, pretraining, federation, inference, server settings) reads a request one way."""

from __future__ import annotations

from pathlib import Path

import pytest

from lib.medfm.adaptation.config import AdaptConfig
from lib.medfm.adaptation.pretrain import PretrainConfig
from lib.medfm.errors import InputError
from lib.medfm.federated.config import FederatedConfig
from lib.medfm.prompts import InferOptions
from lib.medfm.settings import DEFAULT_LABELS, Settings

ALL = (AdaptConfig, PretrainConfig, FederatedConfig, InferOptions, Settings)


@pytest.mark.parametrize("options", ALL)
def test_help_says_what_each_field_is_for_and_its_bounds(options):
    assert all(text and ";" in text for text in options.help().values())


def test_a_bound_is_written_once_and_said_the_same_in_help_and_error():
    assert AdaptConfig.help()["rank"].endswith("a whole number from 1 to 256")
    assert AdaptConfig.help()["dropout"].endswith("a number in [0, 1)")
    assert AdaptConfig.help()["lr"].endswith("a number in (0, 1] or empty")
    assert "one of lora, dora, decoder, full" in AdaptConfig.help()["method"]
    assert Settings.help()["labels"].endswith("a JSON object, each value a whole number from 1 to 255")
    assert Settings.help()["precision"].endswith("one of auto, bf16, fp32")
    with pytest.raises(InputError, match=r"^bad training parameter: rank must be a whole number from 1 to 256, got 0$"):
        AdaptConfig(rank=0)
    with pytest.raises(InputError, match=r"^bad pretraining parameter: mask_ratio must be a number in \[0, 0.9\]"):
        PretrainConfig.from_request({"mask_ratio": "0.95"})
    with pytest.raises(InputError, match=r"^bad federation setting: rounds must be a whole number from 1 to 1000"):
        FederatedConfig(rounds=True)
    with pytest.raises(InputError, match="bad federation setting: noise needs clip_norm"):
        FederatedConfig(noise_multiplier=1.0)
    assert FederatedConfig(method="decoder").ffa is False  # FFA concerns LoRA's factors only


def test_info_options_list_a_choice_with_the_default_first():
    """MONAI Label's Slicer plugin preselects a list option's first entry, so the default leads."""
    adapt = AdaptConfig.info_options()
    assert adapt["method"] == ["decoder", "lora", "dora", "full"]
    assert adapt["lr"] is None and adapt["preserve_weight"] is None  # empty = the method's own default
    assert {k: v for k, v in adapt.items() if k != "method"} == {
        k: v for k, v in AdaptConfig().model_dump().items() if k != "method"}
    assert PretrainConfig.info_options()["recipe"] == ["consistency", "distill"]
    assert InferOptions.info_options(("adapter", "modality"), empty="") == {"adapter": "", "modality": ""}


def test_infer_options_from_a_request():
    options = InferOptions.from_params({"foreground": [[1, 2, 3]], "max_propagation": "5", "uncertainty": "true",
                                        "labels": ["lesion"], "adapter": ""})
    assert (options.adapter, options.max_propagation, options.uncertainty, options.labels) == (None, 5, True,
                                                                                              ("lesion",))
    assert InferOptions.from_params({}) == InferOptions()
    for bad, words in (({"max_propagation": -1}, "max_propagation"), ({"max_propagation": "all"}, "whole number of "
                       "slices from 0 to 1024"), ({"max_propagation": True}, "max_propagation"),
                       ({"max_propagation": 10**27}, "max_propagation"), ({"uncertainty": "maybe"}, "true or false"),
                       ({"labels": 5}, "list of names")):
        with pytest.raises(InputError, match=words):
            InferOptions.from_params(bad)


def test_server_settings_from_conf_strings(tmp_path):
    settings = Settings.from_conf({"models_dir": str(tmp_path), "ct_window": "-100, 300", "labels": '{"tumour": 2}',
                                   "embedding_cache_dir": "", "device": "cpu", "models": "all"}, app_dir="/app")
    assert settings.models_dir == tmp_path.resolve() and settings.ct_window == (-100.0, 300.0)
    assert settings.labels == {"tumour": 2} and settings.embedding_cache_dir is None and settings.batch_size == 1
    assert settings.runtime_dir == tmp_path.resolve() / "runtime"
    assert Settings.from_conf({"device": "cpu"}, app_dir=tmp_path).models_dir == (tmp_path / "model").resolve()
    assert Settings(models_dir=Path("m")).labels == DEFAULT_LABELS  # built in code, as the benchmarks do
    for conf, words in (({"ct_window": "1"}, "ct_window must be two numbers"), ({"ct_window": "3,1"}, "low below"),
                        ({"labels": '{"a": 0}'}, "each value a whole number from 1 to 255, got"),
                        ({"labels": "lesion"}, "labels must be a JSON object"), ({"labels": "{}"}, "at least one"),
                        ({"batch_size": "0"}, "batch_size must be a whole number at least 1"),
                        ({"precision": "fp8"}, "precision must be one of"),
                        ({"runtime": "tensorrt"}, "runtime must be one of")):
        with pytest.raises(InputError, match=words):
            Settings.from_conf({"device": "cpu", **conf}, app_dir=tmp_path)
