/* CPU hints for spin loops. */
#ifndef KILN_RUNTIME_CPU_H
#define KILN_RUNTIME_CPU_H

static inline void kiln_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

#define KILN_CACHELINE 64

#include <stdatomic.h>

/* A StoreLoad barrier, for the two sides of the park/wake handshake. GCC's
 * ThreadSanitizer refuses atomic_thread_fence, so sanitizer builds use a
 * seq_cst read-modify-write instead (which TSan models). */
static inline void kiln_full_fence(void)
{
#if defined(KILN_TSAN) || defined(__SANITIZE_THREAD__)
    static _Atomic int fence_word;
    atomic_fetch_add_explicit(&fence_word, 0, memory_order_seq_cst);
#else
    atomic_thread_fence(memory_order_seq_cst);
#endif
}

#endif
