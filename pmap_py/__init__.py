"""The OS layer: OpenBSD arm64 pmap on emulated page tables (docs/architecture.md)."""
from .asid import ASID_USER, PMAP_ASID_MASK, PMAP_MAX_NASID, AsidAllocator, RandomAsidAllocator
from .pmap import (ENOMEM, PMAP_CANFAIL, PMAP_WIRED, PMAP_ZERO_PAGE_VA, POLICIES, PROT_EXEC, PROT_MASK,
                   PROT_NONE, PROT_READ, PROT_WRITE, REVISIONS, VM_MAXUSER_ADDRESS, VM_MIN_KERNEL_ADDRESS,
                   Pmap, PmapError, PmapSystem, PmapVp, PteDesc, RevisionPolicy, pmap_bootstrap)

__all__ = ["ASID_USER", "PMAP_ASID_MASK", "PMAP_MAX_NASID", "AsidAllocator", "RandomAsidAllocator", "ENOMEM",
           "PMAP_CANFAIL", "PMAP_WIRED", "PMAP_ZERO_PAGE_VA", "POLICIES", "PROT_EXEC", "PROT_MASK", "PROT_NONE",
           "PROT_READ", "PROT_WRITE", "REVISIONS", "VM_MAXUSER_ADDRESS", "VM_MIN_KERNEL_ADDRESS", "Pmap",
           "PmapError", "PmapSystem", "PmapVp", "PteDesc", "RevisionPolicy", "pmap_bootstrap"]
