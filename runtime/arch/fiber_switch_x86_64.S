/* kiln_fiber_switch(void **save_sp, void *new_sp): save the callee-saved
 * registers (System V) and the SSE/x87 control words on the current stack,
 * store the stack pointer in *save_sp, load new_sp and restore the other
 * side. A handful of instructions, no syscall (unlike swapcontext). */
    .text
    .globl kiln_fiber_switch
    .hidden kiln_fiber_switch
    .type kiln_fiber_switch,@function
    .p2align 4
kiln_fiber_switch:
    .cfi_startproc
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .cfi_endproc
    .size kiln_fiber_switch,.-kiln_fiber_switch

/* First frame of a new fiber: the prepared stack "returns" here with the
 * entry function in r12 and its argument in r13. The entry never returns. */
    .globl kiln_fiber_trampoline
    .hidden kiln_fiber_trampoline
    .type kiln_fiber_trampoline,@function
    .p2align 4
kiln_fiber_trampoline:
    .cfi_startproc
    .cfi_undefined rip
    movq %r13, %rdi
    callq *%r12
    ud2
    .cfi_endproc
    .size kiln_fiber_trampoline,.-kiln_fiber_trampoline

    .section .note.GNU-stack,"",@progbits
