// Bad input: branches through a register to an unmapped address (BAD_TARGET); the kernel must deliver an instruction abort (SIGSEGV).
//
// Memory: code at the load base only; BAD_TARGET must not be mapped.
// Entry: _start. Syscalls: none.

    .equ BAD_TARGET, 0xdead0000         // @param address jumped to (must be unmapped)

_start:
    movz    x9, #(BAD_TARGET >> 32) & 0xffff, lsl #32
    movk    x9, #(BAD_TARGET >> 16) & 0xffff, lsl #16
    movk    x9, #BAD_TARGET & 0xffff
jump:
    br      x9
