// Bad input: spins forever in `b .` with no syscalls and no memory accesses (for instruction limits and watchdogs).
//
// Memory: code at the load base only. Entry: _start. Syscalls: none.

_start:
    mov     x0, #0
spin:
    b       .
