"""The package's shape: no import circles, modules and functions of a readable size, a light ``import automl``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, subprocess_env

PACKAGE = REPO / "automl"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, at any depth, but those of an ``if TYPE_CHECKING:`` body
    (annotations only: they never run)."""
    found: list[ast.Import | ast.ImportFrom] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            found.append(child)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            found.extend(_imports(ast.Module(body=child.orelse, type_ignores=[])))
        else:
            found.extend(_imports(child))
    return found


def _dependencies(name: str, path: Path) -> set[str]:
    """The package's modules that ``name`` imports: for ``from X import Y``, ``X.Y`` when that is a module, else
    ``X``; relative imports resolved against the module's package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            parts = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(parts + ([base] if base else []))
        found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names)
    return (found & MODULES.keys()) - {name}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for module in graph[todo.pop()] - seen:
            seen.add(module)
            todo.append(module)
    return seen


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module: modules that each reach the other."""
    reach = {module: _reachable(graph, module) for module in graph}
    components = {tuple(sorted(other for other in reach[module] if module in reach[other]))
                  for module in graph if module in reach[module]}
    return sorted(list(c) for c in components if len(c) > 1)


def test_the_circle_finder_names_a_circles_modules():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": {"a"}, "g": set()}
    assert _circles(graph) == [["a", "b", "c"], ["d", "e"]]


def test_no_import_circles():
    graph = {name: _dependencies(name, path) for name, path in MODULES.items()}
    circles = _circles(graph)
    described = ["; ".join(f"{m} -> {', '.join(sorted(graph[m] & set(c)))}" for m in c) for c in circles]
    assert not circles, "import circles:\n" + "\n".join(described)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_short(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{MODULES[name].relative_to(REPO)}: {lines} lines (at most {MAX_MODULE_LINES})"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_functions_are_short(name):
    path = MODULES[name]
    long = [f"{path.relative_to(REPO)}:{node.name}:{node.end_lineno - node.lineno + 1}"
            for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


@pytest.mark.parametrize("command", [["-c", "import automl"], ["-m", "automl.run", "--help"]],
                         ids=["import automl", "automl.run --help"])
def test_light_commands_do_not_import_tensorflow(command):
    done = subprocess.run([sys.executable, "-X", "importtime", *command], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # -X importtime writes one line per imported module to stderr: "import time: self | cumulative | name".
    imported = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert imported, "no -X importtime report"
    heavy = sorted(m for m in imported if m.split(".")[0] == "tensorflow")
    assert not heavy, f"python {' '.join(command)} imported TensorFlow ({', '.join(heavy[:3])}, ...)"


#: The one module that may touch Optuna's private storage handles and raw system attributes.
OPTUNA_ADAPTER = "automl.engines.optuna_engine.storage"
#: Calls whose first argument is a trial or study attribute key.
_ATTRIBUTE_CALLS = {"set_user_attr", "set_trial_user_attr"}


def _private_optuna_reads(path: Path) -> list[str]:
    """``x._storage``, ``x._trial_id`` and ``x.system_attrs`` in ``path``, as ``line: name``."""
    return [f"{node.lineno}: {node.attr}" for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.Attribute) and node.attr in ("_storage", "_trial_id", "system_attrs")]


def _bare_attribute_keys(path: Path) -> list[str]:
    """String literals used as a trial's or study's attribute key: ``user_attrs["k"]``, ``user_attrs.get("k")``,
    ``"k" in x.user_attrs``, ``set_user_attr("k", ...)``, ``user_attrs={"k": ...}``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        keys: list[ast.expr] = []
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "user_attrs":
            keys = [node.slice]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if node.func.attr in _ATTRIBUTE_CALLS or (node.func.attr == "get" and isinstance(owner, ast.Attribute)
                                                      and owner.attr == "user_attrs"):
                keys = node.args[:1] if node.func.attr != "set_trial_user_attr" else node.args[1:2]
            keys += [k for kw in node.keywords if kw.arg == "user_attrs" and isinstance(kw.value, ast.Dict)
                     for k in kw.value.keys if k is not None]
        elif isinstance(node, ast.Compare) and any(isinstance(c, ast.Attribute) and c.attr == "user_attrs"
                                                   for c in node.comparators):
            keys = [node.left]
        found += [f"{key.lineno}: {key.value!r}" for key in keys
                  if isinstance(key, ast.Constant) and isinstance(key.value, str)]
    return found


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n != OPTUNA_ADAPTER))
def test_only_the_adapter_reaches_into_optunas_privates(name):
    found = _private_optuna_reads(MODULES[name])
    assert not found, f"{MODULES[name].relative_to(REPO)} reads Optuna's privates ({', '.join(found)}); go " \
                      f"through {OPTUNA_ADAPTER}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_attribute_keys_come_from_the_vocabulary(name):
    found = _bare_attribute_keys(MODULES[name])
    assert not found, f"{MODULES[name].relative_to(REPO)} names attribute keys as bare strings ({', '.join(found)}); " \
                      "use automl.engines.optuna_engine.ledger's Attr or StudyAttr"


def test_the_vocabulary_checks_find_what_they_look_for(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('t.set_user_attr("worker", 1)\nx = t.user_attrs.get("error")\nif "surplus" in t.user_attrs:\n'
                      '    pass\ns.enqueue_trial({}, user_attrs={"retry_of": 3})\ny = t.user_attrs["best_epoch"]\n'
                      'z = study._storage.get_trial(trial._trial_id).system_attrs\nok = t.user_attrs.get(Attr.ERROR)\n')
    assert sorted(k.split(": ")[1] for k in _bare_attribute_keys(sample)) == sorted(
        ["'worker'", "'error'", "'surplus'", "'retry_of'", "'best_epoch'"])  # not Attr.ERROR
    assert sorted(r.split(": ")[1] for r in _private_optuna_reads(sample)) == ["_storage", "_trial_id", "system_attrs"]
