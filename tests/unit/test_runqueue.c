/* The local run queue: the owner pushes and pops while thieves steal half
 * at a time; every entry is taken exactly once. */
#include "testutil.h"

#include <pthread.h>
#include <stdlib.h>

#include "runtime/runqueue.h"

enum { ITEMS = 200000, THIEVES = 2 };

struct shared {
    struct kiln_runq q;
    _Atomic int done;
    _Atomic unsigned char *seen;
    _Atomic long taken;
};

static void take(struct shared *s, struct kiln_proc *p)
{
    uintptr_t i = (uintptr_t)p - 1;
    assert_true(i < ITEMS);
    unsigned char was = atomic_fetch_add(&s->seen[i], 1);
    assert_int_equal(was, 0);
    atomic_fetch_add(&s->taken, 1);
}

static void *thief(void *arg)
{
    struct shared *s = arg;
    struct kiln_runq *mine = malloc(sizeof(*mine));
    kiln_runq_init(mine);
    while (!atomic_load(&s->done)) {
        uint32_t n;
        struct kiln_proc *p = kiln_runq_steal(mine, &s->q, &n);
        if (!p)
            continue;
        take(s, p);
        while ((p = kiln_runq_pop(mine)))
            take(s, p);
    }
    free(mine);
    return NULL;
}

static void test_owner_and_thieves_take_each_once(void **state)
{
    (void)state;
    struct shared *s = calloc(1, sizeof(*s));
    s->seen = calloc(ITEMS, 1);
    kiln_runq_init(&s->q);
    pthread_t th[THIEVES];
    for (int i = 0; i < THIEVES; i++)
        pthread_create(&th[i], NULL, thief, s);
    uintptr_t next = 0;
    while (next < ITEMS) {
        /* Push a burst, pop a little, let thieves take the rest. */
        for (int k = 0; k < 100 && next < ITEMS; k++) {
            if (!kiln_runq_push(&s->q, (struct kiln_proc *)(next + 1)))
                break;
            next++;
        }
        struct kiln_proc *p = kiln_runq_pop(&s->q);
        if (p)
            take(s, p);
    }
    struct kiln_proc *p;
    while ((p = kiln_runq_pop(&s->q)))
        take(s, p);
    while (atomic_load(&s->taken) < ITEMS)
        ;
    atomic_store(&s->done, 1);
    for (int i = 0; i < THIEVES; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&s->taken), ITEMS);
    free((void *)s->seen);
    free(s);
}

static void test_full_queue_refuses_and_grab_half(void **state)
{
    (void)state;
    struct kiln_runq *q = malloc(sizeof(*q));
    kiln_runq_init(q);
    for (uintptr_t i = 0; i < KILN_RUNQ_SIZE; i++)
        assert_true(kiln_runq_push(q, (struct kiln_proc *)(i + 1)));
    assert_false(kiln_runq_push(q, (struct kiln_proc *)1));
    struct kiln_proc *batch[KILN_RUNQ_SIZE];
    uint32_t n = kiln_runq_grab_half(q, batch, KILN_RUNQ_SIZE);
    assert_int_equal(n, KILN_RUNQ_SIZE / 2);
    assert_ptr_equal(batch[0], (struct kiln_proc *)1);
    assert_int_equal(kiln_runq_len(q), KILN_RUNQ_SIZE / 2);
    free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_owner_and_thieves_take_each_once),
        cmocka_unit_test(test_full_queue_refuses_and_grab_half),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
