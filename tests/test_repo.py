"Repository hygiene: what CI runs is what the README says, the packaging is sane, notebooks are clean and in sync."
import configparser, json, re, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    return re.findall(r"```(?:sh|bash)?\n(.*?)\n```", (ROOT/"README.md").read_text(), re.S)


def test_ci_runs_the_readme_test_command():
    ci = (ROOT/".ci/run").read_text().strip().splitlines()
    assert "pip install torch==2.13.0" in ci, ".ci/run must install the CPU torch wheel first"
    readme = [c.strip() for c in _readme_commands()]
    test_cmd = ci[-1].strip()
    assert test_cmd in readme, f"the last line of .ci/run ({test_cmd!r}) is not a README command: {readme}"


def test_setup_py_has_no_pkg_resources():
    assert "pkg_resources" not in (ROOT/"setup.py").read_text().replace("without pkg_resources", "")


def test_settings_pins_and_tags():
    cfg = configparser.ConfigParser(delimiters=["="]); cfg.read(ROOT/"settings.ini")
    d = cfg["DEFAULT"]
    assert d["allowed_cell_metadata_keys"].strip() == "tags", "papermill needs cell tags kept by nbdev_clean"
    dev = d["dev_requirements"].split()
    for pin in ["nbdev==2.4.14", "fastcore<2", "execnb<0.2", "ghapi<2"]: assert pin in dev
    assert not any(r == "torch" for r in d["requirements"].split()), "a bare torch requirement pulls CUDA wheels"


def test_ruff_is_clean():
    "ruff (ruff.toml: pyflakes on the library and the chapters, lines of at most 120 characters where code is written)."
    ruff = shutil.which("ruff")
    assert ruff, "ruff is a dev requirement: pip install -e '.[dev]'"
    r = subprocess.run([ruff, "check", "babycry", "nbs", "--output-format", "concise"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-1000:]


def _cells(nb):
    return json.loads((ROOT/"nbs"/f"{nb}.ipynb").read_text())["cells"]


def test_parameters_cells_are_generated_from_the_configs():
    "Each stage notebook has one parameters cell, exactly `parameters_cell(nb)`: its run folder, overwrite, extras and every setting it takes."
    from babycry.config import STAGE_SETTINGS, parameters_cell
    for nb in STAGE_SETTINGS:
        params = [c for c in _cells(nb) if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(params) == 1, f"{nb}: {len(params)} parameters cells"
        assert "".join(params[0]["source"]) == parameters_cell(nb), (
            f"{nb}'s parameters cell is not babycry.config.parameters_cell({nb!r}): regenerate it after changing a setting")


def test_stage_runs_skip_the_chapters_checks():
    "In a stage notebook every code cell is the parameters, a `#| stage` cell, or tagged skip-execution (papermill leaves it out)."
    from babycry.config import STAGE_SETTINGS
    for nb in STAGE_SETTINGS:
        for i, c in enumerate(_cells(nb)):
            if c["cell_type"] != "code": continue
            tags, first = c.get("metadata", {}).get("tags", []), "".join(c["source"]).split("\n")[0]
            stage = first.replace(" ", "") == "#|stage"
            assert ("parameters" in tags or stage) != ("skip-execution" in tags), (
                f"{nb} cell {i} ({first[:60]!r}): a chapter's cell (export or check) must carry the tag skip-execution, "
                "a stage or parameters cell must not")


def test_notebooks_clean_and_library_in_sync(tmp_path):
    "nbdev_export + nbdev_clean on a copy of the repo change nothing."
    work = tmp_path/"repo"
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(".git", "runs", "_docs", "_proc", "*.egg-info", "__pycache__", ".nbsrc", "benchmarks"))
    for cmd in ("nbdev_export", "nbdev_clean"):
        subprocess.run([str(Path(sys.executable).parent/cmd)], cwd=work, check=True, capture_output=True)
    changed = []
    for sub in ("nbs", "babycry"):
        for f in (work/sub).rglob("*"):
            if f.is_file() and "__pycache__" not in f.parts:
                orig = ROOT/f.relative_to(work)
                if not orig.exists() or orig.read_bytes() != f.read_bytes(): changed.append(str(f.relative_to(work)))
    assert not changed, f"run nbdev_export and nbdev_clean, then commit: {changed}"


def test_the_docs_build_processes_every_notebook(tmp_path):
    """nbdev_proc_nbs (what the docs workflow runs before quarto) succeeds on a copy of the repo, and no cell mixes
    imports with other code: nbdev executes such a cell while building the docs, out of its notebook's order."""
    work = tmp_path/"repo"
    shutil.copytree(ROOT, work, ignore=shutil.ignore_patterns(".git", "runs", "_docs", "_proc", "*.egg-info", "__pycache__", ".nbsrc", "benchmarks"))
    r = subprocess.run([str(Path(sys.executable).parent/"nbdev_proc_nbs")], cwd=work, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Found cells containing imports and other code" not in r.stderr, r.stderr[-3000:]


def test_papermill_reads_every_parameter():
    "papermill parses each line of every stage notebook's parameters cell (an unparsed line prints a warning on every run)."
    from papermill.translators import PythonTranslator
    from babycry.plan import ALL_NOTEBOOKS
    for nb in ALL_NOTEBOOKS:
        cell = [c for c in json.loads((Path(__file__).parent.parent/"nbs"/f"{nb}.ipynb").read_text())["cells"]
                if "parameters" in c.get("metadata", {}).get("tags", [])][0]
        names = re.findall(r"^([A-Za-z_]\w*)\s*=", "".join(cell["source"]), re.M)
        assert [p.name for p in PythonTranslator.inspect(dict(cell, source="".join(cell["source"])))] == names, nb


def test_the_wheel_ships_the_stage_notebooks():
    "setup.py copies settings.ini's stage_notebooks into the wheel: exactly the notebooks babycry-run executes."
    from babycry.plan import ALL_NOTEBOOKS
    cfg = configparser.ConfigParser(delimiters=["="]); cfg.read(ROOT/"settings.ini")
    assert tuple(cfg["DEFAULT"]["stage_notebooks"].split()) == ALL_NOTEBOOKS


def test_readme_is_made_from_the_index():
    "README.md is nbs/index.ipynb's markdown (python .ci/readme.py writes it; nbdev_readme needs Quarto)."
    r = subprocess.run([sys.executable, str(ROOT/".ci/readme.py"), "--check"])
    assert r.returncode == 0, "README.md is out of date: run python .ci/readme.py"


def test_import_babycry_is_light_and_registers_with_transformers():
    "babycry-run's process does not import transformers; importing transformers later still registers babycry's model."
    code = ("import sys, importlib.util; import babycry.run; assert 'transformers' not in sys.modules; "
            "importlib.util.find_spec('transformers'); import transformers; from transformers import AutoConfig; "
            "print(AutoConfig.for_model('babycry').model_type)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "babycry", r.stderr[-2000:]
