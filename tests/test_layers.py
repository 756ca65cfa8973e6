"""The layering the architecture relies on (ablations/__init__.py and convmixer/__init__.py state it): every import
of every module, at the top or inside a function, goes to a layer below its own, no modules import each other in a
circle (a layer's rule lets its modules import one another), and each package docstring's module map lists exactly
the modules on disk."""

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("convmixer", "ablations", "analysis", "benchmarks")

# What each module may import of this repository's packages, by prefix; the first matching rule applies.
# convmixer/'s parts (its module map): plumbing imports only the torch-free arguments.py, the model only itself
# and plumbing, the tools anything of convmixer/.
PLUMBING = ("convmixer.runtime", "convmixer.arguments")
MODEL = tuple(
    f"convmixer.{name}"
    for name in ("tweet", "config", "model", "depthwise", "depthwise_kernels", "registry", "transforms", "counting")
)
# The one import circle allowed: naming a model needs no torch, so ConvMixerConfig.build() imports the model it
# builds inside the function, and the model imports its config.
CIRCLE_EXCEPTIONS = {("convmixer.config", "convmixer.model")}
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("convmixer.runtime", ("convmixer.arguments",)),
    ("convmixer.arguments", ()),
    *((name, MODEL + PLUMBING) for name in MODEL),
    ("convmixer", ("convmixer",)),
    ("ablations.atomic", ()),
    ("ablations.design", ("ablations.config",)),
    ("ablations.config", ("convmixer",)),
    ("ablations.store", ("ablations.store", "ablations.design", "ablations.config", "ablations.atomic", "convmixer")),
    ("ablations.data", ("ablations.data", "ablations.config", "ablations.atomic", "convmixer")),
    (
        "ablations.engine",
        ("ablations.engine", "ablations.data", "ablations.store", "ablations.config", "ablations.atomic", "convmixer"),
    ),  # fmt: skip
    (
        "ablations.sweep.execute",
        ("ablations.engine", "ablations.sweep.progress", "ablations.store", "ablations.config", "convmixer"),
    ),  # fmt: skip
    # The plan loads each dataset once, as a run would, to check it and record it: sweep/'s one arrow into data/.
    (
        "ablations.sweep.plan",
        ("ablations.sweep.progress", "ablations.sweep.execute", "ablations.data", "ablations.design")
        + ("ablations.store", "ablations.config", "convmixer.arguments"),  # the counter's words for a patch's pixels
    ),
    # The launchers that start a run's processes hand each its place, engine/distributed.py's Ranks.
    *(
        (
            f"ablations.sweep.{launcher}",
            ("ablations.sweep", "ablations.store", "ablations.config", "ablations.atomic")
            + ("ablations.engine.distributed", "convmixer"),
        )
        for launcher in ("local", "slurm", "inprocess")
    ),  # fmt: skip
    ("ablations.sweep.presets", ("ablations.config", "ablations.data", "convmixer.registry")),
    ("ablations.sweep.grid", ("ablations.design", "ablations.config", "ablations.sweep.presets")),
    ("ablations.sweep.study", ("ablations.config", "ablations.sweep.grid", "ablations.sweep.presets")),
    ("ablations.sweep", ("ablations.sweep", "ablations.store", "ablations.config", "ablations.atomic", "convmixer")),
    ("ablations.run", ("ablations", "convmixer", "analysis.sequential")),  # seeds auto: the report's rule
    ("ablations.train", ("ablations", "convmixer")),
    ("ablations", ()),  # the package's own __init__
    (
        "analysis",
        (
            "analysis",
            "ablations.design",
            "ablations.config",
            "ablations.store",
            "ablations.atomic",
            "ablations.data",
            "convmixer",
        ),
    ),
    (
        "benchmarks",
        (
            "benchmarks",
            "ablations.config",
            "ablations.store",
            "ablations.atomic",
            "ablations.data",
            "ablations.engine",
            "ablations.sweep",
            "analysis",
            "convmixer",
        ),
    ),  # fmt: skip
]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


def imported(path: Path, name: str) -> set[str]:
    """The repository modules `path` imports anywhere in its body (relative imports made absolute)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {target for target in found if target.split(".")[0] in PACKAGES}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(modules()))
def test_a_module_imports_only_the_layers_below_it(name):
    allowed = next(rule for prefix, rule in RULES if within(name, prefix))
    # `from ablations import atomic` also names the bare package: the module it brings in is what counts.
    targets = imported(modules()[name], name) - set(PACKAGES)
    wrong = sorted(t for t in targets if not any(within(t, ok) for ok in allowed))
    assert wrong == [], f"{name} imports {wrong}, above its layer (rules: ablations/__init__.py)"


def import_graph() -> dict[str, set[str]]:
    """Each module -> the repository modules it imports anywhere, CIRCLE_EXCEPTIONS left out."""
    found = modules()
    graph = {name: {t for t in imported(path, name) if t in found and t != name} for name, path in found.items()}
    for importer, target in CIRCLE_EXCEPTIONS:
        graph[importer].discard(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = stack[stack.index(node) :]
                    del stack[stack.index(node) :]
                    if len(component) > 1:
                        found.append(sorted(component))
            elif target not in index:
                index[target] = low[target] = len(index)
                stack.append(target)
                work.append((target, iter(sorted(graph[target]))))
            elif target in stack:
                low[node] = min(low[node], index[target])
    return found


def test_no_modules_import_each_other_in_a_circle():
    assert circles(import_graph()) == []


@pytest.mark.slow
def test_the_circle_test_finds_a_circle_and_sees_an_import_inside_a_function():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}) == [["a", "b", "c"]]
    assert "convmixer.model" in imported(modules()["convmixer.config"], "convmixer.config")  # in build() too
    graph = import_graph()
    graph["convmixer.config"].add("convmixer.model")  # the listed exception, put back: a circle
    [circle] = circles(graph)  # config -> model -> config, and -> depthwise -> config (its IMPLS)
    assert {"convmixer.config", "convmixer.model"} <= set(circle)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["ablations.run", "ablations.train"])
def test_nothing_imports_a_command_line_module(command):
    importers = [name for name, path in modules().items() if command in imported(path, name)]
    assert importers == []


@pytest.mark.parametrize("package", ["ablations", "convmixer"])
def test_the_module_map_lists_every_module_of_the_package(package):
    docstring = ast.get_docstring(ast.parse((REPO / package / "__init__.py").read_text()))
    listed = re.findall(r"^ {4,}(\w+\.py)\b", docstring, re.MULTILINE)
    on_disk = [path.name for path in (REPO / package).rglob("*.py") if path.name != "__init__.py"]
    assert sorted(listed) == sorted(on_disk)  # two modules of one name (train.py) are listed twice
