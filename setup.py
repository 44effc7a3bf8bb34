"""The compiled fast paths of the hardware model (everything else is in pyproject.toml).

Two C extensions mirror the two hottest Python functions of emu/ exactly (same state, same
order of effects) and fall back to them for every case they do not handle; see
emu/fastpath.py. `optional`: without a C compiler and Python's headers the model runs the
pure Python paths, slower and otherwise the same.
"""
from setuptools import Extension, setup

setup(ext_modules=[
    Extension("emu._fast_translate", ["emu/_fast_translate.c"], depends=["emu/_fast_slots.h"], optional=True),
    Extension("emu._fast_tlbi", ["emu/_fast_tlbi.c"], depends=["emu/_fast_slots.h"], optional=True),
])
