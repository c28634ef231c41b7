"""Notebooks in colabs/ run, and their .ipynb twins match the .py sources."""

import glob
import os

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
def test_notebook_executes(path, monkeypatch):
  monkeypatch.setenv("QUICK_START_STEPS", "150")
  monkeypatch.setenv("MPLBACKEND", "Agg")
  nb = jupytext.read(path)
  NotebookClient(nb, timeout=300, kernel_name="python3",
                 resources={"metadata": {"path": os.path.dirname(path)}}
                 ).execute()
  errors = [o for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if o.output_type == "error"]
  assert not errors
