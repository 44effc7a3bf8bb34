// TLB-friendly benchmark loop: ITERS iterations, each adds 1 to one word on each of NPAGES heap pages; then exit(0).
//
// An iteration is 6 instructions per page plus 5 (about 29 for the default NPAGES=4).
// At the end the word at the start of every page holds ITERS and the word at
// HEAP_BASE+8 (RESULT) holds the number of iterations executed.
//
// Memory: code at the load base (r-x); heap [HEAP_BASE, HEAP_BASE+HEAP_SIZE) rw-;
//         stack [STACK_TOP-STACK_SIZE, STACK_TOP) rw-.
// Entry:  _start; needs no initial register state.
// Syscalls: exit.

    .equ ITERS, 100000                  // @param iterations (K)
    .equ NPAGES, 4                      // @param pages touched per iteration (keep it small: fits any L1 TLB)
    .equ PAGE_SIZE, 4096
    .equ RESULT, 8                      // offset from HEAP_BASE of the iteration count written at the end
    .equ HEAP_BASE, 0x20000000          // @layout first heap page (page aligned)
    .equ HEAP_SIZE, NPAGES * PAGE_SIZE  // @layout heap bytes used (at least one page)
    .equ STACK_TOP, 0x7fffff8000        // @layout initial sp
    .equ STACK_SIZE, PAGE_SIZE          // @layout stack bytes below STACK_TOP

_start:
    movz    x9, #(STACK_TOP >> 32) & 0xffff, lsl #32
    movk    x9, #(STACK_TOP >> 16) & 0xffff, lsl #16
    movk    x9, #STACK_TOP & 0xffff
    mov     sp, x9
    movz    x20, #(HEAP_BASE >> 32) & 0xffff, lsl #32
    movk    x20, #(HEAP_BASE >> 16) & 0xffff, lsl #16
    movk    x20, #HEAP_BASE & 0xffff
    movz    x21, #ITERS & 0xffff
    movk    x21, #(ITERS >> 16) & 0xffff, lsl #16
    movz    x23, #NPAGES & 0xffff
    mov     x22, #0                     // iterations done
outer:
    cmp     x22, x21
    b.hs    done
    mov     x1, x20
    mov     x2, x23
    cbz     x2, 2f
1:  ldr     x3, [x1]
    add     x3, x3, #1
    str     x3, [x1]
    add     x1, x1, #PAGE_SIZE
    subs    x2, x2, #1
    b.ne    1b
2:  add     x22, x22, #1
    b       outer
done:
    str     x22, [x20, #RESULT]
    mov     x0, #0
    mov     x8, #SYS_exit
    svc     #0
    dsb     nsh
    isb
    udf     #0xe1                       // exit returned: must not happen
