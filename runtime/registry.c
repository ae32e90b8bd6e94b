/* Registered names. An atom is a dense index, so the registry is a table
 * indexed by it: whereis is two atomic loads, register and unregister one
 * CAS. The table has two levels so that it covers every possible atom
 * (2^28) while costing memory only for the ranges that names use; a leaf
 * is installed with a CAS the first time a name in its range registers. */
#include "alloc.h"
#include "rt.h"

#define LEAF_BITS 14u
#define LEAF_SIZE (1u << LEAF_BITS)
#define ROOT_SIZE (1u << 14) /* LEAF_SIZE * ROOT_SIZE = 2^28 atoms */

int kiln_registry_init(kiln_rt *rt)
{
    rt->names = kiln_calloc(ROOT_SIZE, sizeof(*rt->names));
    return rt->names ? KILN_OK : KILN_ENOMEM;
}

void kiln_registry_fini(kiln_rt *rt)
{
    if (!rt->names)
        return;
    for (size_t i = 0; i < ROOT_SIZE; i++)
        kiln_free(atomic_load_explicit(&rt->names[i], memory_order_relaxed));
    kiln_free(rt->names);
    rt->names = NULL;
}

static _Atomic(kiln_term) *slot(kiln_rt *rt, kiln_term name, bool create)
{
    if (!kiln_is_atom(name) || name == KILN_ATOM_UNDEFINED)
        return NULL;
    uint32_t i = kiln_atom_index(name);
    if ((i >> LEAF_BITS) >= ROOT_SIZE)
        return NULL;
    _Atomic(kiln_term) *leaf = atomic_load_explicit(&rt->names[i >> LEAF_BITS], memory_order_acquire);
    if (!leaf && create) {
        _Atomic(kiln_term) *fresh = kiln_calloc(LEAF_SIZE, sizeof(*fresh));
        if (!fresh)
            return NULL;
        if (atomic_compare_exchange_strong_explicit(&rt->names[i >> LEAF_BITS], &leaf, fresh,
                                                    memory_order_acq_rel, memory_order_acquire))
            leaf = fresh;
        else
            kiln_free(fresh);
    }
    return leaf ? &leaf[i & (LEAF_SIZE - 1)] : NULL;
}

kiln_term kiln_whereis(kiln_rt *rt, kiln_term name)
{
    _Atomic(kiln_term) *s = rt ? slot(rt, name, false) : NULL;
    kiln_term pid = s ? atomic_load_explicit(s, memory_order_acquire) : 0;
    return pid ? pid : KILN_NONE;
}

int kiln_register(kiln_rt *rt, kiln_term name, kiln_term pid)
{
    if (!rt)
        return KILN_EINVAL;
    if (!kiln_is_atom(name) || name == KILN_ATOM_UNDEFINED || !kiln_is_local_pid(pid))
        return KILN_EBADARG;
    _Atomic(kiln_term) *s = slot(rt, name, true);
    if (!s)
        return KILN_ENOMEM;
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
    _Atomic(kiln_term) *s = slot(rt, name, false);
    kiln_term expect = pid;
    if (s)
        atomic_compare_exchange_strong_explicit(s, &expect, 0, memory_order_acq_rel, memory_order_acquire);
}

int kiln_unregister(kiln_rt *rt, kiln_term name)
{
    if (!rt)
        return KILN_EINVAL;
    if (!kiln_is_atom(name) || name == KILN_ATOM_UNDEFINED)
        return KILN_EBADARG;
    _Atomic(kiln_term) *s = slot(rt, name, false);
    kiln_term pid = s ? atomic_load_explicit(s, memory_order_acquire) : 0;
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
