"""The named recipes: the earlier presets keep their run ids, the paper's and the ImageNet-class ones hold their
sources' settings and say what differs, and a preset whose data is absent fails in one line pointing to the docs;
`--dry-run` works on each where its data exists (tiny trees in each dataset's layout, made here, no download)."""

import numpy as np
import pytest
import torch
from PIL import Image

import ablations.data.sources as sources
from ablations.config import MODEL_KEYS, RunConfig
from ablations.data import CIFAR10_JPEG_ENV, IMAGENET_ENV, IMAGENETTE_FOLDER
from ablations.engine.train import Trainer
from ablations.run import cli
from ablations.sweep.presets import PRESETS
from convmixer.registry import get_config

# Run ids of the presets results were committed with: a new preset or key must leave them as they are.
EARLIER_IDS = {"smoke": "a1a384a07c58b16c", "cifar10": "de7c4fab6c4c80f9", "cifar10-jpeg": "f3f7d6c18a5904dd"}


@pytest.mark.parametrize(
    "preset, model",
    [
        ("cifar10-jpeg", "convmixer_256_8_cifar10"),
        ("paper-cifar10", "convmixer_256_8_ks9_p1_cifar10"),
        ("imagenet", "convmixer_1536_20"),
        ("imagenet-budget", "convmixer_1024_20_ks9_p14"),
    ],
)
def test_a_recipe_that_names_a_registered_model_takes_every_model_key_from_it(preset, model):
    values, config = PRESETS[preset].values, get_config(model)
    assert {key: values.get(key) for key in MODEL_KEYS} == {key: getattr(config, key) for key in MODEL_KEYS}


def image_tree(root, splits=("train", "val"), classes=("n01440764", "n02102040"), size=(40, 52)) -> None:
    """root/<split>/<wnid>/<i>.JPEG: ImageNet's and Imagenette's layout, two small images per class."""
    rng = np.random.default_rng(0)
    for split in splits:
        for wnid in classes:
            (root / split / wnid).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / wnid / f"{i}.JPEG")


def test_every_preset_is_a_valid_config_and_the_earlier_ones_keep_their_run_ids() -> None:
    for preset in PRESETS.values():
        RunConfig(**preset.values).validate()
    assert {name: RunConfig(**PRESETS[name].values).run_id() for name in EARLIER_IDS} == EARLIER_IDS


def test_the_imagenet_preset_is_the_authors_command_and_names_what_differs() -> None:
    cfg = RunConfig(**PRESETS["imagenet"].values)
    # locuslab/convmixer README; the flags it leaves out: their train.py's defaults.
    authors = {"dim": 1536, "depth": 20, "kernel_size": 9, "patch_size": 7, "epochs": 150, "image_size": 224,
               "lr": 0.01, "schedule": "onecycle", "warmup_epochs": 0, "mixup": 0.5, "cutmix": 0.5, "reprob": 0.25,
               "clip_norm": 1.0, "weight_decay": 2e-5, "adam_eps": 1e-3, "label_smoothing": 0.1, "scale": 0.08,
               "jitter": 0.0, "randaug_n": 2, "randaug_m": 27, "batch_size": 640, "randaug_ops": "timm",
               "randaug_mstd": 1.5, "train_interpolation": "random"}  # fmt: skip
    assert {key: getattr(cfg, key) for key in authors} == authors
    for missing in ("own mean colour", "square", "erasing to zero", "per sample", "bf16 (theirs"):
        assert missing in PRESETS["imagenet"].description


def test_the_paper_and_budget_presets() -> None:
    paper = RunConfig(**PRESETS["paper-cifar10"].values)
    assert (paper.dataset, paper.dim, paper.depth, paper.kernel_size, paper.patch_size) == ("cifar10", 256, 8, 9, 1)
    assert (paper.epochs, paper.mixup, paper.cutmix, paper.reprob, paper.scale) == (200, 0.5, 0.5, 0.25, 0.75)
    assert (paper.randaug_ops, paper.randaug_mstd, paper.train_interpolation) == ("timm", 1.5, "random")
    assert "square crops" in PRESETS["paper-cifar10"].description
    others = [RunConfig(**PRESETS[name].values) for name in PRESETS if name not in ("imagenet", "paper-cifar10")]
    assert {(cfg.randaug_ops, cfg.train_interpolation) for cfg in others} == {("torchvision", "bilinear")}  # ids kept
    budget = RunConfig(**PRESETS["imagenet-budget"].values)
    assert (budget.dim, budget.depth, budget.patch_size, budget.epochs) == (1024, 20, 14, 16)
    assert budget.image_size < 224 and budget.image_size % budget.patch_size == 0


@pytest.mark.parametrize("preset", ["imagenet", "imagenet-budget"])
def test_an_imagenet_preset_without_its_data_is_one_line_pointing_to_the_docs(tmp_path, capsys, monkeypatch, preset):
    monkeypatch.delenv(IMAGENET_ENV, raising=False)
    assert cli(["--preset", preset, "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"preset {preset} needs ImageNet-1k" in err and f"${IMAGENET_ENV}" in err
    assert "docs/data.md" in err and not (tmp_path / "out").exists()


def test_the_needed_data_of_each_preset_has_its_own_variable(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv(CIFAR10_JPEG_ENV, str(tmp_path / "jpeg.tar.gz"))  # not ImageNet's
    monkeypatch.delenv(IMAGENET_ENV, raising=False)
    assert cli(["--preset", "imagenet", "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert "needs ImageNet-1k" in capsys.readouterr().err


@pytest.mark.parametrize("preset, model", [("imagenet", "ConvMixer-1536/20"), ("imagenet-budget", "ConvMixer-1024/20")])
def test_an_imagenet_preset_dry_runs_on_a_tree_in_imagenets_layout(tmp_path, capsys, monkeypatch, preset, model):
    image_tree(tmp_path / "imagenet")
    monkeypatch.setenv(IMAGENET_ENV, str(tmp_path / "imagenet"))
    out = tmp_path / "out"
    assert cli(["--preset", preset, "--set", "image_size=28", "--out", str(out), "--dry-run"]) == 0
    assert f"1 run of preset {preset}: {model} on ImageFolder imagenet" in capsys.readouterr().out
    assert not out.exists()


def test_the_imagenette_preset_reads_torchvisions_layout_without_downloading(tmp_path, capsys, monkeypatch) -> None:
    def no_download(*args, **kwargs):
        raise AssertionError("the tree is there: nothing may be downloaded")

    monkeypatch.setattr(sources, "Imagenette", no_download)
    image_tree(tmp_path / IMAGENETTE_FOLDER)
    argv = ["--preset", "imagenette", "--set", f"data_root={tmp_path},image_size=32", "--out", str(tmp_path / "o")]
    assert cli([*argv, "--dry-run"]) == 0
    assert "ConvMixer-512/12 on Imagenette (160 px)" in capsys.readouterr().out


def test_imagenette_that_cannot_be_downloaded_is_one_line_pointing_to_the_docs(tmp_path, capsys, monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(sources, "Imagenette", offline)
    argv = ["--preset", "imagenette", "--set", f"data_root={tmp_path}", "--out", str(tmp_path / "o"), "--dry-run"]
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no {IMAGENETTE_FOLDER}/ under data_root" in err and "docs/data.md" in err


def test_adam_eps_reaches_adamw_and_its_default_leaves_every_earlier_run_id_as_it_was() -> None:
    assert RunConfig(adam_eps=1e-8).run_id() == RunConfig().run_id() != RunConfig(adam_eps=1e-3).run_id()
    cfg = RunConfig(**PRESETS["imagenet"].values)
    trainer = Trainer(cfg, torch.nn.Linear(2, 2), torch.device("cpu"), None)
    assert trainer.optimizer.param_groups[0]["eps"] == 1e-3
