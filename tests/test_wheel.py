"""A wheel built from this repository carries the Metal kernels and runs them.

The kernels' sources live in the top-level `metal/` (the one copy; the
package sees it through the link `fs_mlx/metal`), and a wheel used to ship
none of them: every kernel call of an installed fs-mlx failed. This test
builds a wheel from the tracked files, installs it into a fresh virtual
environment outside the checkout and runs a kernel through the MSL executor
there, from a directory where the checkout cannot be imported.

Offline and quick (~15 s here): the build uses this environment's setuptools
(`--no-build-isolation`, the `dev` extra brings setuptools and wheel), and
the virtual environment sees this environment's packages
(mlx, numpy, ziglang: listed in a .pth file) so that only fs-mlx itself is
installed, with `--no-deps --no-index`. The CPU kernels (cpu/, a C++
build of ~1.5 min) are left out with FSX_BUILD_CPU_KERNELS=0, which makes this
wheel also the one a machine without a compiler gets: fsx must say so and
run its matmuls with MLX's ops.
"""

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUN_A_KERNEL = """
import sys
from pathlib import Path
import fs_mlx
assert Path(fs_mlx.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), fs_mlx.__file__
import mlx.core as mx, numpy as np
from fs_mlx.kernels import MetalBackend
kernels = MetalBackend(executor=True)
x = mx.random.normal((3, 100), key=mx.random.key(0))
w = 1 + 0.1 * mx.random.normal((100,), key=mx.random.key(1))
out = kernels.rms_norm(x, w, 1e-6)
ref = mx.fast.rms_norm(x, w, 1e-6)
np.testing.assert_allclose(np.array(out), np.array(ref), rtol=1e-5, atol=1e-5)
print("kernel ran from", Path(fs_mlx.__file__).parent)
from fs_mlx import cpu
from fs_mlx.model.backends import MLXBackend
assert not cpu.available() and "not built" in cpu.STATUS, cpu.STATUS
w2 = mx.random.normal((7, 100), key=mx.random.key(2))
np.testing.assert_allclose(np.array(MLXBackend().linear(x, w2)), np.array(x @ w2.T), rtol=1e-6)
print("matmuls by", cpu.STATUS)
"""


def _copy_tracked_files(dst: Path) -> None:
    """What a clean clone has (build/ and egg-info left by other builds stay out)."""
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True,
                           timeout=30).stdout.decode().split("\0")
    for name in filter(None, files):
        src, out = ROOT / name, dst / name
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), out)
        elif src.is_file():  # (a file deleted in the work tree but not yet in git)
            shutil.copy2(src, out)


def test_the_wheel_ships_metal_and_runs_a_kernel(tmp_path):
    src = tmp_path / "src"
    _copy_tracked_files(src)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
                    "-w", str(wheels), str(src)], check=True, capture_output=True, timeout=120,
                   env={**os.environ, "FSX_BUILD_CPU_KERNELS": "0"})
    (whl,) = wheels.glob("fs_mlx-*.whl")
    shipped = set(zipfile.ZipFile(whl).namelist())
    sources = sorted(p.name for p in (ROOT / "metal").iterdir())
    assert sources and {f"fs_mlx/metal/{n}" for n in sources} <= shipped, sorted(shipped)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    py = venv / "bin" / "python"
    site_dir = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--target", site_dir, str(whl)], check=True, capture_output=True, timeout=120)
    # This environment's packages (mlx, numpy, ziglang) as plain path entries, not as
    # --system-site-packages: that would also run its .pth files, and an editable
    # install of fs-mlx there (`pip install -e .`, as CI does) would shadow the wheel.
    (Path(site_dir) / "outer.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = tmp_path / "elsewhere"
    run.mkdir()
    proc = subprocess.run([str(py), "-c", RUN_A_KERNEL], cwd=run, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "kernel ran from " + str(venv) in proc.stdout
    assert "matmuls by MLX's ops (fsx CPU kernels not built" in proc.stdout
