"""Notebooks in colabs/ run, and their .ipynb twins match the .py sources.

Every notebook runs top to bottom in small mode (`JAXSPARSE_SMALL=1`), with
its figures written to a temporary directory; a cell that raises fails the
test. Each notebook prints its wall time (`pytest -s` shows it; budget: 90 s
each on the project's 2-core CPU machine, 8 minutes for all of them).
"""

import glob
import os
import time

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "colabs", "*.py")))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_ipynb_is_paired_and_stripped(path):
  ipynb = path[:-3] + ".ipynb"
  assert os.path.exists(ipynb), f"{ipynb} missing: run jupytext --sync"
  py_cells = [c.source for c in jupytext.read(path).cells]
  nb = nbformat.read(ipynb, as_version=4)
  assert [c.source for c in nb.cells] == py_cells
  for c in nb.cells:
    if c.cell_type == "code":
      assert not c.outputs and c.execution_count is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_executes(path, monkeypatch, tmp_path):
  monkeypatch.setenv("JAXSPARSE_SMALL", "1")
  monkeypatch.setenv("JAXSPARSE_FIGURES", str(tmp_path))
  monkeypatch.setenv("MPLBACKEND", "Agg")
  nb = jupytext.read(path)
  start = time.perf_counter()
  # A failing cell raises CellExecutionError here, naming the cell.
  NotebookClient(nb, timeout=300, kernel_name="python3",
                 resources={"metadata": {"path": os.path.dirname(path)}}
                 ).execute()
  seconds = time.perf_counter() - start
  print(f"\n{os.path.basename(path)}: {seconds:.1f} s in small mode")
  errors = [o for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if o.output_type == "error"]
  assert not errors
  assert glob.glob(os.path.join(tmp_path, "*.png")), "no figure saved"
