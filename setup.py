"""The one part pyproject.toml cannot say: the optional C parts, the book core
(collector/core/_fastbook.c) and the writer's appender (collector/runtime/_appender.c).

`optional=True`: with no C compiler the install still succeeds, and the collector runs
on the pure-Python book (collector/core/book.py), which gives the same records, slower,
and writes from a Python thread.

The C parts use only the stable ABI of Python 3.11 (its Py_LIMITED_API), so one wheel,
tagged cp311-abi3, serves 3.11 and every later CPython; measured against the full API it
costs nothing beyond noise (README.md, "Wheels")."""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildExt(build_ext):
    """Links without the building Python's run path: a Python built with --enable-shared
    (pyenv's, for one) puts -Wl,-rpath,<its lib dir> into LDSHARED, which would leave a
    RUNPATH to the build machine in the wheel. The C core needs only libc."""

    def build_extensions(self) -> None:
        linker = getattr(self.compiler, "linker_so", None)
        if linker:
            self.compiler.linker_so = [a for a in linker if not a.startswith("-Wl,-rpath")]
        super().build_extensions()


setup(ext_modules=[Extension(name, [source], optional=True, py_limited_api=True)
                   for name, source in (("collector.core._fastbook", "collector/core/_fastbook.c"),
                                        ("collector.runtime._appender", "collector/runtime/_appender.c"))],
      cmdclass={"build_ext": BuildExt},
      options={"bdist_wheel": {"py_limited_api": "cp311"}})
