"""Everything that touches Unicorn's internals, in one place (Unicorn 2.1.x).

The rest of emu/ uses the public binding (hook_add, reg_read, ...) for what it does
well; what the binding does not offer, or offers too slowly for the TLB-miss path,
lives here with named constants:

- the raw `uc_ctl` TLB flush and raw `uc_emu_start` / PC and PSTATE reads (no
  binding wrapper layers);
- our own ctypes callback for UC_HOOK_TLB_FILL (the binding's goes through three
  Python frames and builds a struct per call);
- the calibrated offset of `uc_struct.emu_counter` (executed-instruction count);
- the run sentinel: the `until` address of emu_start and the page Unicorn probes
  when emulation ends (Unicorn issue #2376).

Tested with Unicorn 2.1.x only: importing this module with another version fails
with a clear message, because the private layouts used here may differ.
"""
from __future__ import annotations

import ctypes
import mmap

import numpy as np
import unicorn
from unicorn import (UC_ARCH_ARM64, UC_HOOK_INTR, UC_HOOK_TLB_FILL, UC_MODE_ARM, UC_PROT_ALL)
from unicorn import arm64_const as A
from unicorn.unicorn_py3.unicorn import uclib

TESTED_SERIES = "2.1."


class UnsupportedUnicorn(ImportError):
    """The installed Unicorn is not a version whose internals this module was checked against."""


def check_version(version: str) -> None:
    if not version.startswith(TESTED_SERIES):
        raise UnsupportedUnicorn(
            f"armmu needs Unicorn {TESTED_SERIES}x (tested: 2.1.4), found {version}: "
            f"emu/unicorn_boundary.py reads private Unicorn state; install unicorn>=2.1.4,<2.2")


check_version(unicorn.__version__)

# uc_ctl request word: UC_CTL_TLB_FLUSH (11) with the UC_CTL_IO_WRITE bit (1 << 30),
# what Uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE) encodes, without the binding's layers.
UC_CTL_IO_WRITE = 1 << 30
UC_CTL_TLB_FLUSH = 11
TLB_FLUSH_REQUEST = UC_CTL_IO_WRITE | UC_CTL_TLB_FLUSH

UC_ERR_OK = 0
UC_ERR_EXCEPTION = unicorn.UC_ERR_EXCEPTION

# emu_start's `until`: a VA that no translation regime maps (bit 48 set, bit 55 clear: the
# hole between the ranges for every T0SZ >= 16, with or without TBI), so reaching it is a
# level-0 translation fault like any other VA in the hole. When emulation ends, Unicorn
# translates the page of until - 1 (docs/unicorn.md §Setup, issue #2376): SENTINEL_PAGE, also
# in the hole. The fill hook refuses that probe without asking the model; Cpu.run tells
# the probe from a guest fetch by the PC.
SENTINEL = 0x0001_0000_0000_1000
SENTINEL_PAGE = (SENTINEL - 1) & ~0xFFF

# UC_MEM_READ / UC_MEM_WRITE / UC_MEM_FETCH as the fill hook receives them: subtract to
# get the model's access kind (0 read, 1 write, 2 fetch).
UC_MEM_READ = 16

# PSTATE.EL is bits [3:2]
PSTATE_EL_SHIFT = 2


class TLBEntry(ctypes.Structure):
    """struct uc_tlb_entry (include/unicorn/unicorn.h)."""
    _fields_ = (("paddr", ctypes.c_uint64), ("perms", ctypes.c_uint32))


# bool (*uc_cb_tlbevent_t)(uc_engine *uc, uint64_t addr, uc_mem_type type, uc_tlb_entry *result, void *user_data)
TLB_FILL_CFUNC = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
                                  ctypes.c_void_p, ctypes.c_void_p)


class Raw:
    """Raw calls on one Uc instance, each a single ctypes call."""

    def __init__(self, uc):
        self.uc = uc
        self.uch = uc._uch                    # the uc_engine* the binding holds (private)
        self.address = ctypes.cast(self.uch, ctypes.c_void_p).value
        self._u64 = ctypes.c_uint64()
        self._u64_ref = ctypes.byref(self._u64)
        off = counter_offset()
        self.counter = ctypes.c_uint64.from_address(self.address + off) if off is not None else None
        self._fill_cb = None

    def tlb_flush(self) -> None:
        """Drop every translation in Unicorn's TLB (all mmu_idx)."""
        uclib.uc_ctl(self.uch, TLB_FLUSH_REQUEST)

    def emu_start(self, begin: int, count: int) -> int:
        """Run up to count instructions from begin; the uc_err status (0 = fine)."""
        self.uc._hook_exception = None
        return uclib.uc_emu_start(self.uch, begin, SENTINEL, 0, count)

    def take_hook_exception(self) -> BaseException | None:
        """The first exception a hook raised in the last run (the binding keeps it in a
        private attribute), cleared."""
        hx, self.uc._hook_exception = self.uc._hook_exception, None
        return hx

    def pc(self) -> int:
        uclib.uc_reg_read(self.uch, A.UC_ARM64_REG_PC, self._u64_ref)
        return self._u64.value

    def reg(self, regid: int) -> int:
        """A 64-bit register (UC_ARM64_REG_*), one ctypes call."""
        uclib.uc_reg_read(self.uch, regid, self._u64_ref)
        return self._u64.value

    def set_reg(self, regid: int, value: int) -> None:
        self._u64.value = value
        uclib.uc_reg_write(self.uch, regid, self._u64_ref)

    def el(self) -> int:
        """PSTATE.EL of the vCPU now."""
        uclib.uc_reg_read(self.uch, A.UC_ARM64_REG_PSTATE, self._u64_ref)
        return (self._u64.value >> PSTATE_EL_SHIFT) & 3

    def emu_stop(self) -> None:
        uclib.uc_emu_stop(self.uch)

    def add_tlb_fill_hook(self, fill) -> int:
        """Register fill(uch, va, access, entry_address, user_data) -> bool as UC_HOOK_TLB_FILL,
        called by Unicorn through our own ctypes callback with no wrapper in between: `access`
        is UC_MEM_READ/WRITE/FETCH; the hook writes paddr and perms at entry_address (see
        entry_at). It must not raise: it catches everything and hands it to hook_failed, so
        that the caller of emu_start re-raises it (as the binding does for its own hooks)."""
        self._fill_cb = TLB_FILL_CFUNC(fill)   # kept alive as long as this object
        return self._tlb_fill_hook(ctypes.cast(self._fill_cb, ctypes.c_void_p), None)

    def add_compiled_tlb_fill_hook(self, hook) -> int:
        """Register a compiled fill hook (emu/_fast_translate.c's FillHook): its C callback is
        Unicorn's uc_cb_tlbevent_t itself, with the hook object as user_data (kept alive
        here as long as this object). The same contract as add_tlb_fill_hook."""
        self._fill_cb = hook
        return self._tlb_fill_hook(ctypes.c_void_p(hook.callback), ctypes.c_void_p(hook.user_data))

    def _tlb_fill_hook(self, callback: ctypes.c_void_p, user_data: ctypes.c_void_p | None) -> int:
        h = ctypes.c_size_t()
        status = uclib.uc_hook_add(self.uch, ctypes.byref(h), UC_HOOK_TLB_FILL, callback, user_data,
                                   ctypes.c_uint64(1), ctypes.c_uint64(0))
        if status != UC_ERR_OK:
            raise unicorn.UcError(status)
        return h.value


def hook_failed(uc, exc: BaseException) -> None:
    """A hook of ours raised: stop the emulation, keep the first exception for Cpu.run."""
    if uc._hook_exception is None:
        uc._hook_exception = exc
    uclib.uc_emu_stop(uc._uch)


def strerror(status: int) -> str:
    return f"{uclib.uc_strerror(status).decode()} (uc_err {status})"


def entry_at(address: int) -> TLBEntry:
    """The uc_tlb_entry a fill hook was given (Unicorn passes a stack slot: callers may
    keep the object while the address stays the same)."""
    return TLBEntry.from_address(address)


def _emu_counter_offset() -> int | None:
    """Offset of uc_struct.emu_counter, found by calibration (None if not found).

    Unicorn counts executed instructions for emu_start(count=N) but does not export the
    counter; reading it gives an exact count when a quantum ends early (SVC, fault).
    Three runs of known lengths must leave their counts in the same 8-byte slot, after
    a slot holding the count limits (found at 1368 in 2.1.4).
    """
    buf = mmap.mmap(-1, 0x4000, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    arr = np.frombuffer(buf, dtype=np.uint32)
    add, svc = 0x91000400, 0xD4000001                    # add x0, x0, #1 ; svc #0
    arr[0x1000 // 4: 0x1000 // 4 + 64] = add
    arr[0x1000 // 4 + 37] = svc
    uc = unicorn.Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.ctl_set_page_size(4096)
    uc.mem_map_ptr(0, 0x4000, UC_PROT_ALL, arr.ctypes.data)
    uc.hook_add(UC_HOOK_INTR, lambda uc, n, ud: uc.emu_stop())
    h = ctypes.cast(uc._uch, ctypes.c_void_p).value
    snaps = []
    for start, count in ((0x1000, 500), (0x1000 + 20, 777), (0x1000 + 4 * 40, 20)):
        uc.emu_start(start, 0x3000, count=count)
        snaps.append(np.frombuffer(ctypes.string_at(h, 2048), dtype=np.uint64).copy())
    a, b, c = snaps
    for i in range(1, len(a)):
        if (a[i], b[i], c[i]) == (500, 777, 20) and (a[i - 1], b[i - 1], c[i - 1]) == (38, 33, 21):
            del uc
            return (i - 1) * 8
    return None


_COUNTER_OFFSET: int | None | bool = False


def counter_offset() -> int | None:
    global _COUNTER_OFFSET
    if _COUNTER_OFFSET is False:
        _COUNTER_OFFSET = _emu_counter_offset()
    return _COUNTER_OFFSET
