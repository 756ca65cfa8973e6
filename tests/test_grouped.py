"""The grouped-seeds prototype (benchmarks/grouped*.py): N runs trained as one grouped model equal the N runs the
engine trains alone, within float tolerance; and its speed benchmark's CPU path."""

import json

import pytest
import torch
from torch import nn

from ablations.config import ConfigError, RunConfig
from ablations.engine.train import train_run
from benchmarks import grouped_speed
from benchmarks.grouped import GroupedConvMixer
from benchmarks.grouped_train import check_groupable, per_model_clip, train_grouped
from convmixer.config import NORM_NAMES, RESIDUAL_NAMES
from convmixer.model import ConvMixer

RECORD_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")


def tiny(seed: int, **changes) -> RunConfig:
    """Two steps an epoch, with the augmentation's random crops and flips on and a clip that every step hits.

    AdamW's eps is 1e-4, not 1e-8: AdamW divides by sqrt(v) + eps, so where a gradient element is near zero, eps
    1e-8 turns the float-level differences of a grouped conv's sums into visible weight differences (measured:
    5.6e-5 on 4 of the 384 patch-embedding weights of one seed, 3e-7 in the losses); with 1e-4 the weights agree
    to 1e-6, and leaving out the per-model clip, the sum of the losses or the runs' own data orders still fails."""
    values = dict(
        dataset="synthetic",
        dim=8,
        depth=1,
        kernel_size=3,
        patch_size=4,
        train_subset=50,
        test_subset=25,
        batch_size=25,
        epochs=2,
        lr=0.02,
        adam_eps=1e-4,
        clip_norm=0.05,
        scale=0.75,
        hflip=True,
        randaug_n=0,
        jitter=0.0,
        reprob=0.0,
    )
    return RunConfig(**{**values, **changes, "seed": seed})


def solo_models(norm: str, residual: str, seeds: int = 3) -> list[ConvMixer]:
    models = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = ConvMixer(8, 2, 3, 4, 10, norm=norm, residual=residual)
        with torch.no_grad():  # norm weights away from 1 and 0, so that a norm mixing the models would show
            for name, parameter in model.named_parameters():
                if "norm" in name:
                    parameter.add_(0.3 * torch.randn_like(parameter))
        models.append(model)
    return models


@pytest.mark.parametrize("norm", NORM_NAMES)
@pytest.mark.parametrize("residual", RESIDUAL_NAMES)
def test_the_grouped_model_computes_each_models_logits_and_norm_statistics(norm, residual):
    models = solo_models(norm, residual)
    grouped = GroupedConvMixer.from_models(models)
    images = [torch.randn(4, 3, 16, 16) for _ in models]
    for train in (True, False):
        grouped.train(train)
        logits = grouped(torch.cat(images, 1))
        for index, (model, x) in enumerate(zip(models, images, strict=True)):
            model.train(train)
            torch.testing.assert_close(logits[:, index], model(x), rtol=1e-5, atol=1e-6)
    for index, model in enumerate(models):  # the running statistics of the train-mode pass, and the weights
        state = grouped.model_state(index)
        assert state.keys() == model.state_dict().keys()
        for key, value in model.state_dict().items():
            torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-6)


def test_each_model_is_clipped_by_the_norm_of_its_own_gradient():
    models = solo_models("batch", "depthwise")
    for scale, model in zip((0.01, 1.0, 100.0), models, strict=True):  # one under the limit, two over it
        for parameter in model.parameters():
            parameter.grad = scale * torch.randn_like(parameter)
    grouped = GroupedConvMixer.from_models(models)
    for name, parameter in grouped.named_parameters():
        parameter.grad = torch.cat([model.get_parameter(name).grad for model in models])
    norms = per_model_clip([p.grad for p in grouped.parameters()], len(models), max_norm=1.0)
    for index, model in enumerate(models):
        norm = nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        torch.testing.assert_close(norms[index], norm)
        for name, parameter in model.named_parameters():
            torch.testing.assert_close(grouped.get_parameter(name).grad.chunk(len(models))[index], parameter.grad)


@pytest.mark.parametrize(
    ("configs", "message"),
    [
        ([tiny(0), tiny(0)], "seeds [0, 0] are not accepted"),
        ([tiny(0), tiny(1, lr=0.1)], "lr=0.1 is not accepted: a group's runs differ only in seed"),
        ([tiny(0, precision="fp16"), tiny(1, precision="fp16")], "precision='fp16' is not accepted"),
        ([tiny(0, accum_steps=5), tiny(1, accum_steps=5)], "accum_steps=5 is not accepted for grouped runs"),
    ],
)
def test_runs_that_cannot_be_grouped_are_refused_in_one_line(configs, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_groupable(configs)


def solo_runs(configs: list[RunConfig], tmp_path) -> list[tuple[list[dict], dict]]:
    """Each run trained by the engine alone: its epoch records and its final weights (from its checkpoint)."""
    runs = []
    for cfg in configs:
        records, run_dir = [], tmp_path / str(cfg.seed)
        train_run(cfg, run_dir, device="cpu", log=lambda line: None, on_epoch=records.append)
        runs.append((records, torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]))
    return runs


def assert_grouped_equals_solo(configs: list[RunConfig], tmp_path) -> None:
    histories, trainer = train_grouped(configs, "cpu")
    for index, (records, weights) in enumerate(solo_runs(configs, tmp_path)):
        assert len(histories[index]) == len(records) == configs[0].epochs
        for grouped_record, record in zip(histories[index], records, strict=True):
            assert {key: grouped_record[key] for key in RECORD_KEYS} == pytest.approx(
                {key: record[key] for key in RECORD_KEYS}, rel=1e-5, abs=1e-7
            )
        state = trainer.model.model_state(index)
        assert state.keys() == weights.keys()
        for key, value in weights.items():
            torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-6, msg=f"{key} of seed {index}")


def test_two_grouped_runs_equal_the_two_runs_the_engine_trains_alone(tmp_path):
    assert_grouped_equals_solo([tiny(0), tiny(1)], tmp_path)


@pytest.mark.parametrize(
    "changes",
    [
        dict(norm="layer", residual="both", activation="relu"),
        pytest.param(
            dict(randaug_n=1, reprob=0.25, mixup=0.5, cutmix=0.5, label_smoothing=0.1, schedule="cosine", epochs=3),
            marks=pytest.mark.slow,
        ),
        pytest.param(dict(train_subset=60, seed_count=4), marks=pytest.mark.slow),  # a short last batch; 4 models
    ],
)
def test_grouped_runs_equal_solo_runs_for_other_models_and_recipes(tmp_path, changes):
    count = changes.pop("seed_count", 2)
    assert_grouped_equals_solo([tiny(seed, **changes) for seed in range(count)], tmp_path)


def test_the_speed_benchmark_times_both_ways_for_every_shape_and_count(tmp_path):
    out = tmp_path / "grouped.json"
    argv = ["--device", "cpu", "--set", "dim=4,depth=1,batch_size=2", "--groups", "1,2", "--time-budget", "0"]
    assert grouped_speed.main([*argv, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["complete"] and [(row["shape"], row["groups"]) for row in result["rows"]] == [
        ("study", 1),
        ("study", 2),
        ("smoke", 1),
        ("smoke", 2),
    ]
    for row in result["rows"]:
        assert row["rounds"] >= 2 and row["sequential_images_per_s"] > 0 and row["grouped_images_per_s"] > 0
    assert "the rule (>= 1.5x at the study's shape) is for a GPU" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--groups", "0,2"], "--groups '0,2' is not accepted"),
        (["--shapes", "huge"], "--shapes 'huge' is not accepted"),
        (["--set", "precision=fp16"], "precision='fp16' is not accepted for grouped runs"),
    ],
)
def test_the_speed_benchmark_refuses_bad_options_in_one_line(args, message, capsys):
    assert grouped_speed.cli(["--device", "cpu", "--shapes", "smoke", "--time-budget", "0", *args]) == 2
    assert message in capsys.readouterr().err
