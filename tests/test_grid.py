"""Command-line grid: value parsing by field type, cartesian expansion with seeds, and one-line errors."""

import pytest

from ablations import config
from ablations.config import ConfigError, RunConfig, field_types, parse_value
from ablations.sweep.grid import build_sweep, parse_grid, parse_sets
from ablations.sweep.presets import PRESETS


def test_values_are_parsed_by_the_field_type():
    assert parse_value("kernel_size", "7", "--grid") == 7
    assert parse_value("lr", "1e-3", "--grid") == 0.001
    assert parse_value("image_size", "0", "--set") == 0
    assert parse_value("residual", " none ", "--set") == "none"
    for word, value in [("true", True), ("Yes", True), ("1", True), ("false", False), ("no", False), ("0", False)]:
        assert parse_value("hflip", word, "--set") is value


@pytest.mark.parametrize(
    "key, text, expected",
    [
        ("kernel_size", "7.5", "kernel_size='7.5' is not accepted: expected an integer"),
        ("lr", "fast", "lr='fast' is not accepted: expected a finite number"),
        ("lr", "nan", "lr='nan' is not accepted: expected a finite number"),
        ("hflip", "maybe", "hflip='maybe' is not accepted: expected one of true/"),
        ("dim", "", "empty value for dim"),
    ],
)
def test_bad_values_name_key_value_and_what_is_accepted(key, text, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(".", r"\.")):
        parse_value(key, text, "--grid")


def test_grid_and_set_syntax():
    assert parse_grid(["kernel_size=3,7", "norm=batch,layer"]) == {"kernel_size": [3, 7], "norm": ["batch", "layer"]}
    assert parse_sets(["epochs=2,lr=0.1", "hflip=no"]) == {"epochs": 2, "lr": 0.1, "hflip": False}


@pytest.mark.parametrize(
    "sets, grids, message",
    [
        ([], ["kernel=3,5"], "--grid: unknown key 'kernel'; did you mean 'kernel_size'?"),
        (["epoch=3"], [], "--set: unknown key 'epoch'; did you mean 'epochs'?"),
        ([], ["kernel_size"], "--grid 'kernel_size' is malformed: expected KEY=VALUE"),
        ([], ["=3,5"], "--grid '=3,5' is malformed"),
        ([], ["kernel_size="], "--grid: empty value for kernel_size"),
        ([], ["kernel_size=3,,5"], "--grid: empty value for kernel_size"),
        ([], ["kernel_size=3,5,3"], "value 3 given twice"),
        ([], ["kernel_size=3", "kernel_size=5"], "key 'kernel_size' given twice"),
        (["epochs=1", "epochs=2"], [], "--set: key 'epochs' given twice"),
        (["kernel_size=3,5"], [], "'5' is not KEY=VALUE"),
        (["kernel_size=3"], ["kernel_size=5,7"], "'kernel_size' is in both --set and --grid"),
    ],
)
def test_malformed_or_conflicting_options(sets, grids, message):
    with pytest.raises(ConfigError) as caught:
        build_sweep({}, sets, grids, seeds=1)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_cartesian_product_in_command_line_order_with_seed_major_seeds():
    sweep = build_sweep({"epochs": 2}, ["dim=8"], ["kernel_size=3,5", "norm=batch,layer"], seeds=2)
    configs = sweep.configs()
    assert sweep.varying_keys() == ["kernel_size", "norm", "seed"]
    assert [(c.seed, c.kernel_size, c.norm) for c in configs] == [
        (seed, k, norm) for seed in (0, 1) for k in (3, 5) for norm in ("batch", "layer")
    ]
    assert all(c.dim == 8 and c.epochs == 2 for c in configs)
    assert len({c.run_id() for c in configs}) == 8


def test_set_and_grid_override_the_preset():
    sweep = build_sweep(PRESETS["cifar10"].values, ["lr=0.01"], ["kernel_size=7,9"], seeds=1)
    configs = sweep.configs()
    assert [c.kernel_size for c in configs] == [7, 9]
    assert {c.lr for c in configs} == {0.01}
    assert {c.randaug_n for c in configs} == {2} and {c.dataset for c in configs} == {"cifar10"}


def test_every_expanded_config_is_validated():
    with pytest.raises(ConfigError, match="patch_size=64 is not accepted: larger than the 32x32 images"):
        build_sweep({}, [], ["patch_size=2,64"], seeds=1).configs()
    with pytest.raises(ConfigError, match="norm='group' is not accepted: choose one of batch, layer"):
        build_sweep({}, [], ["norm=batch,group"], seeds=1).configs()
    with pytest.raises(ConfigError, match="--seeds 0 is not accepted"):
        build_sweep({}, [], [], seeds=0)
    with pytest.raises(ConfigError, match="--seeds and a 'seed' key"):
        build_sweep({}, ["seed=1"], [], seeds=3)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"lr": float("nan")}, "lr=nan is not accepted: expected a finite number"),  # passed every range check
        ({"clip_norm": float("nan")}, "clip_norm=nan is not accepted"),  # silently turned clipping off
        ({"weight_decay": float("inf")}, "weight_decay=inf is not accepted"),
        # finite, but torch cannot make a float32 tensor of them: the run failed with an overflow RuntimeError
        ({"lr": 1e300}, "lr=1e+300 is not accepted: expected a number in (0, 1e+06]"),
        ({"weight_decay": 1e300}, "weight_decay=1e+300 is not accepted: expected a number in [0, 1e+06]"),
        ({"seed": 2**32}, "seed=4294967296 is not accepted: expected an integer in [0, 4294967295]"),
        ({"image_size": 100_000}, "image_size=100000 is not accepted: expected an integer in [0, 4096]"),
    ],
)
def test_validate_refuses_what_python_api_callers_can_pass(changes, message):
    """Values the command-line parser already refuses, which benchmarks.train_speed and the API can still pass."""
    with pytest.raises(ConfigError) as caught:
        RunConfig(**changes).validate()
    assert message in str(caught.value)


def test_presets_are_valid_configs():
    for preset in PRESETS.values():
        RunConfig(**preset.values).validate()


def test_run_ids_stay_stable_when_a_key_is_added(monkeypatch):
    # Committed studies are found by run id: the id of a given config must never change silently (64 bits; the
    # 40-bit ids of earlier results are its first 10 hex digits).
    assert RunConfig().run_id() == "640c7794c352d001"
    assert RunConfig(data_root="elsewhere").run_id() == "640c7794c352d001"
    monkeypatch.setattr(config, "LATER_KEYS", {"epochs": 25})  # as if `epochs` had been added later, default 25
    assert RunConfig().run_id() != "640c7794c352d001"  # the key is left out of the id while it holds its old value
    assert RunConfig(epochs=24).run_id() != RunConfig().run_id()


def test_every_key_but_free_text_and_switches_has_a_rule():
    # --help prints these rules and validate() enforces them: a new key must not slip past both.
    unchecked = {key for key, kind in field_types().items() if key not in config.ACCEPTED}
    switches = {key for key, kind in field_types().items() if kind is bool and key not in config.AUTO_SWITCHES}
    assert unchecked == {"data_root"} | switches


def test_every_model_knob_is_a_run_key():
    # model_config passes MODEL_KEYS by name: a knob added to ConvMixerConfig alone would fail here, not mid-sweep.
    assert set(config.MODEL_KEYS) <= set(field_types())
    cfg = RunConfig(norm="layer", kernel_size=3)
    model = cfg.model_config(num_classes=7, in_chans=1)
    assert (model.norm, model.kernel_size, model.num_classes, model.in_chans) == ("layer", 3, 7, 1)
