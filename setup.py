"""Builds fsx's CPU kernels (cpu/, an MLX extension) at `pip install`, where it can.

Everything else about the package is in pyproject.toml. The extension is
optional: with no C++ compiler or cmake, or when its build fails, the install
goes on without it and fsx uses MLX's own ops (`fsx --version` says which;
`pip install -v` shows why). FSX_BUILD_CPU_KERNELS=0 skips it.
"""

import os
import sys

from setuptools import setup


def cpu_kernels() -> dict:
    if os.environ.get("FSX_BUILD_CPU_KERNELS", "1") == "0":
        return {}
    try:
        from mlx import extension  # MLX's setuptools helper: cmake against the installed mlx
    except ImportError as error:
        print(f"fs-mlx: not building the CPU kernels (no mlx.extension: {error})", file=sys.stderr)
        return {}

    class OptionalBuild(extension.CMakeBuild):
        def run(self) -> None:
            try:
                super().run()
            except Exception as error:  # no compiler or cmake, or the build failed
                print(f"fs-mlx: the CPU kernels were not built ({error}); fsx will use MLX's "
                      "own ops", file=sys.stderr)

    return {
        "ext_modules": [extension.CMakeExtension("fs_mlx.cpu._kernels", sourcedir="cpu")],
        "cmdclass": {"build_ext": OptionalBuild},
    }


setup(**cpu_kernels())
