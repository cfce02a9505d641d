"""The house's shape: imports point one way, domain <- shell <- pipeline <- use cases <- tasks
<- front ends, and the CLI's command modules share helpers through their own module.

A small ``ast`` walk rather than a linter: it also counts the strings that are imports in
disguise (Celery's ``include=``, ``importlib.import_module``), and it is itself tested on a
tree that breaks each rule."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Lower number, lower layer: a module may import its own layer and the ones below.
LAYERS = {"ca": 0, "shell": 1, "scheduler": 2, "service": 3, "worker": 4, "pkiq": 5,
          "web": 5}
CLI_SHARED = "pkiq.cli_common"


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(root: Path, path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) for every import in the file, relative ones resolved, plus
    module paths given as strings to Celery(include=...) and importlib.import_module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(root, path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            found.append((node.lineno, module, [a.name for a in node.names]))
        elif isinstance(node, ast.Call):
            strings = []
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name == "import_module" and node.args:
                strings.append(node.args[0])
            for keyword in node.keywords:
                if keyword.arg == "include" and isinstance(keyword.value, ast.List | ast.Tuple):
                    strings += keyword.value.elts
            found += [(s.lineno, s.value, []) for s in strings
                      if isinstance(s, ast.Constant) and isinstance(s.value, str)]
    return found


def violations(root: Path) -> list[str]:
    problems = []
    for package, rank in LAYERS.items():
        for path in sorted((root / package).rglob("*.py")):
            here = _module_name(root, path)
            for line, module, names in imports_of(root, path):
                top = module.split(".")[0]
                where = f"{path.relative_to(root)}:{line}"
                if top in LAYERS and LAYERS[top] > rank:
                    problems.append(f"{where}: {package} (layer {rank}) imports {module} "
                                    f"(layer {LAYERS[top]})")
                if (here.startswith("pkiq.cli_") and here != CLI_SHARED
                        and module.startswith("pkiq.cli") and module != CLI_SHARED):
                    problems.append(f"{where}: CLI module {here} imports {module}; share "
                                    f"through {CLI_SHARED}")
                if top in LAYERS and module != here:
                    private = [n for n in names if n.startswith("_") and n != "__version__"]
                    if private:
                        problems.append(f"{where}: imports private {module}.{private[0]}")
    return problems


def test_imports_point_down_the_layers():
    assert violations(ROOT) == []


def test_tests_and_benchmarks_use_no_private_names_of_the_packages():
    problems = []
    for path in sorted([*(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]):
        for line, module, names in imports_of(ROOT, path):
            if module.split(".")[0] in LAYERS:
                problems += [f"{path.relative_to(ROOT)}:{line}: {module}.{n}"
                             for n in names if n.startswith("_")]
    assert problems == []


def test_the_checker_catches_each_kind_of_wrong_import(tmp_path):
    """A tree that breaks every rule once: each must be reported."""
    files = {
        "ca/__init__.py": "",
        "ca/bad.py": "from worker.tasks import sign_jobs\n",
        "shell/__init__.py": "",
        "shell/lazy.py": "def f():\n    import service.jobs\n",
        "scheduler/__init__.py": "",
        "scheduler/rel.py": "from ..pkiq import cli\n",
        "service/__init__.py": "",
        "service/ok.py": "from scheduler import rel\nfrom ca import bad\n",
        "worker/__init__.py": "",
        "worker/app.py": "from celery import Celery\nCelery('x', include=['pkiq.cli'])\n",
        "worker/dyn.py": "import importlib\nimportlib.import_module('pkiq.cli')\n",
        "pkiq/__init__.py": "",
        "pkiq/cli_common.py": "",
        "pkiq/cli_a.py": "from .cli_b import helper\nfrom .cli_common import emit\n",
        "pkiq/cli_b.py": "from service.ok import _hidden\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = "\n".join(violations(tmp_path))
    for expected in ("ca/bad.py:1: ca (layer 0) imports worker.tasks",
                     "shell/lazy.py:2: shell (layer 1) imports service.jobs",
                     "scheduler/rel.py:1: scheduler (layer 2) imports pkiq",
                     "worker/app.py:2: worker (layer 4) imports pkiq.cli",
                     "worker/dyn.py:2: worker (layer 4) imports pkiq.cli",
                     "pkiq/cli_a.py:1: CLI module pkiq.cli_a imports pkiq.cli_b",
                     "pkiq/cli_b.py:1: imports private service.ok._hidden"):
        assert expected in found
    assert "service/ok.py" not in found and "cli_common" not in found.replace(
        "share through pkiq.cli_common", "")
