/* Fibers: a stack plus a saved stack pointer. Processes block by switching
 * from their fiber back to the worker's scheduler context. */
#ifndef KILN_RUNTIME_FIBER_H
#define KILN_RUNTIME_FIBER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kiln_fiber {
    void *sp;              /* saved stack pointer while not running */
    void *stack_lo;        /* lowest usable byte (just above the guard page) */
    size_t stack_size;     /* usable bytes */
    void *map_base;        /* mmap base (guard page included); NULL for a thread's own stack */
    size_t map_size;
    struct kiln_fiber *pool_next;
    void *tsan_fiber;
    void *asan_fake_stack;
    unsigned valgrind_id;
};

typedef void (*kiln_fiber_entry)(void *arg);

/* A fiber for the calling thread's own stack (the scheduler context). */
void kiln_fiber_init_thread(struct kiln_fiber *f);
void kiln_fiber_fini_thread(struct kiln_fiber *f);
/* A new stack of size bytes (rounded to pages) with a guard page below. */
struct kiln_fiber *kiln_fiber_create(size_t size);
void kiln_fiber_destroy(struct kiln_fiber *f);
/* Arrange for the next switch into f to call entry(arg) on a fresh stack.
 * Also used to recycle a fiber whose previous frames were abandoned. */
void kiln_fiber_prepare(struct kiln_fiber *f, kiln_fiber_entry entry, void *arg);
/* Switch from the running fiber `from` to `to`. Returns when something
 * switches back to `from`. abandon: `from` will never be resumed (lets
 * ASan drop its fake stack). */
void kiln_fiber_jump(struct kiln_fiber *from, struct kiln_fiber *to, bool abandon);
/* Called first thing in a fiber's entry function (sanitizer bookkeeping). */
void kiln_fiber_started(struct kiln_fiber *self);
/* True if addr lies in f's guard page (stack overflow). */
bool kiln_fiber_guard_hit(const struct kiln_fiber *f, const void *addr);

#endif
