/* The MPSC mailbox on its own: exactly-once delivery, per-producer order,
 * and the idle hand-off (each time the consumer goes idle, exactly one
 * later push reports it, so exactly one sender schedules it). */
#include "testutil.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

#include "runtime/mailbox.h"
#include "runtime/message.h"

enum { PRODUCERS = 4, PER_PRODUCER = 50000 };

struct shared {
    struct kiln_mailbox mb;
    _Atomic long wakes;        /* pushes that saw the idle bit */
    _Atomic int scheduled;     /* the consumer's "you were scheduled" flag */
};

struct producer {
    struct shared *s;
    unsigned id;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    for (unsigned i = 0; i < PER_PRODUCER; i++) {
        kiln_msg *m = kiln_msg_new_words(1);
        m->aux32 = p->id;
        m->root = kiln_small(i);
        if (kiln_mb_push(&p->s->mb.p, m) == KILN_MB_WAS_IDLE) {
            atomic_fetch_add(&p->s->wakes, 1);
            /* Exactly one pusher per idle period may see the bit. */
            int was = atomic_exchange(&p->s->scheduled, 1);
            if (was)
                abort();
        }
    }
    return NULL;
}

static void test_many_producers_exactly_once_in_order(void **state)
{
    (void)state;
    struct shared *s = calloc(1, sizeof(*s));
    kiln_mb_init(&s->mb.p, &s->mb.c);
    atomic_store(&s->scheduled, 1); /* starts active, as after spawn */
    pthread_t th[PRODUCERS];
    struct producer pr[PRODUCERS];
    for (unsigned i = 0; i < PRODUCERS; i++) {
        pr[i] = (struct producer){s, i};
        pthread_create(&th[i], NULL, produce, &pr[i]);
    }
    int64_t next[PRODUCERS] = {0};
    long got = 0, idles = 0;
    while (got < (long)PRODUCERS * PER_PRODUCER) {
        /* Like a drain: a pop that says it emptied the queue is followed
         * by the attempt to go idle, with no empty pop first. */
        bool emptied;
        kiln_msg *m = kiln_mb_pop_wait(&s->mb.p, &s->mb.c, &emptied);
        if (m) {
            unsigned id = m->aux32;
            assert_true(id < PRODUCERS);
            assert_int_equal(kiln_small_value(m->root), next[id]);
            next[id]++;
            got++;
            kiln_msg_free(m);
        }
        if (emptied && got < (long)PRODUCERS * PER_PRODUCER) {
            /* Empty: try to go idle; if that works wait to be "scheduled". */
            atomic_store(&s->scheduled, 0);
            if (kiln_mb_try_idle(&s->mb.p, &s->mb.c)) {
                idles++;
                while (!atomic_load(&s->scheduled))
                    ;
            } else {
                atomic_store(&s->scheduled, 1);
            }
        }
    }
    for (unsigned i = 0; i < PRODUCERS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(next[i], PER_PRODUCER);
    }
    assert_int_equal(atomic_load(&s->wakes), idles);
    assert_null(kiln_mb_pop_wait(&s->mb.p, &s->mb.c, NULL));
    free(s);
}

static void test_idle_then_push_reports_idle_once(void **state)
{
    (void)state;
    struct kiln_mailbox mb;
    kiln_mb_init(&mb.p, &mb.c);
    assert_true(kiln_mb_try_idle(&mb.p, &mb.c));
    assert_true(kiln_mb_is_idle(&mb.p));
    kiln_msg *a = kiln_msg_new_words(1), *b = kiln_msg_new_words(1);
    assert_int_equal(kiln_mb_push(&mb.p, a), KILN_MB_WAS_IDLE);
    assert_int_equal(kiln_mb_push(&mb.p, b), KILN_MB_WAS_ACTIVE);
    /* Not empty: cannot go idle. */
    assert_false(kiln_mb_try_idle(&mb.p, &mb.c));
    assert_ptr_equal(kiln_mb_pop_wait(&mb.p, &mb.c, NULL), a);
    assert_ptr_equal(kiln_mb_pop_wait(&mb.p, &mb.c, NULL), b);
    assert_null(kiln_mb_pop_wait(&mb.p, &mb.c, NULL));
    assert_true(kiln_mb_try_idle(&mb.p, &mb.c));
    kiln_msg_free(a);
    kiln_msg_free(b);
}

/* The pop that takes the last message says so; one with more behind it,
 * or with a push that came before it, does not. */
static void test_pop_tells_when_it_emptied_the_queue(void **state)
{
    (void)state;
    struct kiln_mailbox mb;
    kiln_mb_init(&mb.p, &mb.c);
    bool emptied = false;
    assert_null(kiln_mb_pop_wait(&mb.p, &mb.c, &emptied));
    assert_true(emptied);
    kiln_msg *a = kiln_msg_new_words(1), *b = kiln_msg_new_words(1), *c = kiln_msg_new_words(1);
    kiln_mb_push(&mb.p, a);
    kiln_mb_push(&mb.p, b);
    assert_ptr_equal(kiln_mb_pop_wait(&mb.p, &mb.c, &emptied), a);
    assert_false(emptied);
    assert_ptr_equal(kiln_mb_pop_wait(&mb.p, &mb.c, &emptied), b);
    assert_true(emptied);
    assert_true(kiln_mb_try_idle(&mb.p, &mb.c));
    /* After the stub went back in: a lone message, then one more. */
    kiln_mb_push(&mb.p, c);
    assert_ptr_equal(kiln_mb_pop_wait(&mb.p, &mb.c, &emptied), c);
    assert_true(emptied);
    kiln_mb_push(&mb.p, a);
    kiln_mb_push(&mb.p, b);
    assert_ptr_equal(kiln_mb_pop_wait(&mb.p, &mb.c, &emptied), a);
    assert_false(emptied);
    kiln_mb_push(&mb.p, c);
    assert_ptr_equal(kiln_mb_pop_wait(&mb.p, &mb.c, &emptied), b);
    assert_false(emptied);
    assert_ptr_equal(kiln_mb_pop_wait(&mb.p, &mb.c, &emptied), c);
    assert_true(emptied);
    assert_null(kiln_mb_pop_wait(&mb.p, &mb.c, &emptied));
    kiln_msg_free(a);
    kiln_msg_free(b);
    kiln_msg_free(c);
}

static void test_dead_mailbox_never_schedules(void **state)
{
    (void)state;
    struct kiln_mailbox mb;
    kiln_mb_init(&mb.p, &mb.c);
    assert_true(kiln_mb_try_idle(&mb.p, &mb.c));
    kiln_mb_mark_dead(&mb.p);
    kiln_msg *a = kiln_msg_new_words(1), *b = kiln_msg_new_words(1);
    assert_int_equal(kiln_mb_push(&mb.p, a), KILN_MB_WAS_DEAD);
    assert_int_equal(kiln_mb_push(&mb.p, b), KILN_MB_WAS_ACTIVE);
    /* Whoever reclaims the dead process still finds both, in order. */
    assert_ptr_equal(kiln_mb_pop_wait(&mb.p, &mb.c, NULL), a);
    assert_ptr_equal(kiln_mb_pop_wait(&mb.p, &mb.c, NULL), b);
    kiln_msg_free(a);
    kiln_msg_free(b);
}

/* An idle owner with an empty queue: one claimer takes its wake-up and
 * leaves the mailbox active; while it is active, after a push, or once it
 * is dead there is nothing to claim. */
static void test_idle_owner_claimed_once(void **state)
{
    (void)state;
    struct kiln_mailbox mb;
    kiln_mb_init(&mb.p, &mb.c);
    kiln_msg *a = kiln_msg_new_words(1), *b = kiln_msg_new_words(1);
    assert_false(kiln_mb_claim_idle(&mb.p, &mb.c)); /* active, as after spawn */

    assert_true(kiln_mb_try_idle(&mb.p, &mb.c));
    assert_true(kiln_mb_claim_idle(&mb.p, &mb.c));
    assert_false(kiln_mb_claim_idle(&mb.p, &mb.c));
    assert_false(kiln_mb_is_idle(&mb.p));
    assert_int_equal(kiln_mb_push(&mb.p, a), KILN_MB_WAS_ACTIVE);
    assert_false(kiln_mb_try_idle(&mb.p, &mb.c));
    assert_ptr_equal(kiln_mb_pop_wait(&mb.p, &mb.c, NULL), a);

    assert_true(kiln_mb_try_idle(&mb.p, &mb.c));
    assert_int_equal(kiln_mb_push(&mb.p, a), KILN_MB_WAS_IDLE);
    assert_false(kiln_mb_claim_idle(&mb.p, &mb.c));
    assert_ptr_equal(kiln_mb_pop_wait(&mb.p, &mb.c, NULL), a);

    assert_true(kiln_mb_try_idle(&mb.p, &mb.c));
    kiln_mb_mark_dead(&mb.p);
    assert_false(kiln_mb_claim_idle(&mb.p, &mb.c));
    assert_int_equal(kiln_mb_push(&mb.p, b), KILN_MB_WAS_DEAD);
    assert_ptr_equal(kiln_mb_pop_wait(&mb.p, &mb.c, NULL), b);
    kiln_msg_free(a);
    kiln_msg_free(b);
}

/* Claimers and pushers racing for an idle owner's wake-up: each time it
 * sleeps, exactly one of them gets it. */
enum { RACERS = 3, SLEEPS = 3000 };

struct race {
    struct kiln_mailbox mb;
    _Atomic unsigned round;      /* the owner's sleep being raced for */
    _Atomic unsigned done[RACERS];
    _Atomic long winners;
    _Atomic int stop;
};

struct racer {
    struct race *r;
    unsigned id;
};

static void *race_for_it(void *arg)
{
    struct racer *me = arg;
    struct race *r = me->r;
    unsigned seen = 0;
    while (!atomic_load(&r->stop)) {
        unsigned round = atomic_load(&r->round);
        if (round == seen) {
            sched_yield(); /* two cores here: let the owner and the others run */
            continue;
        }
        seen = round;
        bool won;
        if (me->id % 2) {
            won = kiln_mb_claim_idle(&r->mb.p, &r->mb.c);
        } else {
            kiln_msg *m = kiln_msg_new_words(1);
            won = kiln_mb_push(&r->mb.p, m) == KILN_MB_WAS_IDLE;
        }
        if (won)
            atomic_fetch_add(&r->winners, 1);
        atomic_store(&r->done[me->id], round);
    }
    return NULL;
}

static void test_idle_wake_up_goes_to_exactly_one(void **state)
{
    (void)state;
    struct race *r = calloc(1, sizeof(*r));
    kiln_mb_init(&r->mb.p, &r->mb.c);
    pthread_t th[RACERS];
    struct racer rc[RACERS];
    for (unsigned i = 0; i < RACERS; i++) {
        rc[i] = (struct racer){r, i};
        pthread_create(&th[i], NULL, race_for_it, &rc[i]);
    }
    for (unsigned round = 1; round <= SLEEPS; round++) {
        kiln_msg *m;
        while ((m = kiln_mb_pop_wait(&r->mb.p, &r->mb.c, NULL)))
            kiln_msg_free(m);
        assert_true(kiln_mb_try_idle(&r->mb.p, &r->mb.c));
        atomic_store(&r->round, round);
        for (unsigned i = 0; i < RACERS; i++)
            while (atomic_load(&r->done[i]) != round)
                sched_yield();
        assert_int_equal(atomic_load(&r->winners), round);
    }
    atomic_store(&r->stop, 1);
    for (unsigned i = 0; i < RACERS; i++)
        pthread_join(th[i], NULL);
    kiln_msg *m;
    while ((m = kiln_mb_pop_wait(&r->mb.p, &r->mb.c, NULL)))
        kiln_msg_free(m);
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_producers_exactly_once_in_order),
        cmocka_unit_test(test_idle_then_push_reports_idle_once),
        cmocka_unit_test(test_pop_tells_when_it_emptied_the_queue),
        cmocka_unit_test(test_dead_mailbox_never_schedules),
        cmocka_unit_test(test_idle_owner_claimed_once),
        cmocka_unit_test(test_idle_wake_up_goes_to_exactly_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
