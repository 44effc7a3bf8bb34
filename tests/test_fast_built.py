"""`make setup` compiles the model's fast paths (setup.py); without them every run is the
pure Python, correct and several times slower on misses and TLBIs. The suite must notice a
checkout where they did not build (a missing C compiler or Python headers), not pass slowly."""
import os

import pytest

from emu import fastpath


def test_the_compiled_fast_paths_are_built():
    if os.environ.get(fastpath.PURE_ENV) == "1":
        pytest.skip(f"{fastpath.PURE_ENV}=1: the pure Python paths were asked for")
    assert fastpath.built(), ("emu/_fast_translate.c and emu/_fast_tlbi.c did not build: install a C "
                              "compiler and Python's headers, then `make clean setup`")
    assert fastpath.default()
