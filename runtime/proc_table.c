/* The process table: pid id -> process, with a per-slot serial so that a
 * pid of a dead process never matches the slot's next occupant. Reads are
 * one atomic load; ids are handed out fresh first, then recycled. */
#include <string.h>
#include <sys/mman.h>

#include "alloc.h"
#include "rt.h"

static void *map_zeroed(size_t bytes)
{
    /* Untouched pages cost nothing, so the table can be sized for the
     * configured maximum up front. */
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

int kiln_ptab_init(kiln_rt *rt)
{
    size_t n = rt->max_procs;
    rt->slots = map_zeroed(n * sizeof(*rt->slots));
    rt->serials = map_zeroed(n * sizeof(*rt->serials));
    rt->free_ids = map_zeroed(n * sizeof(*rt->free_ids));
    if (!rt->slots || !rt->serials || !rt->free_ids) {
        kiln_ptab_fini(rt);
        return KILN_ENOMEM;
    }
    /* Id 0 is reserved so that no pid is the all-zero word <0.0.0>. */
    atomic_store(&rt->next_fresh_id, 1);
    rt->free_ids_len = 0;
    pthread_mutex_init(&rt->free_ids_lock, NULL);
    return KILN_OK;
}

void kiln_ptab_fini(kiln_rt *rt)
{
    size_t n = rt->max_procs;
    if (rt->slots)
        munmap(rt->slots, n * sizeof(*rt->slots));
    if (rt->serials)
        munmap(rt->serials, n * sizeof(*rt->serials));
    if (rt->free_ids)
        munmap(rt->free_ids, n * sizeof(*rt->free_ids));
    rt->slots = NULL;
    rt->serials = NULL;
    rt->free_ids = NULL;
}

int kiln_ptab_add(kiln_rt *rt, struct kiln_proc *p)
{
    uint32_t id = atomic_fetch_add(&rt->next_fresh_id, 1);
    if (id >= rt->max_procs) {
        atomic_fetch_sub(&rt->next_fresh_id, 1);
        pthread_mutex_lock(&rt->free_ids_lock);
        if (rt->free_ids_len == 0) {
            pthread_mutex_unlock(&rt->free_ids_lock);
            return KILN_ESYSTEM_LIMIT;
        }
        id = rt->free_ids[--rt->free_ids_len];
        pthread_mutex_unlock(&rt->free_ids_lock);
    }
    p->pid = kiln_local_pid(id, rt->serials[id]);
    atomic_store_explicit(&rt->slots[id], p, memory_order_release);
    return KILN_OK;
}

void kiln_ptab_remove(kiln_rt *rt, struct kiln_proc *p)
{
    uint32_t id = kiln_local_pid_id(p->pid);
    atomic_store_explicit(&rt->slots[id], NULL, memory_order_release);
    rt->serials[id] = (rt->serials[id] + 1) & 0x1FFFFFFFu;
    /* Recycled ids are reused last-in-first-out; the serial bump above is
     * what keeps old pids from matching. */
    pthread_mutex_lock(&rt->free_ids_lock);
    rt->free_ids[rt->free_ids_len++] = id;
    pthread_mutex_unlock(&rt->free_ids_lock);
}

struct kiln_proc *kiln_ptab_lookup(kiln_rt *rt, kiln_term pid)
{
    if (!kiln_is_local_pid(pid))
        return NULL;
    uint32_t id = kiln_local_pid_id(pid);
    if (id >= rt->max_procs)
        return NULL;
    struct kiln_proc *p = atomic_load_explicit(&rt->slots[id], memory_order_acquire);
    if (!p || p->pid != pid)
        return NULL;
    return p;
}
