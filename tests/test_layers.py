"""The package's imports form layers: each module imports only its own package and the layers below it.

The graph is read from the source by `mlic.deps` (`ast`, nothing imported, function-level imports included), so the
test takes a second and needs no torch. A unit is a top-level module (`mlic.layout`) or a subpackage with everything
under it (`mlic.data`, `mlic.data.competitions` included). A unit may import its own modules and the units of any
lower layer; never a unit of a higher layer, nor another unit of its own layer. No two modules import each other,
directly or around a longer loop.

| layer | units | what they are |
|---|---|---|
| 1a | `mlic`, hashing, studies | the package; content digests; Optuna storage (they import nothing of mlic) |
| 1b | errors, io, parallel, progress | errors with their fix, atomic writes, bounded thread maps, progress bars |
| 1c | registry, deps | named registries; the import graph (pure `ast`) |
| 1d | choices, search_space, schema | registry names of params strings; the `tune.space` language; the validator |
| 1e | config | params.yaml as frozen dataclasses |
| 2a | metrics, layout | scores; every stage output on disk (file names, save and load) |
| 2b | thresholds, run | applying thresholds (pure numpy); a finished run opened from its folder |
| 3 | data, features | competitions, images, labels, folds, statistics; HOG and region proposals |
| 4 | sources | the registry of batch sources (image cache, HOG, boxes) and their normalisers |
| 5a | tasks | the task contract, the default task, losses |
| 5b | models | architectures, their building blocks (backbones, regions, beam search) and registry |
| 6 | loop | what train and predict share: batches, runtime, test-time views, a trained fold reloaded |
| 7 | train, predict | one fold's training (and a teacher handed to its task); prediction, blending, export |
| 8a | pipeline | dvc.yaml's explicit stages, generated from the params and the import graph |
| 8b | report, experiments | the run report; tuning studies (a trial's dvc.yaml is generated for its params) |
| 9a | stages | one module per DVC stage |
| 9b | cli, tools | the `mlic` command and its tools |

A new top-level module or subpackage fails `test_every_module_has_a_layer` until it is placed in `LAYERS`.
"""

from collections import defaultdict

from conftest import REPO

from mlic import deps

ROOT = REPO / "src"


def qualified(name: str) -> str:
    """`layout` -> `mlic.layout`; `mlic` is the package itself."""
    return name if name == "mlic" else f"mlic.{name}"


LAYERS: tuple[tuple[str, frozenset[str]], ...] = tuple(
    (name, frozenset(qualified(u) for u in units.split()))
    for name, units in (
        ("1a", "mlic hashing studies"),
        ("1b", "errors io parallel progress"),
        ("1c", "registry deps"),
        ("1d", "choices search_space schema"),
        ("1e", "config"),
        ("2a", "metrics layout"),
        ("2b", "thresholds run"),
        ("3", "data features"),
        ("4", "sources"),
        ("5a", "tasks"),
        ("5b", "models"),
        ("6", "loop"),
        ("7", "train predict"),
        ("8a", "pipeline"),
        ("8b", "report experiments"),
        ("9a", "stages"),
        ("9b", "cli tools"),
    )
)

KD_WSD_CLOSURE_LIMIT = 20  # the baseline's closure is 14 modules: a distilled student must not pull in training


def all_modules() -> list[str]:
    """Every module under src/mlic, packages by their `__init__`'s name."""
    names = []
    for path in sorted((ROOT / "mlic").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def unit(module: str) -> str:
    """The unit a module belongs to: `mlic.x` for a top-level module or anything in subpackage `mlic.x`."""
    return ".".join(module.split(".")[:2])


def layer_of() -> dict[str, int]:
    """Unit -> index of its layer in `LAYERS`."""
    return {u: index for index, (_, units) in enumerate(LAYERS) for u in units}


def ancestors(module: str) -> set[str]:
    """The packages above a module (and the module itself): Python imports them before it, whatever it imports."""
    parts = module.split(".")
    return {".".join(parts[: i + 1]) for i in range(len(parts))}


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports, with the packages above them.

    A module's own packages are left out too: `deps` lists them because Python runs them first, but that is no
    import the module chose, and a package's `__init__` importing its modules (to register them) is no cycle.
    """
    graph = {}
    for module in all_modules():
        graph[module] = deps.direct_imports(module, ROOT) - ancestors(module)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path `[a, b, ..., a]`, or None (iterative depth-first search)."""
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the current path, 2 done
    for start in sorted(graph):
        if state[start]:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state[nxt] == 1:
                return path[path.index(nxt) :] + [nxt]
            elif state[nxt] == 0:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_every_module_has_a_layer():
    layers = layer_of()
    unplaced = sorted({unit(m) for m in all_modules()} - set(layers))
    assert not unplaced, f"place these in tests/test_layers.py LAYERS (and its docstring's table): {unplaced}"


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Each import into a higher layer, or into another unit of the same layer: `a (layer x) -> b (layer y): up`."""
    layers = layer_of()
    names = [name for name, _ in LAYERS]
    bad = []
    for module, imported in sorted(graph.items()):
        own = layers.get(unit(module))
        # a package the module reaches only on the way to one of its modules is not listed apart
        shown = {t for t in imported if not any(other.startswith(t + ".") for other in imported)}
        for target in sorted(shown):
            theirs = layers.get(unit(target))
            if own is None or theirs is None or unit(target) == unit(module) or theirs < own:
                continue  # an unplaced unit fails test_every_module_has_a_layer
            kind = "up" if theirs > own else "across"
            bad.append(f"{module} (layer {names[own]}) -> {target} (layer {names[theirs]}): {kind}")
    return bad


def test_no_import_upward_or_across_a_layer():
    bad = layer_violations(import_graph())
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_the_checks_catch_a_cycle_an_upward_and_a_sideways_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = {
        "mlic.models.kd_wsd": {"mlic.train", "mlic.train.fold", "mlic.tasks.base"},
        "mlic.train.fold": {"mlic.predict.inference", "mlic.train.engine"},
    }
    assert layer_violations(graph) == [
        "mlic.models.kd_wsd (layer 5b) -> mlic.train.fold (layer 7): up",
        "mlic.train.fold (layer 7) -> mlic.predict.inference (layer 7): across",
    ]


def test_a_distilled_student_imports_no_training_or_prediction_code():
    closure = deps.closure(["mlic.models.kd_wsd"], ROOT)
    assert len(closure) < KD_WSD_CLOSURE_LIMIT, f"{len(closure)} modules: {closure}"
    assert not [m for m in closure if unit(m) in ("mlic.train", "mlic.predict", "mlic.loop", "mlic.layout")]


def test_layer_table_in_the_docstring_matches_layers():
    rows = [
        line.split("|")[1:3] for line in (__doc__ or "").splitlines() if line.startswith("| ") and "---" not in line
    ]
    table = {name.strip(): {qualified(u.strip(" `")) for u in units.split(",")} for name, units in rows[1:]}
    assert table == {name: set(units) for name, units in LAYERS}
