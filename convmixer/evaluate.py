"""Top-1 and top-5 accuracy of a released ConvMixer checkpoint on an ImageNet-style validation folder.

`python -m convmixer.evaluate --model convmixer_1536_20 --checkpoint PATH --data IMAGENET_VAL` loads the weights
(timm's layout or the authors', convmixer.interop) into the registered model and scores it with timm's evaluation
transform for these models, so that the numbers compare with the published ones (docs/models.md says how).
"""

import argparse
import pickle
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from convmixer.arguments import OneLineParser, check_integer, run_cli
from convmixer.registry import get_config, list_models, registered

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


def load_model(name: str, checkpoint: Path) -> "ConvMixer":
    """Registered model `name` with the weights of `checkpoint`; ValueError in one line when they differ."""
    from convmixer.interop import load_checkpoint

    expected = get_config(name)
    if not checkpoint.is_file():
        raise ValueError(f"--checkpoint {checkpoint} is not a file")
    try:
        model = load_checkpoint(checkpoint, expected.activation)
    except pickle.UnpicklingError:  # not a torch file, or objects that weights_only=True refuses to build
        raise ValueError(
            f"--checkpoint {checkpoint} cannot be loaded with weights_only=True: not a torch checkpoint, or it holds "
            "Python objects beyond tensors (load it by hand if you trust it, and save its state_dict)"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:  # a truncated or damaged zip
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"--checkpoint {checkpoint} cannot be loaded: {detail}") from None
    if model.config != expected:
        raise ValueError(f"--checkpoint {checkpoint} holds a {model.config.name} ({model.config}), not {name}")
    return model


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help=f"registered model: {', '.join(list_models())}")
    parser.add_argument("--checkpoint", required=True, type=Path, help="a .pth/.pth.tar in timm's or locuslab's layout")
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
    model = load_model(args.model, args.checkpoint)  # first: it names a bad --model before any data is read
    device = parse_device(args.device)
    transform = registered(args.model).eval_transform()
    images = validation_images(args.data, transform.build())
    if len(images.classes) != model.config.num_classes:
        raise ValueError(
            f"--data {args.data} has {len(images.classes)} class folders; {args.model} has {model.config.num_classes}"
        )
    loader = DataLoader(images, batch_size=args.batch_size, num_workers=workers)
    top1, top5 = accuracy(model, loader, device, progress=not args.no_progress)
    print(
        f"{args.model}: top-1 {100 * top1:.2f}%, top-5 {100 * top5:.2f}% on {len(images)} images of {args.data} "
        f"(resize {transform.resize_size} {transform.settings.interpolation}, centre crop {transform.image_size}, "
        f"crop_pct {transform.settings.crop_pct})"
    )
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_cli(main, argv, PROG, (ValueError,))


if __name__ == "__main__":
    sys.exit(cli())
