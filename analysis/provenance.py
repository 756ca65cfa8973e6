"""What ran: the setup behind a report's numbers, in words, from the runs' config and metrics and the sweeps' design.

A table or figure that is cited alone must say what was trained (data, model, budget, recipe), how it was chosen
(preset or study, seeds) and where and when it was measured (hardware, toolkit commit, date). Everything here is
read from the stored runs; a fact an older run did not record is said to be "not recorded", never guessed.
"""

import math
import re

import pandas as pd

from ablations.config import NATIVE_IMAGE_SIZE
from ablations.data import dataset_label
from ablations.design import Design
from analysis.load import done
from convmixer.arguments import patch_grid
from convmixer.config import ConvMixerConfig

NOT_RECORDED = "not recorded"


def values_text(runs: pd.DataFrame, key: str, fmt: str = "{}") -> str:
    """The value of `key` over the runs: "5", or "{3, 5, 7}" when the runs differ in it."""
    if key not in runs:
        return NOT_RECORDED
    known = runs[key].dropna()
    values = sorted(known.unique(), key=lambda value: (str(type(value)), value))
    if not values:
        return NOT_RECORDED
    text = [fmt.format(value) for value in values]
    return text[0] if len(text) == 1 else "{" + ", ".join(text) + "}"


def data_text(runs: pd.DataFrame) -> str:
    """The data the runs were measured on, with their subsets: "CIFAR-10 (JPEG q75 copy), subset: 2000 train"."""
    columns = ["dataset", "data_root", "train_subset", "test_subset"]
    return "; ".join(sorted({_data_text(config) for config in runs[columns].to_dict("records")}))


def _data_text(config: dict) -> str:
    name = dataset_label(config["dataset"], config["data_root"])
    subsets = [f"{config[key]} {key.removesuffix('_subset')}" for key in ("train_subset", "test_subset") if config[key]]
    return f"{name}, subset: {' / '.join(subsets)} images" if subsets else name


def model_names(runs: pd.DataFrame) -> str:
    """ "ConvMixer-256/8", or "ConvMixer-48/4 and ConvMixer-64/1" when the runs differ in width or depth."""
    return " and ".join(sorted({ConvMixerConfig(**row).name for row in runs[["dim", "depth"]].to_dict("records")}))


def model_text(runs: pd.DataFrame) -> str:
    return (
        f"{model_names(runs)} (width/depth), kernel size k = {values_text(runs, 'kernel_size')}, "
        f"patch size p = {values_text(runs, 'patch_size')}, residual {values_text(runs, 'residual')}, "
        f"norm {values_text(runs, 'norm')}, activation {values_text(runs, 'activation')}"
    )


def patches_text(runs: pd.DataFrame) -> str:
    """The pixels a patch size that does not divide the images drops, in the counter's words; "" when none does.
    An ImageFolder run at its native size (image_size 0) recorded no size in its config, so it is not checked."""
    sides = runs["image_size"].where(runs["image_size"] > 0, runs["dataset"].map(NATIVE_IMAGE_SIZE))
    pairs = {(int(patch), int(side)) for patch, side in zip(runs["patch_size"], sides, strict=True) if side == side}
    return "; ".join(f"patch_size={p}: {patch_grid(side, p)}" for p, side in sorted(pairs) if side % p)


def training_text(runs: pd.DataFrame) -> str:
    schedule = values_text(runs, "schedule")
    cosine = (runs["schedule"] == "cosine").any()
    warmup = f" with {values_text(runs, 'warmup_epochs')} warm-up epochs" if cosine else ""
    return (
        f"{values_text(runs, 'epochs')} epochs, batch {values_text(runs, 'batch_size')}, AdamW with peak lr "
        f"{values_text(runs, 'lr', '{:g}')} on a {schedule} schedule{warmup}, weight decay "
        f"{values_text(runs, 'weight_decay', '{:g}')}, label smoothing {values_text(runs, 'label_smoothing', '{:g}')}, "
        f"gradient clipping {values_text(runs, 'clip_norm', '{:g}')} (0: off), precision {precision_text(runs)}"
    )


def precision_text(runs: pd.DataFrame) -> str:
    """What ran, as the finished runs recorded it: "bf16 (precision auto)", "fp32"; a run that did not record it
    (made before precision_used existed) is said to be so, not guessed from the device."""
    asked = values_text(runs, "precision")
    finished = done(runs)
    used = values_text(finished, "precision_used")
    if used == NOT_RECORDED:
        return f"{asked} (what ran: {NOT_RECORDED})"
    some = " (some runs: not recorded)" if finished["precision_used"].isna().any() else ""
    return (used if used == asked else f"{used} (precision {asked})") + some


def figure_source(runs: pd.DataFrame) -> str:
    """The line that names what a figure shows, so that it can be cited alone: the model(s) and the data."""
    return f"{model_names(runs)} on {data_text(runs)}"


def _augmentation(config: dict) -> str:
    parts = []
    if config["scale"] < 1:
        parts.append(f"random-resized crop (min. area {config['scale']:g})")
    if config["hflip"]:
        parts.append("horizontal flip")
    if config["randaug_n"]:
        parts.append(f"RandAugment n={config['randaug_n']}, m={config['randaug_m']}")
    if config["jitter"]:
        parts.append(f"colour jitter {config['jitter']:g}")
    if config["reprob"]:
        parts.append(f"random erasing p={config['reprob']:g}")
    for mix in ("mixup", "cutmix"):
        if config[mix]:
            parts.append(f"{mix} α={config[mix]:g}")
    return ", ".join(parts) or "none"


def augmentation_text(runs: pd.DataFrame) -> str:
    keys = ["scale", "hflip", "randaug_n", "randaug_m", "jitter", "reprob", "mixup", "cutmix"]
    return "; or ".join(sorted({_augmentation(config) for config in runs[keys].to_dict("records")}))


def origin_text(designs: dict[str, Design | None]) -> str:
    """The study or preset each sweep came from."""
    parts = []
    for sweep, design in designs.items():
        if design is None:
            parts.append(f"{sweep}: preset and design {NOT_RECORDED} (made before sweep.json)")
        elif design.study:
            parts.append(f"study {design.study} (preset {design.preset})")
        else:
            parts.append(f"sweep {design.name} (preset {design.preset})")
    return "; ".join(parts)


def seeds_text(runs: pd.DataFrame, keys: list[str]) -> str:
    finished = done(runs)
    seeds = sorted(finished["seed"].unique())
    per_variant = finished.groupby(keys)["seed"].nunique() if keys else pd.Series([len(seeds)])
    low, high = int(per_variant.min()), int(per_variant.max())
    n = str(low) if low == high else f"{low} to {high}"
    return f"{n} per variant (seeds {', '.join(map(str, seeds))})"


def dates_text(runs: pd.DataFrame) -> str:
    if "finished_at" not in runs or runs["finished_at"].isna().all():
        return NOT_RECORDED
    days = sorted(runs["finished_at"].dropna().str[:10].unique())
    unrecorded = " (some runs: not recorded)" if runs["finished_at"].isna().any() else ""
    return (days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}") + unrecorded


def hardware_text(runs: pd.DataFrame) -> str:
    """The machines that measured the runs, e.g. "Intel(R) Xeon(R) Processor (2 cores) (device cpu)", with the
    processes of a run that ran on several (rank 0's device named): "(device cuda:0, 2 processes)"."""
    finished = done(runs)
    pairs = finished[["device"]].assign(
        hardware=finished["hardware"] if "hardware" in finished else math.nan,
        driver=finished["driver"] if "driver" in finished else math.nan,  # GPU runs record their NVIDIA driver
        processes=finished["processes"] if "processes" in finished else math.nan,  # recorded when more than 1
    )
    names = sorted(
        {
            f"{NOT_RECORDED if pd.isna(hw) else hw} (device {device}{'' if pd.isna(drv) else f', driver {drv}'}"
            f"{'' if pd.isna(procs) else f', {int(procs)} processes'})"
            for device, hw, drv, procs in pairs.itertuples(index=False)
        }
    )
    return "; ".join(names) or NOT_RECORDED


def throughput_label(runs: pd.DataFrame) -> str:
    """A short line for a throughput axis: "measured on Intel Xeon Processor (2 cores), a shared CPU: indicative"."""
    finished = done(runs)
    names = finished["hardware"].dropna() if "hardware" in finished else pd.Series(dtype=str)
    hardware = ", ".join(sorted({re.sub(r"\((R|TM)\)", "", name) for name in names})) or f"hardware {NOT_RECORDED}"
    return f"measured on {hardware}" + (", a shared CPU: indicative" if measured_on_cpu(runs) else "")


def measured_on_cpu(runs: pd.DataFrame) -> bool:
    finished = done(runs)
    return bool(finished["device"].astype(str).str.startswith("cpu").any())


def throughput_note(runs: pd.DataFrame) -> str:
    """Where the throughput numbers come from, and how far to trust them."""
    note = f"Training throughput measured on {hardware_text(runs)}"
    if measured_on_cpu(runs):
        return note + ": a CPU shared with other work, so the numbers are indicative only."
    return note + "."


def setup(runs: pd.DataFrame, designs: dict[str, Design | None], keys: list[str]) -> dict[str, str]:
    """The facts of the setup, in the order a reader needs them: name -> text ("Patches" only where pixels drop)."""
    patches = patches_text(runs)
    return {
        "Dataset": data_text(runs),
        "Model": model_text(runs),
        **({"Patches": patches} if patches else {}),
        "Training": training_text(runs),
        "Augmentation": augmentation_text(runs),
        "Design": origin_text(designs),
        "Seeds": seeds_text(runs, keys),
        "Hardware": hardware_text(runs),
        "Software": f"toolkit commit {values_text(runs, 'toolkit_commit')}, torch {values_text(runs, 'torch_version')}",
        "Date": dates_text(runs),
    }


def caption(runs: pd.DataFrame, designs: dict[str, Design | None], keys: list[str]) -> str:
    """One paragraph naming the whole setup, for a table or figure caption."""
    facts = setup(runs, designs, keys)
    return (
        f"Test accuracy of {facts['Model']} on {facts['Dataset']}. Training: {facts['Training']}. "
        f"Augmentation: {facts['Augmentation']}. Design: {facts['Design']}; seeds: {facts['Seeds']}. "
        f"Measured on {facts['Hardware']} with {facts['Software']}, {facts['Date']}."
    )
