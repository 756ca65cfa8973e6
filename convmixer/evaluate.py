"""Top-1 and top-5 accuracy of a ConvMixer checkpoint on an ImageNet-style validation folder.

`python -m convmixer.evaluate --model convmixer_1536_20 --checkpoint PATH --data IMAGENET_VAL` loads the weights
(timm's layout or the authors', convmixer.interop) into the registered model and scores it with timm's evaluation
transform for these models, so that the numbers compare with the published ones (docs/models.md says how).
Without --model the shape is read from the checkpoint's tensors: a toolkit run's checkpoint.pt is scored so too.
"""

import argparse
import json
import pickle
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from convmixer.arguments import OneLineParser, check_integer, run_cli
from convmixer.config import ACTIVATION_NAMES
from convmixer.registry import CONVMIXER_EVAL, get_config, list_models, registered
from convmixer.transforms import EvalTransform

if TYPE_CHECKING:  # torch and torchvision are imported where they run: --help and a bad flag answer without them
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from convmixer.model import ConvMixer

PROG = "python -m convmixer.evaluate"


def validation_images(folder: Path, transform: "transforms.Compose") -> "datasets.ImageFolder":
    """The images of `folder` (one folder per class, named by WordNet id for ImageNet: sorted, they give the class
    indices the checkpoints were trained with); ValueError in one line when it is not such a folder."""
    from torchvision import datasets

    if not folder.is_dir():
        raise ValueError(f"--data {folder} is not a folder: expected ImageNet's val/ with one folder per class")
    try:
        return datasets.ImageFolder(folder, transform=transform)
    except (FileNotFoundError, OSError) as error:  # no class folders, or no image in them
        raise ValueError(f"--data {folder}: {str(error).splitlines()[0]} (expected one folder per class)") from None


def accuracy(
    model: "ConvMixer", loader: "DataLoader", device: "torch.device", progress: bool = True
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (fractions) of `model` over every batch of `loader`."""
    import torch
    from tqdm import tqdm

    model.eval().to(device)
    top1 = top5 = seen = 0
    for images, labels in tqdm(loader, desc="evaluating", unit="batch", disable=not progress, file=sys.stderr):
        with torch.no_grad():
            logits = model(images.to(device))
        best = logits.topk(min(5, logits.shape[1]), dim=1).indices.cpu()
        hits = best == labels[:, None]
        top1 += int(hits[:, 0].sum())
        top5 += int(hits.any(dim=1).sum())
        seen += len(labels)
    return top1 / seen, top5 / seen


def load_model(checkpoint: Path, name: str | None = None, activation: str | None = None) -> "ConvMixer":
    """The model of `checkpoint` with its weights: registered model `name` (ValueError when the checkpoint holds
    another), or without it the shape its tensors give, with the knobs the weights do not show (activation,
    residual) from the config.json of a toolkit run beside it, else `activation` or the paper's. Every failure,
    non-finite weights included (a diverged run: nothing to score), is a ValueError in one line."""
    from convmixer.interop import load_checkpoint

    if not checkpoint.is_file():
        raise ValueError(f"--checkpoint {checkpoint} is not a file")
    recorded = run_config(checkpoint) if name is None else {"activation": get_config(name).activation}
    knobs = {key: recorded[key] for key in ("activation", "residual") if key in recorded}
    if activation is not None:
        knobs["activation"] = activation
    try:
        model = load_checkpoint(checkpoint, **knobs)
    except pickle.UnpicklingError:  # not a torch file, or objects that weights_only=True refuses to build
        raise ValueError(
            f"--checkpoint {checkpoint} cannot be loaded with weights_only=True: not a torch checkpoint, or it holds "
            "Python objects beyond tensors (load it by hand if you trust it, and save its state_dict)"
        ) from None
    except (KeyError, IndexError, TypeError, UnicodeDecodeError):  # pickle reading a text file's bytes as opcodes
        raise ValueError(f"--checkpoint {checkpoint} is not a torch checkpoint (.pth, .pth.tar, .pt)") from None
    except (ValueError, RuntimeError, EOFError, OSError) as error:  # a damaged zip; keys or shapes of no ConvMixer
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"--checkpoint {checkpoint} cannot be loaded: {detail}") from None
    if name is not None and model.config != get_config(name):
        raise ValueError(f"--checkpoint {checkpoint} holds a {model.config.name} ({model.config}), not {name}")
    check_finite(model, checkpoint)
    return model


def run_config(checkpoint: Path) -> dict:
    """The config.json of the toolkit run whose folder holds `checkpoint` (read by key: convmixer does not import
    ablations), or {} when there is none."""
    try:
        recorded = json.loads((checkpoint.parent / "config.json").read_text())
    except (OSError, ValueError):  # no run folder
        return {}
    return recorded if isinstance(recorded, dict) else {}


def check_finite(model: "ConvMixer", checkpoint: Path) -> None:
    """ValueError naming the first tensor holding NaN or inf: such a model's scores mean nothing."""
    import torch

    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ValueError(
                f"--checkpoint {checkpoint} holds non-finite weights ({bad} NaN or inf values in {key}, the first "
                "such tensor): a diverged run, nothing to score"
            )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", help=f"registered model: {', '.join(list_models())} (default: the checkpoint's tensors' shape)"
    )
    parser.add_argument(
        "--checkpoint", required=True, type=Path, help="timm's or locuslab's .pth/.pth.tar, or a run's checkpoint.pt"
    )
    parser.add_argument("--activation", choices=ACTIVATION_NAMES, help="without --model: default the run's, else gelu")
    parser.add_argument("--image-size", type=int, help="without --model: default the run's image_size, else 224")
    parser.add_argument("--data", required=True, type=Path, help="the validation folder: one folder per class")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: the usable cores)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1 ...")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from torch.utils.data import DataLoader

    from convmixer.runtime import parse_device, usable_cores

    check_integer("--batch-size", args.batch_size, minimum=1)
    workers = usable_cores() if args.workers is None else args.workers
    check_integer("--workers", workers, minimum=0)
    if args.model is not None:
        registered(args.model)  # first: a bad --model is named before the checkpoint is read
    model = load_model(args.checkpoint, args.model, args.activation)
    device = parse_device(args.device)
    transform = eval_transform(args, model)
    images = validation_images(args.data, transform.build())
    name = args.model or model.config.name
    if len(images.classes) != model.config.num_classes:
        raise ValueError(
            f"--data {args.data} has {len(images.classes)} class folders; {name} has {model.config.num_classes}"
        )
    loader = DataLoader(images, batch_size=args.batch_size, num_workers=workers)
    top1, top5 = accuracy(model, loader, device, progress=not args.no_progress)
    print(
        f"{name}: top-1 {100 * top1:.2f}%, top-5 {100 * top5:.2f}% on {len(images)} images of {args.data} "
        f"(resize {transform.resize_size} {transform.settings.interpolation}, centre crop {transform.image_size}, "
        f"crop_pct {transform.settings.crop_pct})"
    )
    return 0


def eval_transform(args: argparse.Namespace, model: "ConvMixer") -> EvalTransform:
    """timm's transform of the registered model, or of ConvMixer's eval settings at --image-size (else the run's
    image_size from its config.json, else 224)."""
    if args.model is not None:
        return registered(args.model).eval_transform()
    size = run_config(args.checkpoint).get("image_size", 224) if args.image_size is None else args.image_size
    if size == 0 and args.image_size is None:  # the run's data at its own size: a folder's images have none
        recorded = args.checkpoint.parent / "config.json"
        raise ValueError(f"{recorded} has image_size=0 (the data's own size): give --image-size")
    check_integer("--image-size", size, minimum=model.config.patch_size)
    return EvalTransform(size, CONVMIXER_EVAL)


def cli(argv: list[str] | None = None) -> int:
    return run_cli(main, argv, PROG, (ValueError,))


if __name__ == "__main__":
    sys.exit(cli())
