"""`fsx doctor`: the kernel self-test a Mac user runs and pastes into a bug report.

Here (no Metal) it runs every kernel through the MSL executor and must say
so; the checks compare with the plain-math reference backend, so a kernel (or
a reference) that is off shows up as a failed check and exit status 1.
"""

import json

from click.testing import CliRunner

from fs_mlx.apps.cli import main
from fs_mlx.model.backends import OPS, ReferenceBackend


def test_doctor_checks_every_kernel_through_the_executor_and_says_so():
    r = CliRunner().invoke(main, ["doctor", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["ok"] and report["backend"] == "msl (executor)"
    assert any("MSL executor" in n for n in report["notes"])
    # every op with a kernel of ours (linear is MLX's matmul on every backend)
    assert {c["op"] for c in report["checks"]} == set(OPS) - {"linear"}
    assert all(c["ok"] and c["max_err"] is not None for c in report["checks"])
    # the small inputs MLX passes in `constant` memory are among the shapes
    assert sum("constant memory" in c["case"] for c in report["checks"]) >= 7
    assert report["bench"] is None  # the benchmark needs a Mac


def test_doctor_reports_a_wrong_result(monkeypatch):
    wrong = ReferenceBackend.swiglu
    monkeypatch.setattr(ReferenceBackend, "swiglu", lambda self, g, u: wrong(self, g, u) * 1.01)
    r = CliRunner().invoke(main, ["doctor"])
    assert r.exit_code == 1
    lines = [ln for ln in r.output.splitlines() if ln.strip().startswith("swiglu")]
    assert len(lines) == 4 and all(" FAIL " in ln for ln in lines)  # 2 shapes x float32, float16
    assert "kernels built by: msl (executor)" in r.output
