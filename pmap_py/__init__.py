"""The OS layer: OpenBSD arm64 pmap on emulated page tables (docs/openbsd-exit-path.md)."""
from .asid import ASID_USER, PMAP_ASID_MASK, PMAP_MAX_NASID, AsidAllocator
from .pmap import (ENOMEM, PMAP_CANFAIL, PMAP_WIRED, PROT_EXEC, PROT_MASK, PROT_NONE, PROT_READ,
                   PROT_WRITE, VM_MAXUSER_ADDRESS, VM_MIN_KERNEL_ADDRESS, Pmap, PmapError, PmapSystem,
                   PmapVp, PteDesc, pmap_bootstrap)

__all__ = ["ASID_USER", "PMAP_ASID_MASK", "PMAP_MAX_NASID", "AsidAllocator", "ENOMEM", "PMAP_CANFAIL",
           "PMAP_WIRED", "PROT_EXEC", "PROT_MASK", "PROT_NONE", "PROT_READ", "PROT_WRITE",
           "VM_MAXUSER_ADDRESS", "VM_MIN_KERNEL_ADDRESS", "Pmap", "PmapError", "PmapSystem", "PmapVp",
           "PteDesc", "pmap_bootstrap"]
