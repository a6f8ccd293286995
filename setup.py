"""The one compiled part of keeperd: the cascade kernels built ahead of time (Cython, OpenMP), so
the engine runs at full speed where the JIT may not (systemd's MemoryDenyWriteExecute; see
keeperd/risk/kernels.py). Everything else about the package is in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

KERNELS = Extension(
    "keeperd.risk._kernels_aot",
    ["keeperd/risk/_kernels_aot.pyx"],
    # -O3: the per-row loops over columns are vectorised. -ffp-contract=off: no fused
    # multiply-add, whatever the target CPU, so each sum rounds as the reference's does and the
    # liquidation decisions stay bit for bit the same (a fused x*m+s can flip `lw < dm`).
    extra_compile_args=["-O3", "-fopenmp", "-ffp-contract=off"],
    extra_link_args=["-fopenmp"],
    # Without a C compiler the package still installs: kernels() then names the missing
    # extension and runs numba's kernels, or numpy's where the JIT may not run.
    optional=True,
)

setup(ext_modules=cythonize([KERNELS], compiler_directives={"language_level": "3"}))
