/* Safe reclamation of process structs with ck_epoch. A sender looks a pid
 * up and pushes into its mailbox without a lock; the struct must outlive
 * every such sender. Workers hold an epoch section while they run a
 * process; an exited process is freed only after every section that could
 * have seen it has ended, and its last messages are answered then. */
#include "alloc.h"
#include "rt.h"

/* Inside a process run the worker already holds a section (scheduler.c)
 * that covers everything the process does, so nothing is needed there. */
void kiln_epoch_enter(kiln_rt *rt)
{
    struct kiln_worker *w = kiln_current_worker();
    if (w && w->rt == rt) {
        if (!w->running)
            ck_epoch_begin(&w->epoch, NULL);
        return;
    }
    /* Threads that are not workers share one record under a lock. */
    pthread_mutex_lock(&rt->foreign_lock);
    ck_epoch_begin(&rt->foreign_epoch, NULL);
}

void kiln_epoch_exit(kiln_rt *rt)
{
    struct kiln_worker *w = kiln_current_worker();
    KILN_TSAN_RELEASE(&rt->tsan_epoch_sync);
    if (w && w->rt == rt) {
        if (!w->running)
            ck_epoch_end(&w->epoch, NULL);
        return;
    }
    ck_epoch_end(&rt->foreign_epoch, NULL);
    pthread_mutex_unlock(&rt->foreign_lock);
}

static void retired(ck_epoch_entry_t *e)
{
    struct kiln_proc *p = (struct kiln_proc *)((char *)e - offsetof(struct kiln_proc, epoch_entry));
    struct kiln_worker *w = kiln_current_worker();
    p->grave_next = w->graveyard;
    w->graveyard = p;
}

void kiln_epoch_retire_proc(kiln_rt *rt, struct kiln_proc *p)
{
    struct kiln_worker *w = kiln_current_worker();
    /* Exits run on workers only; a process never exits on a foreign thread. */
    (void)rt;
    ck_epoch_call(&w->epoch, &p->epoch_entry, retired);
}

/* Free what the grace period released: first answer any link or monitor
 * request that reached the process after it died, so nobody waits forever. */
static void bury(struct kiln_worker *w)
{
    kiln_rt *rt = w->rt;
    struct kiln_proc *p = w->graveyard;
    w->graveyard = NULL;
    if (!p)
        return;
    KILN_TSAN_ACQUIRE(&rt->tsan_epoch_sync);
    kiln_epoch_enter(rt);
    while (p) {
        struct kiln_proc *next = p->grave_next;
        kiln_msg *m;
        while ((m = kiln_mb_pop_wait(&p->mb, &p->mbc, NULL)))
            kiln_signal_answer_dead(rt, p->pid, m);
        kiln_proc_free(p);
        p = next;
    }
    kiln_epoch_exit(rt);
}

void kiln_epoch_poll(struct kiln_worker *w)
{
    ck_epoch_poll(&w->epoch);
    bury(w);
}

void kiln_epoch_synchronize(kiln_rt *rt)
{
    pthread_mutex_lock(&rt->foreign_lock);
    ck_epoch_synchronize(&rt->foreign_epoch);
    pthread_mutex_unlock(&rt->foreign_lock);
    KILN_TSAN_ACQUIRE(&rt->tsan_epoch_sync);
}

/* At shutdown, after every worker has stopped: nothing can race now. */
void kiln_epoch_drain_all(kiln_rt *rt)
{
    for (unsigned i = 0; i < rt->nworkers; i++) {
        struct kiln_worker *w = &rt->workers[i];
        kiln_set_current_worker(w);
        ck_epoch_reclaim(&w->epoch);
        bury(w);
        kiln_set_current_worker(NULL);
    }
}
