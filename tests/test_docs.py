"""The developer docs stay true: docs/ARCHITECTURE.md's room listing names every module of the core (as
``name.py`` in its room's entry) and no module that does not exist, every module path the document cites
exists, and every dotted name docs/DEV_CONTRACTS.md cites in a room's entry resolves in the code."""

from __future__ import annotations

import ast
import fnmatch
import importlib
import re
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "infosam_core"
APP = REPO / "infosam_app"
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"
DEV_CONTRACTS = REPO / "docs" / "DEV_CONTRACTS.md"

ENTRY = re.compile(r"^(?P<indent> {2,4})(?P<name>[A-Za-z_][\w]*(?:/|\.py)),?(?:\s+(?P<text>.*))?$")
MODULE_NAME = re.compile(r"(?<![\w/.*<>-])([\w*]+\.py)\b")  # a bare file name (not part of a path)


def code_block_after(markdown: str, heading: str) -> list[str]:
    """The lines of the first fenced block after ``heading``."""
    rest = markdown.split(heading, 1)[1]
    return rest.split("```", 2)[1].splitlines()[1:]


def room_entries(block: list[str], top: str) -> dict[str, str]:
    """The listing's entries by path below ``top`` ("training/", "training/pretraining/", "resources.py"): an
    entry is a line indented 2 (a room) or 4 (inside the room above) spaces whose first word is ``name/`` or
    ``name.py`` (or ``name.py,`` and more names); its text runs on over the more deeply indented lines below."""
    assert block and block[0].strip() == top, f"the listing starts with {top}"
    entries: dict[str, str] = {}
    parents: list[str] = []
    current = None
    for line in block[1:]:
        match = ENTRY.match(line)
        if match:
            depth = len(match["indent"]) // 2 - 1
            parents = parents[:depth]
            current = "".join(parents) + match["name"]
            entries[current] = match["text"] or ""
            if match["name"].endswith("/"):
                parents.append(match["name"])
        elif current is not None and line.strip():
            entries[current] += " " + line.strip()
    return entries


def named_modules(entries: dict[str, str]) -> set[str]:
    """Every module file the entries name, as paths below the listing's top (globs such as ``*_cmd.py`` kept):
    a module entry itself, and the file names in an entry's text, in the entry's folder."""
    named = set()
    for path, text in entries.items():
        folder = path.rpartition("/")[0] + "/" if "/" in path else ""
        if path.endswith(".py"):
            named.add(path)
        named.update(folder + name for name in MODULE_NAME.findall(text))
    return named


def core_listing() -> dict[str, str]:
    return room_entries(code_block_after(ARCHITECTURE.read_text(), "## The core, room by room"), "infosam_core/")


def core_modules() -> list[str]:
    """Every module of the core but the packages' ``__init__.py``, as a path below infosam_core/."""
    return sorted(p.relative_to(CORE).as_posix() for p in CORE.rglob("*.py") if p.name != "__init__.py")


def test_every_core_module_is_named_in_its_room():
    named = named_modules(core_listing())
    missing = [m for m in core_modules() if not any(fnmatch.fnmatchcase(m, pattern) for pattern in named)]
    assert not missing, f"docs/ARCHITECTURE.md's room listing does not name: {missing}"


def test_every_package_of_the_core_has_a_room():
    entries = core_listing()
    packages = sorted(p.parent.relative_to(CORE).as_posix() + "/" for p in CORE.rglob("__init__.py"))
    missing = [p for p in packages if p != "./" and p not in entries]
    assert not missing, f"docs/ARCHITECTURE.md's room listing has no entry for: {missing}"


def test_the_room_listings_name_only_modules_that_exist():
    markdown = ARCHITECTURE.read_text()
    listings = [
        (CORE, room_entries(code_block_after(markdown, "## The core, room by room"), "infosam_core/")),
        (APP, room_entries(code_block_after(markdown, "## The app"), "infosam_app/")),
    ]
    stale = []
    for root, entries in listings:
        modules = [p.relative_to(root).as_posix() for p in root.rglob("*.py")]
        stale += [f"{root.name}/{path}" for path in entries if not (root / path).exists()]
        stale += [
            f"{root.name}/{pattern}"
            for pattern in named_modules(entries)
            if not any(fnmatch.fnmatchcase(m, pattern) for m in modules)
        ]
    assert not stale, f"docs/ARCHITECTURE.md names modules that do not exist: {sorted(stale)}"


def test_module_paths_cited_in_the_architecture_exist():
    """Every backticked path to a .py file (``models/hq_decoder.py``, ``tests/test_import_graph.py``) is a file
    of the core, the app or the repository (``cli/<name>_cmd.py``-style templates excepted)."""
    cited = set(re.findall(r"`([\w/]+/[\w]+\.py)`", ARCHITECTURE.read_text()))
    assert cited, "the pattern finds the document's paths"
    missing = [p for p in sorted(cited) if not any((root / p).is_file() for root in (CORE, APP, REPO))]
    assert not missing, f"docs/ARCHITECTURE.md cites files that do not exist: {missing}"


# --- DEV_CONTRACTS.md ------------------------------------------------------------------------------------------

FILE_SUFFIXES = {"py", "json", "csv", "md", "pt", "pth", "png", "tif", "safetensors", "toml"}
ROOM_BULLET = re.compile(r"^- `(?P<room>[\w/]+?)(?:/|\.py)`")
DOTTED = re.compile(r"`(?P<name>[A-Za-z_][\w/]*(?:\.[A-Za-z_]\w*)+)")


def contract_bullets() -> list[tuple[str, str]]:
    """(room, text) of each bullet of DEV_CONTRACTS.md that starts with a core room or module path."""
    bullets: list[tuple[str, str]] = []
    for line in DEV_CONTRACTS.read_text().splitlines():
        match = ROOM_BULLET.match(line)
        if match:
            bullets.append((match["room"], line))
        elif line.startswith("  ") and bullets:
            bullets[-1] = (bullets[-1][0], bullets[-1][1] + " " + line.strip())
        elif line.startswith("- "):
            bullets.append(("", line))  # not a room's bullet: skipped
    return [(room, text) for room, text in bullets if room]


def _has_attribute(owner: object, name: str) -> bool:
    """``owner.name`` exists: an attribute, a dataclass field, a class annotation or an attribute set on
    ``self`` in the class's source."""
    if hasattr(owner, name) or name in getattr(owner, "__dataclass_fields__", {}):
        return True
    if not isinstance(owner, type):
        return False
    for cls in owner.__mro__:
        if name in getattr(cls, "__annotations__", {}):
            return True
        module = importlib.import_module(cls.__module__)
        if not getattr(module, "__file__", None) or not module.__file__.startswith(str(REPO)):
            continue
        for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
            if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
                for sub in ast.walk(node):
                    if (
                        isinstance(sub, ast.Attribute)
                        and sub.attr == name
                        and isinstance(sub.ctx, ast.Store)
                        and isinstance(sub.value, ast.Name)
                        and sub.value.id == "self"
                    ):
                        return True
    return False


def _import_if_exists(name: str) -> ModuleType | None:
    """The module ``name``, or None when there is no such module (a module that fails to import fails here)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and name.startswith(error.name):
            return None
        raise


def resolve(room: str, dotted: str) -> bool | None:
    """Whether ``dotted`` (``registry.load_sam``, ``Predictor.fork``, ``training.trainer.EpochCallback``,
    ``models/interactive_decoder.InteractiveDecoder``) resolves from the bullet's room; None when its first name
    is not something of the core (an option's value, a data file's name). A ``.py`` file must exist."""
    if dotted.rsplit(".", 1)[1] in FILE_SUFFIXES:
        return (CORE / dotted).is_file() if dotted.endswith(".py") else None
    head, *rest = dotted.replace("/", ".").split(".")
    package = "infosam_core." + room.replace("/", ".")
    # a module of the room, a room of the core, or a name defined in the bullet's module or room
    owner: object | None = _import_if_exists(f"{package}.{head}") or _import_if_exists(f"infosam_core.{head}")
    if owner is None:
        owner = getattr(_import_if_exists(package), head, None)
    if owner is None:
        return None
    for part in rest:
        if isinstance(owner, ModuleType) and not hasattr(owner, part):
            owner = _import_if_exists(f"{owner.__name__}.{part}")
            if owner is None:
                return False
            continue
        if not _has_attribute(owner, part):
            return False
        owner = getattr(owner, part, None)
        if owner is None:  # a field without a class-level value: nothing further to follow
            return True
    return True


def test_dotted_names_in_dev_contracts_resolve():
    checked, unresolved = 0, []
    for room, text in contract_bullets():
        for match in DOTTED.finditer(text):
            found = resolve(room, match["name"])
            checked += found is not None
            if found is False:
                unresolved.append(f"{room}: {match['name']}")
    assert checked >= 20, f"only {checked} names checked: the bullets' pattern no longer fits the document"
    assert not unresolved, f"docs/DEV_CONTRACTS.md names what the code does not have: {unresolved}"


@pytest.mark.parametrize(
    ("room", "dotted", "expected"),
    [
        ("models", "registry.load_sam", True),
        ("models", "registry.no_such_function", False),
        ("inference/predictor", "Predictor.fork", True),
        ("training/results", "TrainResult.best_val_miou", True),
        ("training/results", "TrainResult.no_such_field", False),
        ("training", "training.trainer.EpochCallback", True),
        ("data/prompt_sampling", "OUT.last", None),
        ("training", "results.csv", None),
        ("distill", "training/distributed.py", True),
        ("distill", "training/no_such_module.py", False),
    ],
)
def test_the_resolver_tells_names_apart(room, dotted, expected):
    assert resolve(room, dotted) is expected
