"""convmixer.evaluate: timm's evaluation transform for the ConvMixers (numbers read from timm's source, kept in the
registry), the scores of a checkpoint on a tiny ImageFolder tree made here, and the one-line errors."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ablations.config import RunConfig
from ablations.store.schema import CHECKPOINT_KEYS
from convmixer import registry
from convmixer.evaluate import PROG, cli
from convmixer.interop import convert
from convmixer.model import ConvMixerConfig
from convmixer.transforms import EvalTransform

TINY = ConvMixerConfig(dim=8, depth=1, kernel_size=3, patch_size=4, num_classes=7)
CLASSES = [f"n0{i}" for i in range(TINY.num_classes)]  # WordNet-id-like folder names, sorted as ImageNet's


def test_the_transform_is_timms_for_the_convmixers() -> None:
    # timm/models/convmixer.py _cfg: input_size (3, 224, 224), crop_pct .96, interpolation 'bicubic',
    # IMAGENET_DEFAULT_MEAN/STD; timm's transforms_imagenet_eval resizes to floor(224 / .96) = 233, then crops 224.
    for name in [name for name in registry.list_models() if registry.get_config(name).num_classes == 1000]:
        transform = registry.registered(name).eval_transform()
        settings = transform.settings
        assert (settings.crop_pct, settings.interpolation) == (0.96, "bicubic")
        assert settings.mean == (0.485, 0.456, 0.406) and settings.std == (0.229, 0.224, 0.225)
    assert registry.registered("convmixer_1536_20").eval_transform().resize_size == 233


def test_the_transform_resizes_the_shorter_side_with_pillows_bicubic_then_crops_the_centre() -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    transform = registry.registered("convmixer_768_32").eval_transform()
    # By hand: the shorter side 300 -> 233, the longer 400 -> int(233 * 400 / 300) = 310; the centre crop starts
    # at round((233 - 224) / 2) = 4 rows and round((310 - 224) / 2) = 43 columns.
    resized = np.asarray(image.resize((310, 233), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    crop = torch.from_numpy(resized[4 : 4 + 224, 43 : 43 + 224]).permute(2, 0, 1)
    mean, std = (torch.tensor(stat).view(3, 1, 1) for stat in (transform.settings.mean, transform.settings.std))
    expected = (crop - mean) / std
    assert torch.allclose(transform.build()(image), expected, atol=1e-6)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A registered 'tiny' model at 32 px, a checkpoint of it in the authors' layout, and a validation tree."""
    monkeypatch.setitem(registry.MODELS, "tiny", registry.RegisteredModel(TINY, 32))
    torch.manual_seed(0)
    model = TINY.build().eval()
    checkpoint = tmp_path / "tiny.pth.tar"
    torch.save({"epoch": 1, "state_dict": convert(model.state_dict(), "modular", "locuslab")}, checkpoint)
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (tmp_path / "val" / name).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 256, (36 + 4 * i, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "val" / name / f"{i}.JPEG")
    return model, checkpoint, tmp_path / "val"


def own_scores(model, transform, val) -> str:
    """'top-1 x%, top-5 y%' of `model` on the images of `val` under `transform`, computed here by hand."""
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        for path in sorted((val / name).iterdir()):
            images.append(transform(Image.open(path).convert("RGB")))
            labels.append(label)
    with torch.no_grad():
        ranked = model.eval()(torch.stack(images)).topk(5, dim=1).indices
    hits = ranked == torch.tensor(labels)[:, None]
    return f"top-1 {100 * hits[:, 0].float().mean():.2f}%, top-5 {100 * hits.any(1).float().mean():.2f}%"


def test_the_scores_are_the_models_own_on_the_transformed_images(tiny, capsys) -> None:
    model, checkpoint, val = tiny
    scores = own_scores(model, registry.registered("tiny").eval_transform().build(), val)
    assert cli(["--model", "tiny", "--checkpoint", str(checkpoint), "--data", str(val), "--workers", "0"]) == 0
    assert capsys.readouterr().out.startswith(f"tiny: {scores} on 14 images of {val}")


def test_a_toolkit_runs_checkpoint_is_scored_with_the_shape_of_its_tensors_and_its_configs_knobs(tiny, capsys):
    """A run's checkpoint.pt (the engine's keys, the modular state dict under "model") of an unregistered shape,
    with a layer norm, relu and no residual: the shape from the tensors, the rest and image_size from config.json."""
    _, _, val = tiny
    config = ConvMixerConfig(dim=12, depth=2, kernel_size=5, patch_size=3, num_classes=7, residual="none")
    config = dataclasses.replace(config, norm="layer", activation="relu")
    torch.manual_seed(1)
    model = config.build()
    run = val.parent / "runs" / "0123456789abcdef"
    run.mkdir(parents=True)
    saved = {key: None for key in CHECKPOINT_KEYS} | {"run_id": run.name, "epoch": 3, "model": model.state_dict()}
    torch.save(saved, run / "checkpoint.pt")
    recorded = RunConfig(image_size=24, residual="none", norm="layer", activation="relu").to_dict()
    (run / "config.json").write_text(json.dumps(recorded))
    scores = own_scores(model, EvalTransform(24, registry.CONVMIXER_EVAL).build(), val)
    assert cli(["--checkpoint", str(run / "checkpoint.pt"), "--data", str(val), "--workers", "0"]) == 0
    assert capsys.readouterr().out.startswith(f"ConvMixer-12/2: {scores} on 14 images of {val} (resize 25 bicubic")
    (run / "config.json").write_text(json.dumps({**recorded, "image_size": 0}))  # the data's own size: unknown here
    assert cli(["--checkpoint", str(run / "checkpoint.pt"), "--data", str(val), "--workers", "0"]) == 2
    assert "has image_size=0 (the data's own size): give --image-size" in capsys.readouterr().err


def test_bad_input_is_one_line_exit_2(tiny, tmp_path, capsys, monkeypatch) -> None:
    _, checkpoint, val = tiny
    other = ConvMixerConfig(dim=8, depth=2, kernel_size=3, patch_size=4, num_classes=7).build()
    torch.save(convert(other.state_dict(), "modular", "timm"), tmp_path / "other.pth")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "example.txt").write_text("example text: pickle reads its first byte as an opcode")
    diverged = {key: value.clone() for key, value in convert(tiny[0].state_dict(), "modular", "timm").items()}
    diverged["blocks.0.0.fn.0.weight"][0] = float("nan")
    torch.save(diverged, tmp_path / "diverged.pth")
    (val / "extra").mkdir()
    cases = [
        (["--model", "nope"], "model 'nope' is not registered"),
        (["--checkpoint", str(tmp_path / "missing.pth")], "is not a file"),
        (["--checkpoint", str(tmp_path / "notes.txt")], "cannot be loaded with weights_only=True"),
        (["--checkpoint", str(tmp_path / "example.txt")], "is not a torch checkpoint"),
        (
            ["--checkpoint", str(tmp_path / "diverged.pth")],
            "holds non-finite weights (9 NaN or inf values in blocks.0.depthwise.conv.weight",
        ),
        (["--checkpoint", str(tmp_path / "other.pth")], "holds a ConvMixer-8/2"),
        (["--data", str(tmp_path / "nowhere")], "is not a folder"),
        (["--batch-size", "0"], "--batch-size=0 is not accepted"),
        ([], "Found no valid file for the classes extra"),  # an empty class folder, named
    ]
    base = {"--model": "tiny", "--checkpoint": str(checkpoint), "--data": str(val)}
    for change, message in cases:
        argv = {**base, **dict(zip(change[::2], change[1::2], strict=True))}
        assert cli([*(part for item in argv.items() for part in item), "--workers", "0"]) == 2, message
        err = capsys.readouterr().err
        assert err.startswith(f"{PROG}: error: ") and message in err and err.count("\n") == 1, err
    Image.new("RGB", (32, 32)).save(val / "extra" / "0.JPEG")
    assert cli(["--model", "tiny", "--checkpoint", str(checkpoint), "--data", str(val)]) == 2
    assert "has 8 class folders; tiny has 7" in capsys.readouterr().err
