"""The one part pyproject.toml cannot say: the optional C core (collector/core/_fastbook.c).

`optional=True`: with no C compiler the install still succeeds, and the collector runs
on the pure-Python book (collector/core/book.py), which gives the same records, slower."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("collector.core._fastbook", ["collector/core/_fastbook.c"], optional=True)])
