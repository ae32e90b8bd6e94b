/* Registered names. An atom is a dense index, so the registry is an array
 * indexed by it: whereis is one atomic load, register and unregister one
 * CAS. The array is sized for the atom limit and costs only the pages that
 * names actually touch. */
#include <sys/mman.h>

#include "alloc.h"
#include "rt.h"

int kiln_registry_init(kiln_rt *rt)
{
    size_t cap = 1u << 20;
    void *p = mmap(NULL, cap * sizeof(kiln_term), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return KILN_ENOMEM;
    rt->names = p;
    rt->names_cap = cap;
    return KILN_OK;
}

void kiln_registry_fini(kiln_rt *rt)
{
    if (rt->names)
        munmap((void *)rt->names, rt->names_cap * sizeof(kiln_term));
    rt->names = NULL;
}

static _Atomic(kiln_term) *slot(kiln_rt *rt, kiln_term name)
{
    if (!kiln_is_atom(name) || name == KILN_ATOM_UNDEFINED)
        return NULL;
    uint32_t i = kiln_atom_index(name);
    return i < rt->names_cap ? &rt->names[i] : NULL;
}

kiln_term kiln_whereis(kiln_rt *rt, kiln_term name)
{
    _Atomic(kiln_term) *s = rt ? slot(rt, name) : NULL;
    kiln_term pid = s ? atomic_load_explicit(s, memory_order_acquire) : 0;
    return pid ? pid : KILN_NONE;
}

int kiln_register(kiln_rt *rt, kiln_term name, kiln_term pid)
{
    if (!rt)
        return KILN_EINVAL;
    _Atomic(kiln_term) *s = slot(rt, name);
    if (!s || !kiln_is_local_pid(pid))
        return KILN_EBADARG;
    int rc = KILN_OK;
    kiln_epoch_enter(rt);
    struct kiln_proc *p = kiln_ptab_lookup(rt, pid);
    struct kiln_proc_ext *e = p ? kiln_proc_ext(p) : NULL;
    if (!p) {
        rc = KILN_ENOPROC;
    } else if (!e) {
        rc = KILN_ENOMEM;
    } else {
        /* Under the process lock, against an exit that would miss the name. */
        kiln_proc_lock(p);
        kiln_term empty = 0;
        if (atomic_load_explicit(&p->flags, memory_order_acquire) & KILN_PF_EXITING)
            rc = KILN_ENOPROC;
        else if (!kiln_is_none(e->name))
            rc = KILN_EALREADY_REG;
        else if (!atomic_compare_exchange_strong_explicit(s, &empty, pid, memory_order_acq_rel,
                                                          memory_order_acquire))
            rc = KILN_ENAME_TAKEN;
        else
            e->name = name;
        kiln_proc_unlock(p);
    }
    kiln_epoch_exit(rt);
    return rc;
}

void kiln_registry_drop(kiln_rt *rt, kiln_term name, kiln_term pid)
{
    _Atomic(kiln_term) *s = slot(rt, name);
    kiln_term expect = pid;
    if (s)
        atomic_compare_exchange_strong_explicit(s, &expect, 0, memory_order_acq_rel, memory_order_acquire);
}

int kiln_unregister(kiln_rt *rt, kiln_term name)
{
    if (!rt)
        return KILN_EINVAL;
    _Atomic(kiln_term) *s = slot(rt, name);
    if (!s)
        return KILN_EBADARG;
    kiln_term pid = atomic_load_explicit(s, memory_order_acquire);
    if (!pid)
        return KILN_ENOTREG;
    int rc = KILN_ENOTREG;
    kiln_epoch_enter(rt);
    struct kiln_proc *p = kiln_ptab_lookup(rt, pid);
    if (p) {
        kiln_proc_lock(p);
        struct kiln_proc_ext *e = atomic_load_explicit(&p->ext, memory_order_acquire);
        if (e && e->name == name) {
            e->name = KILN_NONE;
            kiln_registry_drop(rt, name, pid);
            rc = KILN_OK;
        }
        kiln_proc_unlock(p);
    }
    kiln_epoch_exit(rt);
    return rc;
}
