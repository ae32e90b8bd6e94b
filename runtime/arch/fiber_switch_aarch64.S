/* kiln_fiber_switch(void **save_sp, void *new_sp) for AArch64 (AAPCS64):
 * callee-saved x19-x30 and d8-d15 go on the stack, sp into *save_sp. */
    .text
    .globl kiln_fiber_switch
    .hidden kiln_fiber_switch
    .type kiln_fiber_switch,%function
    .p2align 4
kiln_fiber_switch:
    sub sp, sp, #176
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp x29, x30, [sp, #80]
    stp d8, d9, [sp, #96]
    stp d10, d11, [sp, #112]
    stp d12, d13, [sp, #128]
    stp d14, d15, [sp, #144]
    mrs x9, fpcr
    str x9, [sp, #160]
    mov x9, sp
    str x9, [x0]
    mov sp, x1
    ldp x19, x20, [sp, #0]
    ldp x21, x22, [sp, #16]
    ldp x23, x24, [sp, #32]
    ldp x25, x26, [sp, #48]
    ldp x27, x28, [sp, #64]
    ldp x29, x30, [sp, #80]
    ldp d8, d9, [sp, #96]
    ldp d10, d11, [sp, #112]
    ldp d12, d13, [sp, #128]
    ldp d14, d15, [sp, #144]
    ldr x9, [sp, #160]
    msr fpcr, x9
    add sp, sp, #176
    ret
    .size kiln_fiber_switch,.-kiln_fiber_switch

/* A new fiber's first frame: x19 = entry, x20 = argument; x30 (the return
 * address restored above) points here. */
    .globl kiln_fiber_trampoline
    .hidden kiln_fiber_trampoline
    .type kiln_fiber_trampoline,%function
    .p2align 4
kiln_fiber_trampoline:
    mov x0, x20
    blr x19
    brk #0
    .size kiln_fiber_trampoline,.-kiln_fiber_trampoline

    .section .note.GNU-stack,"",%progbits
