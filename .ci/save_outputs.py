"""Execute the notebooks as nbdev_test does (cells flagged with a tst_flag skipped) and save their outputs, so that the
docs site, which renders saved outputs, shows the plots and tables. Usage: python .ci/save_outputs.py [nbs/NAME.ipynb ...]
Then run nbdev_clean and commit."""
import sys, time
from pathlib import Path
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory
from nbdev.config import get_config

def skip(cell, flags=set(get_config().tst_flags.split())):
    "Skip markdown, export calls, eval: false and flagged cells."
    if cell.cell_type != "code" or "nbdev_export(" in cell.source: return True
    d = {l[2:].strip().split()[0].rstrip(":"): l for l in cell.source.splitlines() if l.startswith("#|") and l[2:].strip()}
    return "eval: false" in cell.source or bool(flags & d.keys())

def save_outputs(path: Path):
    "Run `path` in its folder and write it back with outputs."
    nb, t0 = read_nb(path), time.time()
    for c in nb.cells:
        if c.cell_type == "code": c.outputs, c.execution_count = [], None
    k = CaptureShell(path, mpl_format="png")             # ordinary resolution: committed figures stay light
    k.run_cell("import matplotlib; matplotlib.rcParams['figure.dpi'] = 72")
    with working_directory(path.parent):
        try: k.run_all(nb, exc_stop=True, preproc=skip)
        except Exception: sys.exit(f"{path.name} failed:\n{k.prettytb(fname=path)}")
    write_nb(nb, path)
    print(f"{path.name}: {time.time() - t0:.0f} s")

if __name__ == "__main__":
    cfg = get_config()
    paths = [Path(p) for p in sys.argv[1:]] or sorted(Path(cfg.config_path/cfg.nbs_path).glob("*.ipynb"))
    for p in paths: save_outputs(p.resolve())
