"""`python -m ablations.data.make_shards TREE OUT` writes the shards of an ImageFolder tree (train/ and val/ or
test/) in the WebDataset layout that ablations.data.shards reads: a dataset too big to hold streams from them.

The writer applies the tree's own rules (ablations.data.tree), so the shards hold the images a run of the tree
would train on, with the same classes. Torch is imported once the arguments are checked: --help answers at once.
"""

import io
import sys
import tarfile
from pathlib import Path, PurePosixPath

from convmixer.arguments import OneLineParser, check_integer, run_cli

PROG = "python -m ablations.data.make_shards"
IMAGES_PER_SHARD = 1000  # about 110 MB of ImageNet JPEGs, WebDataset's usual size


def write_shards(tree: Path, out: Path, per_shard: int = IMAGES_PER_SHARD) -> list[Path]:
    """The shards of the ImageFolder tree `tree` (tree/{train,val|test}/<class>/<image>) in `out`, with
    classes.txt; keys are `<class>/<file stem>`, in sorted order. Returns the shards written."""
    # Here, not at the top: the reader's names and the tree's rules bring torch, which --help does without.
    from ablations.data.shards import CLASSES_FILE, LABEL_EXT
    from ablations.data.tree import ImageTree

    source = ImageTree(tree)
    out.mkdir(parents=True, exist_ok=True)
    (out / CLASSES_FILE).write_text("".join(f"{name}\n" for name in source.classes))
    written = []
    for split, prefix in (("train", "train"), ("test", "val")):
        files = source.splits[split]
        for start in range(0, len(files.paths), per_shard):
            path = out / f"{prefix}-{start // per_shard:06d}.tar"
            with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
                chunk = slice(start, start + per_shard)
                for name, label in zip(files.paths[chunk], files.labels[chunk].tolist(), strict=True):
                    pure = PurePosixPath(name)
                    key = f"{source.classes[label]}/{pure.name.partition('.')[0]}"
                    add_member(tar, f"{key}.{pure.name.partition('.')[2]}", bytes(source.read(name)))
                    add_member(tar, f"{key}.{LABEL_EXT}", str(label).encode())
            written.append(path)
    return written


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("tree", type=Path, help="an ImageFolder tree: train/ and val/ (or test/), one folder per class")
    parser.add_argument("out", type=Path, help="the folder to write train-NNNNNN.tar, val-NNNNNN.tar, classes.txt to")
    parser.add_argument("--per-shard", type=int, default=IMAGES_PER_SHARD, help="images per shard (default 1000)")
    args = parser.parse_args(argv)
    check_integer("--per-shard", args.per_shard, minimum=1)
    from ablations.data.shards import CLASSES_FILE, SHARD  # torch: once the arguments are checked

    if args.out.is_dir() and any(SHARD.match(entry.name) for entry in args.out.iterdir()):
        raise ValueError(f"{args.out} holds shards already; write into an empty folder")
    written = write_shards(args.tree, args.out, args.per_shard)
    print(f"wrote {len(written)} shards and {CLASSES_FILE} to {args.out}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_cli(main, argv, PROG, (ValueError,))  # DataError is a ValueError


if __name__ == "__main__":
    sys.exit(cli())
