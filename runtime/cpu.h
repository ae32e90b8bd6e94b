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

#endif
