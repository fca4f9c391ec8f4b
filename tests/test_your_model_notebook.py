"""The "Measure your own model" notebook runs under papermill on a CPU with tiny settings: the
user's own loop inside a Tracker writes a record that reads back as `ok`, the prediction line
after epoch 1 is printed and the per-epoch energy figure is drawn."""

from __future__ import annotations

import nbformat
import pytest

from conftest import needs_fashion_mnist
from energy_lib.records import read_record
from energy_lib.study import NOTEBOOKS_DIR


@pytest.mark.slow
@needs_fashion_mnist
def test_your_model_notebook_runs_under_papermill_on_cpu(tmp_path, monkeypatch):
    import papermill as pm

    monkeypatch.chdir(tmp_path)
    executed = tmp_path / "your_model.ipynb"
    out = tmp_path / "runs" / "your_model"
    pm.execute_notebook(str(NOTEBOOKS_DIR / "your_model.ipynb"), str(executed), progress_bar=False,
                        parameters={"epochs": 2, "train_subset": 256, "test_subset": 128,
                                    "batch_size": 64, "out": str(out), "idle_s": 0.0,
                                    "idle_after_s": 0.0})
    notebook = nbformat.read(executed, 4)
    outputs = [o for c in notebook.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert not notebook.metadata["papermill"]["exception"]
    [path] = out.glob("*.ipynb")
    assert path.name == "your-model.ipynb"
    record = read_record(path)
    assert record.status == "ok" and len(record.epochs) == 2
    assert all(row["val_acc_pct"] >= 0 for row in record.epochs)
    text = "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                   for o in outputs)
    assert "tracker your-model: after epoch 1 of 2, the whole run is predicted at" in text
    assert f"{path}: ok" in text  # read back from the record in the notebook
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the energy-per-epoch figure


def test_your_model_notebook_has_its_parameters():
    """The parameters papermill (and the test above) may set, with the defaults a user sees."""
    import ast

    notebook = nbformat.read(NOTEBOOKS_DIR / "your_model.ipynb", 4)
    [cell] = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    values = {node.targets[0].id: ast.literal_eval(node.value)
              for node in ast.parse(cell.source).body}
    assert values == {"epochs": 3, "train_subset": 2048, "test_subset": 1000, "batch_size": 128,
                      "lr": 0.05, "seed": 0, "out": "runs/your_model", "idle_s": 1.0,
                      "idle_after_s": 1.0}
