/* Fiber stacks and the switch around the assembly primitive. The assembly
 * does the register work; this file keeps ASan, TSan and valgrind told
 * which stack is live, because all three otherwise misread a stack switch
 * as stack corruption or a data race. */
#include "fiber.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "alloc.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define KILN_HAVE_VALGRIND 1
#endif
#endif

#if defined(__SANITIZE_ADDRESS__) || defined(KILN_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define KILN_FIBER_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__) || defined(KILN_TSAN)
#include <sanitizer/tsan_interface.h>
#define KILN_FIBER_TSAN 1
#endif

void kiln_fiber_switch(void **save_sp, void *new_sp);
void kiln_fiber_trampoline(void);

static size_t page_size(void)
{
    /* Benign if two threads race to fill it, but keep it a real atomic. */
    static _Atomic size_t ps;
    size_t v = atomic_load_explicit(&ps, memory_order_relaxed);
    if (!v) {
        v = (size_t)sysconf(_SC_PAGESIZE);
        atomic_store_explicit(&ps, v, memory_order_relaxed);
    }
    return v;
}

void kiln_fiber_init_thread(struct kiln_fiber *f)
{
    memset(f, 0, sizeof(*f));
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        void *lo;
        size_t sz;
        if (pthread_attr_getstack(&attr, &lo, &sz) == 0) {
            f->stack_lo = lo;
            f->stack_size = sz;
        }
        pthread_attr_destroy(&attr);
    }
#ifdef KILN_FIBER_TSAN
    f->tsan_fiber = __tsan_get_current_fiber();
#endif
}

void kiln_fiber_fini_thread(struct kiln_fiber *f) { (void)f; }

struct kiln_fiber *kiln_fiber_create(size_t size)
{
    size_t ps = page_size();
    size = (size + ps - 1) & ~(ps - 1);
    if (size < 4 * ps)
        size = 4 * ps;
    struct kiln_fiber *f = kiln_calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->map_size = size + ps;
    /* MAP_NORESERVE + lazily faulted pages: an idle pooled stack costs only
     * the pages it has touched. */
    void *base = mmap(NULL, f->map_size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (base == MAP_FAILED) {
        kiln_free(f);
        return NULL;
    }
    if (mprotect(base, ps, PROT_NONE) != 0) {
        munmap(base, f->map_size);
        kiln_free(f);
        return NULL;
    }
    f->map_base = base;
    f->stack_lo = (char *)base + ps;
    f->stack_size = size;
#ifdef KILN_HAVE_VALGRIND
    f->valgrind_id = VALGRIND_STACK_REGISTER(f->stack_lo, (char *)f->stack_lo + size);
#endif
#ifdef KILN_FIBER_TSAN
    f->tsan_fiber = __tsan_create_fiber(0);
#endif
    return f;
}

void kiln_fiber_destroy(struct kiln_fiber *f)
{
    if (!f)
        return;
#ifdef KILN_HAVE_VALGRIND
    VALGRIND_STACK_DEREGISTER(f->valgrind_id);
#endif
#ifdef KILN_FIBER_TSAN
    __tsan_destroy_fiber(f->tsan_fiber);
#endif
#ifdef KILN_FIBER_ASAN
    __asan_unpoison_memory_region(f->stack_lo, f->stack_size);
#endif
    munmap(f->map_base, f->map_size);
    kiln_free(f);
}

void kiln_fiber_prepare(struct kiln_fiber *f, kiln_fiber_entry entry, void *arg)
{
#ifdef KILN_FIBER_ASAN
    /* Frames abandoned on this stack left their redzones poisoned. */
    __asan_unpoison_memory_region(f->stack_lo, f->stack_size);
#endif
#ifdef KILN_FIBER_TSAN
    /* TSan keeps a shadow call stack per fiber; abandoned frames never
     * return, so start a new one rather than let it grow without bound. */
    __tsan_destroy_fiber(f->tsan_fiber);
    f->tsan_fiber = __tsan_create_fiber(0);
#endif
    uintptr_t top = ((uintptr_t)f->stack_lo + f->stack_size) & ~(uintptr_t)15;
#if defined(__x86_64__)
    /* Layout popped by kiln_fiber_switch: control words, r15, r14, r13, r12,
     * rbx, rbp, return address. After `ret` rsp == top, 16-byte aligned, so
     * the trampoline's call gives the entry a standard frame. */
    uint64_t *sp = (uint64_t *)top;
    *--sp = (uint64_t)(uintptr_t)kiln_fiber_trampoline;
    *--sp = 0;                               /* rbp */
    *--sp = 0;                               /* rbx */
    *--sp = (uint64_t)(uintptr_t)entry;      /* r12 */
    *--sp = (uint64_t)(uintptr_t)arg;        /* r13 */
    *--sp = 0;                               /* r14 */
    *--sp = 0;                               /* r15 */
    *--sp = 0x0000037F00001F80ull;           /* mxcsr default | x87 control word default */
    f->sp = sp;
#elif defined(__aarch64__)
    uint64_t *sp = (uint64_t *)(top - 176);
    memset(sp, 0, 176);
    sp[0] = (uint64_t)(uintptr_t)entry;              /* x19 */
    sp[1] = (uint64_t)(uintptr_t)arg;                /* x20 */
    sp[11] = (uint64_t)(uintptr_t)kiln_fiber_trampoline; /* x30 */
    f->sp = sp;
#else
#error "no context switch for this architecture"
#endif
}

void kiln_fiber_jump(struct kiln_fiber *from, struct kiln_fiber *to, bool abandon)
{
#ifdef KILN_FIBER_ASAN
    __sanitizer_start_switch_fiber(abandon ? NULL : &from->asan_fake_stack, to->stack_lo, to->stack_size);
#else
    (void)abandon;
#endif
#ifdef KILN_FIBER_TSAN
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
    kiln_fiber_switch(&from->sp, to->sp);
#ifdef KILN_FIBER_ASAN
    __sanitizer_finish_switch_fiber(from->asan_fake_stack, NULL, NULL);
#endif
}

void kiln_fiber_started(struct kiln_fiber *self)
{
    (void)self;
#ifdef KILN_FIBER_ASAN
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
}

bool kiln_fiber_guard_hit(const struct kiln_fiber *f, const void *addr)
{
    if (!f || !f->map_base)
        return false;
    const char *a = addr;
    return a >= (const char *)f->map_base && a < (const char *)f->stack_lo;
}
