/* References and aliases. A local reference is a 64-bit number unique in
 * this OS process, spread over the first two of its words. An alias also
 * carries the pid it routes to in words three and four, so sending to an
 * alias needs no global table: the receiver checks that the alias is still
 * active when it drains the message. */
#include "alloc.h"
#include "rt.h"
#include "term_layout.h"
#include "tls.h"

#define KILN_REF_BLOCK 4096u

static _Atomic uint64_t ref_counter = 1;
static KILN_TLS uint64_t tl_next, tl_end;

uint64_t kiln_ref_next(kiln_rt *rt)
{
    (void)rt;
    /* Threads take blocks so make_ref does not bounce one cache line. */
    if (tl_next == tl_end) {
        tl_next = atomic_fetch_add_explicit(&ref_counter, KILN_REF_BLOCK, memory_order_relaxed);
        tl_end = tl_next + KILN_REF_BLOCK;
    }
    return tl_next++;
}

kiln_term kiln_ref_term(kiln_msg *m, kiln_rt *rt, uint64_t n, kiln_term alias_pid)
{
    uint64_t *p = m ? kiln_arena_alloc(m, 5) : NULL;
    return p ? kiln_ref_put(p, rt->node, rt->creation, n, alias_pid) : KILN_NONE;
}

bool kiln_ref_number(kiln_rt *rt, kiln_term ref, uint64_t *n, kiln_term *alias_pid)
{
    return kiln_ref_local(ref, rt->node, rt->creation, n, alias_pid);
}

kiln_term kiln_make_ref(kiln_msg *m)
{
    kiln_rt *rt = kiln_current_rt();
    if (!rt || !m)
        return KILN_NONE;
    return kiln_ref_term(m, rt, kiln_ref_next(rt), KILN_NONE);
}

int kiln_alias(bool reply_once, kiln_msg *ref_msg, kiln_term *alias)
{
    struct kiln_proc *p = kiln_current_proc();
    if (!p)
        return KILN_ENOTPROC;
    if (!ref_msg || !alias)
        return KILN_EINVAL;
    struct kiln_proc_ext *e = kiln_proc_ext(p);
    uint64_t n = kiln_ref_next(p->rt);
    kiln_term t = kiln_ref_term(ref_msg, p->rt, n, p->pid);
    uint64_t entry = n | (reply_once ? (1ull << 63) : 0);
    if (!e || kiln_is_none(t) || !kiln_vec_push(&e->aliases, &entry, sizeof(entry)))
        return KILN_ENOMEM;
    *alias = t;
    return KILN_OK;
}

int kiln_unalias(kiln_term alias)
{
    struct kiln_proc *p = kiln_current_proc();
    if (!p)
        return KILN_ENOTPROC;
    uint64_t n;
    kiln_term apid;
    if (!kiln_ref_number(p->rt, alias, &n, &apid) || apid != p->pid || !p->ext)
        return KILN_EBADARG;
    int i = kiln_alias_index(p->ext, n);
    if (i < 0)
        return KILN_EBADARG;
    kiln_vec_remove(&p->ext->aliases, (uint32_t)i, sizeof(uint64_t));
    return KILN_OK;
}

int kiln_alias_index(const struct kiln_proc_ext *e, uint64_t n)
{
    const uint64_t *a = e ? e->aliases.items : NULL;
    for (uint32_t i = 0; e && i < e->aliases.len; i++)
        if ((a[i] & ~(1ull << 63)) == n)
            return (int)i;
    return -1;
}
