"Everything the stage notebooks and the library import is a declared runtime requirement (or optional, and guarded)."
import ast, configparser, json, re, sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from babycry.plan import ALL_NOTEBOOKS

ROOT = Path(__file__).resolve().parents[1]


def _requirements(key: str) -> set:
    cfg = configparser.ConfigParser(delimiters=["="]); cfg.read(ROOT/"settings.ini")
    names = re.findall(r"^[A-Za-z0-9_.\-]+", " ".join(cfg["DEFAULT"].get(key, "").split()).replace(" ", "\n"), re.M)
    return {n.lower().replace("_", "-") for n in names}


def _guarded(node, parents) -> bool:
    "Is `node` inside a `try:` whose handlers catch ImportError (or everything)?"
    for p in parents:
        if isinstance(p, ast.Try) and node in ast.walk(ast.Module(body=p.body, type_ignores=[])):
            for h in p.handlers:
                names = [h.type] if not isinstance(h.type, ast.Tuple) else list(h.type.elts)
                if h.type is None or any(getattr(n, "id", "") in ("ImportError", "ModuleNotFoundError", "Exception") for n in names):
                    return True
    return False


def imports(code: str) -> list:
    "(top-level module, guarded, at module level) for every import statement in `code`."
    code = "\n".join("" if l.lstrip().startswith(("%", "!")) else l for l in code.splitlines())
    out, stack = [], []
    def visit(node, parents):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else ([node.module] if not node.level else [])
            top = not any(isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)) for p in parents)
            out.extend((m.split(".")[0], _guarded(node, parents), top) for m in mods if m)
        for child in ast.iter_child_nodes(node): visit(child, parents + [node])
    visit(ast.parse(code), [])
    return out


def test_imports_parser():
    got = imports("import numpy as np, os\nfrom .core import x\ntry: import tensorboard\nexcept ImportError: pass\n"
                  "def f():\n    import onnx\n%time import av")
    assert got == [("numpy", False, True), ("os", False, True), ("tensorboard", True, True), ("onnx", False, False)], got


def _dist(module: str):
    "The distribution names that provide `module` (None for the standard library and babycry itself)."
    if module in sys.stdlib_module_names or module in ("babycry", "__future__"): return None
    dists = packages_distributions().get(module)
    assert dists, f"no installed distribution provides the module {module!r}"
    return {d.lower().replace("_", "-") for d in dists}


def _check(where: str, code: str, runtime: set, optional: set, problems: list):
    for mod, guarded, top in imports(code):
        if guarded: continue                                 # optional, with a fallback where it is missing
        dists = _dist(mod)
        if dists is None or dists & runtime: continue
        if dists & optional and not top: continue          # an extra, imported lazily where that feature is used
        problems.append(f"{where}: imports {mod} (from {', '.join(sorted(dists))}), which is not a runtime requirement")


def test_stage_notebooks_import_only_runtime_requirements():
    "papermill runs every cell of a stage notebook on the user's plain install: each import must be installed by `pip install .`."
    runtime, problems = _requirements("requirements"), []
    for nb in ALL_NOTEBOOKS:
        cells = json.loads((ROOT/"nbs"/f"{nb}.ipynb").read_text())["cells"]
        for i, c in enumerate(cells):
            if c["cell_type"] == "code": _check(f"nbs/{nb}.ipynb cell {i}", "".join(c["source"]), runtime, set(), problems)
    assert not problems, "\n".join(problems)


def test_library_imports_only_runtime_requirements():
    "The exported library imports runtime requirements, or an extra's modules inside the function that needs them."
    runtime, optional, problems = _requirements("requirements"), _requirements("onnx_requirements"), []
    for f in sorted((ROOT/"babycry").glob("*.py")):
        _check(f"babycry/{f.name}", f.read_text(), runtime, optional, problems)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("key", ["requirements", "onnx_requirements", "dev_requirements"])
def test_requirements_are_installed(key):
    "Every declared requirement is a real distribution (the names above are checked against what pip installed)."
    from importlib.metadata import distribution
    for name in _requirements(key): distribution(name)
