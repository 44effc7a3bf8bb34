// TLB-hostile loop: PASSES passes over NPAGES heap pages STRIDE bytes apart, adding 1 to one word per page; then exit(0).
//
// With the defaults (2048 pages, 4 KB stride) every access of a pass misses an L1
// TLB and most L2 TLBs (Cortex-A53: 512 entries, A72: 1024, N1: 1280), so each access
// walks. An access is 6 instructions. At the end each touched word holds PASSES.
//
// Memory: code at the load base (r-x); heap [HEAP_BASE, HEAP_BASE+HEAP_SIZE) rw-;
//         stack [STACK_TOP-STACK_SIZE, STACK_TOP) rw-.
// Entry:  _start; needs no initial register state.
// Syscalls: exit.

    .equ NPAGES, 2048                   // @param words (pages) touched per pass
    .equ PASSES, 4                      // @param passes over all of them (K)
    .equ STRIDE, 4096                   // @param bytes between touched words (4096 = one per 4 KB page)
    .equ PAGE_SIZE, 4096
    .equ HEAP_BASE, 0x20000000          // @layout first heap page (page aligned)
    .equ HEAP_SIZE, NPAGES * STRIDE     // @layout heap bytes spanned
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
    movz    x21, #PASSES & 0xffff
    movk    x21, #(PASSES >> 16) & 0xffff, lsl #16
    movz    x23, #NPAGES & 0xffff
    movk    x23, #(NPAGES >> 16) & 0xffff, lsl #16
    movz    x24, #STRIDE & 0xffff
    movk    x24, #(STRIDE >> 16) & 0xffff, lsl #16
    mov     x22, #0                     // passes done
pass:
    cmp     x22, x21
    b.hs    done
    mov     x1, x20
    mov     x2, x23
    cbz     x2, 2f
1:  ldr     x3, [x1]
    add     x3, x3, #1
    str     x3, [x1]
    add     x1, x1, x24
    subs    x2, x2, #1
    b.ne    1b
2:  add     x22, x22, #1
    b       pass
done:
    mov     x0, #0
    mov     x8, #SYS_exit
    svc     #0
    dsb     nsh
    isb
    udf     #0xe1                       // exit returned: must not happen
