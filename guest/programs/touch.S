// Touch NPAGES heap pages (one 8-byte store per page), read them back and sum; exit(0) if the sums agree, else exit(1).
//
// Store pass: for p in [0, NPAGES): *(u64 *)(HEAP_BASE + p*PAGE_SIZE) = that address.
// Load pass: read the same words back and add them up. The exit status is 0 when the
// sum read equals the sum written (what a correct MMU gives), 1 otherwise.
// One word is also pushed on the stack, so the stack page is really used.
//
// Memory: code at the load base (r-x); heap [HEAP_BASE, HEAP_BASE+HEAP_SIZE) rw-;
//         stack [STACK_TOP-STACK_SIZE, STACK_TOP) rw-.
// Entry:  _start; needs no initial register state (the program sets its own sp).
// Syscalls: exit.

    .equ NPAGES, 64                     // @param number of heap pages to touch
    .equ PAGE_SIZE, 4096                // distance between touched words
    .equ HEAP_BASE, 0x20000000          // @layout first heap page (page aligned)
    .equ HEAP_SIZE, NPAGES * PAGE_SIZE  // @layout heap bytes used
    .equ STACK_TOP, 0x7fffff8000        // @layout initial sp (OpenBSD's USRSTACK for 39-bit VAs)
    .equ STACK_SIZE, PAGE_SIZE          // @layout stack bytes below STACK_TOP

_start:
    movz    x9, #(STACK_TOP >> 32) & 0xffff, lsl #32
    movk    x9, #(STACK_TOP >> 16) & 0xffff, lsl #16
    movk    x9, #STACK_TOP & 0xffff
    mov     sp, x9
    str     xzr, [sp, #-16]!            // use the stack page

    movz    x20, #(HEAP_BASE >> 32) & 0xffff, lsl #32
    movk    x20, #(HEAP_BASE >> 16) & 0xffff, lsl #16
    movk    x20, #HEAP_BASE & 0xffff
    movz    x21, #NPAGES & 0xffff
    movk    x21, #(NPAGES >> 16) & 0xffff, lsl #16
    mov     x22, #0                     // sum written
    mov     x23, #0                     // sum read

    mov     x1, x20
    mov     x2, x21
    cbz     x2, stored
store_loop:
    str     x1, [x1]
    add     x22, x22, x1
    add     x1, x1, #PAGE_SIZE
    subs    x2, x2, #1
    b.ne    store_loop
stored:
    mov     x1, x20
    mov     x2, x21
    cbz     x2, loaded
load_loop:
    ldr     x3, [x1]
    add     x23, x23, x3
    add     x1, x1, #PAGE_SIZE
    subs    x2, x2, #1
    b.ne    load_loop
loaded:
    cmp     x22, x23
    cset    x0, ne                      // exit status: 0 = every page read back what was stored
    mov     x8, #SYS_exit
    svc     #0
    dsb     nsh                         // OpenBSD: the kernel resumes after this barrier pair
    isb
    udf     #0xe1                       // exit returned: must not happen
