// Bad input: executes an undefined instruction (udf #0xbad); the kernel must kill the process (SIGILL), not hang.
//
// Three valid instructions run first, then UDF. Nothing after it should run; if the
// kernel resumes after the UDF anyway, the program calls exit(99).
// Memory: code at the load base only. Entry: _start. Syscalls: (exit, only if mishandled).

_start:
    mov     x0, #1
    mov     x1, #2
    add     x2, x0, x1
fault:
    udf     #0xbad
    mov     x0, #99
    mov     x8, #SYS_exit
    svc     #0
    dsb     nsh
    isb
