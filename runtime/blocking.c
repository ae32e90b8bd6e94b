/* kiln_blocking: run a C call that blocks its thread (file I/O, DNS, a
 * lock) on a separate pool of threads while the calling process waits like
 * any blocked process, so the worker goes on running others. The pool
 * thread wakes the process with a WAKE signal that carries the result. */
#include <stdio.h>

#include "alloc.h"
#include "rt.h"

struct kiln_job {
    void *(*fn)(void *);
    void *arg;
    kiln_term pid;
    uint64_t id;
    struct kiln_job *next;
};

struct kiln_blocking_pool {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct kiln_job *head, *tail;
    bool stop;
    unsigned nthreads;
    pthread_t *threads;
    kiln_rt *rt;
};

static void *pool_main(void *arg)
{
    struct kiln_blocking_pool *bp = arg;
    for (;;) {
        pthread_mutex_lock(&bp->lock);
        while (!bp->head && !bp->stop)
            pthread_cond_wait(&bp->cond, &bp->lock);
        struct kiln_job *j = bp->head;
        if (!j) {
            pthread_mutex_unlock(&bp->lock);
            return NULL;
        }
        bp->head = j->next;
        if (!bp->head)
            bp->tail = NULL;
        pthread_mutex_unlock(&bp->lock);

        void *result = j->fn(j->arg);
        /* The wake is allocated after the call; if that fails there is no
         * way to tell the process, and it would wait forever. */
        kiln_msg *m = kiln_signal_new(KILN_MK_WAKE, 0);
        if (!m) {
            fprintf(stderr, "kiln: out of memory waking a process after a blocking call\n");
            abort();
        }
        m->aux = (kiln_term)j->id;
        m->from = (kiln_term)(uintptr_t)result; /* a WAKE carries the raw result here */
        kiln_deliver_pid(bp->rt, j->pid, m);
        kiln_free(j);
    }
}

int kiln_blocking_init(kiln_rt *rt)
{
    struct kiln_blocking_pool *bp = kiln_calloc(1, sizeof(*bp));
    if (!bp)
        return KILN_ENOMEM;
    pthread_mutex_init(&bp->lock, NULL);
    pthread_cond_init(&bp->cond, NULL);
    bp->rt = rt;
    bp->nthreads = rt->cfg.blocking_threads;
    bp->threads = kiln_calloc(bp->nthreads, sizeof(pthread_t));
    if (!bp->threads) {
        kiln_free(bp);
        return KILN_ENOMEM;
    }
    for (unsigned i = 0; i < bp->nthreads; i++) {
        if (pthread_create(&bp->threads[i], NULL, pool_main, bp) != 0) {
            bp->nthreads = i;
            rt->blocking = bp;
            kiln_blocking_fini(rt);
            return KILN_ESYS;
        }
    }
    rt->blocking = bp;
    return KILN_OK;
}

void kiln_blocking_fini(kiln_rt *rt)
{
    struct kiln_blocking_pool *bp = rt->blocking;
    if (!bp)
        return;
    pthread_mutex_lock(&bp->lock);
    bp->stop = true;
    pthread_cond_broadcast(&bp->cond);
    pthread_mutex_unlock(&bp->lock);
    for (unsigned i = 0; i < bp->nthreads; i++)
        pthread_join(bp->threads[i], NULL);
    kiln_free(bp->threads);
    pthread_mutex_destroy(&bp->lock);
    pthread_cond_destroy(&bp->cond);
    kiln_free(bp);
    rt->blocking = NULL;
}

int kiln_blocking(void *(*fn)(void *arg), void *arg, void **result)
{
    struct kiln_proc *p = kiln_current_proc();
    if (!p)
        return KILN_ENOTPROC;
    if (!fn)
        return KILN_EINVAL;
    struct kiln_blocking_pool *bp = p->rt->blocking;
    struct kiln_job *j = kiln_malloc(sizeof(*j));
    if (!j)
        return KILN_ENOMEM;
    j->fn = fn;
    j->arg = arg;
    j->pid = p->pid;
    j->id = kiln_ref_next(p->rt);
    j->next = NULL;
    uint64_t id = j->id;
    pthread_mutex_lock(&bp->lock);
    if (bp->stop) {
        pthread_mutex_unlock(&bp->lock);
        kiln_free(j);
        return KILN_ESTOPPED;
    }
    if (bp->tail)
        bp->tail->next = j;
    else
        bp->head = j;
    bp->tail = j;
    pthread_cond_signal(&bp->cond);
    pthread_mutex_unlock(&bp->lock);

    kiln_msg *m;
    int rc = kiln_wait_wake(p, id, -1, &m);
    if (rc != KILN_OK)
        return rc;
    if (result)
        *result = (void *)(uintptr_t)m->from;
    kiln_msg_free(m);
    return KILN_OK;
}
