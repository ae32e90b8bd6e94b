/* Registered names: register/whereis/unregister and their errors (as
 * Erlang's register/2 and unregister/1 define them), names freed at exit,
 * sends to names, the register_as spawn option, and a register race. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "testutil.h"

#define WAIT_MS 5000

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static kiln_term atom(const char *s)
{
    kiln_term a = kiln_atom_c(s);
    assert_false(kiln_is_none(a));
    return a;
}

static bool wait_dead(kiln_rt *rt, kiln_term pid, int ms)
{
    for (int i = 0; i <= ms; i++) {
        if (!kiln_is_alive(rt, pid))
            return true;
        nap_ms(1);
    }
    return false;
}

static bool wait_procs(kiln_rt *rt, size_t n, int ms)
{
    for (int i = 0; i <= ms; i++) {
        if (kiln_rt_process_count(rt) == n)
            return true;
        nap_ms(1);
    }
    return false;
}

/* ---- a process that records {msg, N} and leaves on stop ---- */

struct inbox {
    _Atomic long n;
    _Atomic int64_t last;
};

static void inbox_body(void *arg)
{
    struct inbox *b = arg;
    for (;;) {
        kiln_msg *m = NULL;
        if (kiln_receive(NULL, NULL, -1, &m) != KILN_OK)
            return;
        kiln_term t = kiln_msg_term(m);
        int64_t v;
        bool stop = t == kiln_atom_c("stop");
        if (b && kiln_match(t, "{msg,~i}", &v) == KILN_OK) {
            atomic_store(&b->last, v);
            atomic_fetch_add(&b->n, 1);
        }
        kiln_msg_free(m);
        if (stop)
            return;
    }
}

static kiln_term spawn_inbox(kiln_rt *rt, struct inbox *b, const char *name)
{
    if (b)
        memset(b, 0, sizeof(*b));
    kiln_spawn_opts o;
    memset(&o, 0, sizeof o);
    o.register_as = name;
    kiln_term pid = KILN_NONE;
    assert_int_equal(kiln_spawn_fn(rt, inbox_body, b, &o, &pid), KILN_OK);
    return pid;
}

static void stop_and_wait(kiln_rt *rt, kiln_term pid)
{
    assert_int_equal(kiln_rt_send(rt, pid, kiln_test_msg("stop")), KILN_OK);
    assert_true(wait_dead(rt, pid, WAIT_MS));
}

/* ======================= basics ======================= */

static void test_register_whereis_unregister(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    kiln_term name = atom("rg_basic");
    kiln_term pid = spawn_inbox(rt, NULL, NULL);
    assert_true(kiln_is_none(kiln_whereis(rt, name)));
    assert_int_equal(kiln_register(rt, name, pid), KILN_OK);
    assert_true(kiln_whereis(rt, name) == pid);
    kiln_proc_info info;
    assert_int_equal(kiln_process_info(rt, pid, &info), KILN_OK);
    assert_true(info.registered_name == name);
    assert_int_equal(kiln_unregister(rt, name), KILN_OK);
    assert_true(kiln_is_none(kiln_whereis(rt, name)));
    assert_int_equal(kiln_process_info(rt, pid, &info), KILN_OK);
    assert_true(kiln_is_none(info.registered_name));
    /* The process may take a name again after unregistering. */
    assert_int_equal(kiln_register(rt, atom("rg_basic_2"), pid), KILN_OK);
    assert_true(kiln_whereis(rt, atom("rg_basic_2")) == pid);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* The name is released when its process exits, and can be taken again. */
static void test_name_released_on_exit(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    kiln_term name = atom("rg_exit");
    kiln_term p1 = spawn_inbox(rt, NULL, NULL);
    assert_int_equal(kiln_register(rt, name, p1), KILN_OK);
    stop_and_wait(rt, p1);
    assert_true(kiln_is_none(kiln_whereis(rt, name)));
    assert_int_equal(kiln_unregister(rt, name), KILN_ENOTREG);
    kiln_term p2 = spawn_inbox(rt, NULL, NULL);
    assert_int_equal(kiln_register(rt, name, p2), KILN_OK);
    assert_true(kiln_whereis(rt, name) == p2);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* A killed process releases its name too. */
struct kill_ctx {
    kiln_term target;
    _Atomic int rc;
};

static void kill_body(void *arg)
{
    struct kill_ctx *c = arg;
    atomic_store(&c->rc, kiln_exit(c->target, KILN_ATOM_KILL));
}

static void test_name_released_when_killed(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    kiln_term name = atom("rg_killed");
    kiln_term pid = spawn_inbox(rt, NULL, "rg_killed");
    assert_true(kiln_whereis(rt, name) == pid);
    static struct kill_ctx k;
    k.target = pid;
    atomic_store(&k.rc, -999);
    kiln_test_run_in_process(rt, kill_body, &k, WAIT_MS);
    assert_int_equal(atomic_load(&k.rc), KILN_OK);
    assert_true(wait_dead(rt, pid, WAIT_MS));
    assert_true(kiln_is_none(kiln_whereis(rt, name)));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* A process that unregistered its name and exits later must not take the
 * name away from its new owner. */
static void test_exit_after_unregister_keeps_new_owner(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    kiln_term name = atom("rg_handover");
    kiln_term p1 = spawn_inbox(rt, NULL, NULL), p2 = spawn_inbox(rt, NULL, NULL);
    assert_int_equal(kiln_register(rt, name, p1), KILN_OK);
    assert_int_equal(kiln_unregister(rt, name), KILN_OK);
    assert_int_equal(kiln_register(rt, name, p2), KILN_OK);
    stop_and_wait(rt, p1);
    assert_true(kiln_whereis(rt, name) == p2);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* ======================= errors ======================= */

static void test_register_taken_name(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    kiln_term name = atom("rg_taken");
    kiln_term p1 = spawn_inbox(rt, NULL, NULL), p2 = spawn_inbox(rt, NULL, NULL);
    assert_int_equal(kiln_register(rt, name, p1), KILN_OK);
    assert_int_equal(kiln_register(rt, name, p2), KILN_ENAME_TAKEN);
    assert_true(kiln_whereis(rt, name) == p1);
    kiln_proc_info info;
    assert_int_equal(kiln_process_info(rt, p2, &info), KILN_OK);
    assert_true(kiln_is_none(info.registered_name));
    /* p2 is still free to take another name. */
    assert_int_equal(kiln_register(rt, atom("rg_taken_other"), p2), KILN_OK);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

static void test_register_second_name_already_registered(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    kiln_term n1 = atom("rg_first"), n2 = atom("rg_second");
    kiln_term pid = spawn_inbox(rt, NULL, NULL);
    assert_int_equal(kiln_register(rt, n1, pid), KILN_OK);
    assert_int_equal(kiln_register(rt, n2, pid), KILN_EALREADY_REG);
    assert_true(kiln_is_none(kiln_whereis(rt, n2)));
    assert_true(kiln_whereis(rt, n1) == pid);
    /* Registering the same name twice is also refused (Erlang: badarg). */
    assert_int_not_equal(kiln_register(rt, n1, pid), KILN_OK);
    assert_true(kiln_whereis(rt, n1) == pid);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

static void empty_body(void *arg) { (void)arg; }

static void test_register_dead_pid_enoproc(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    kiln_term name = atom("rg_dead");
    kiln_term pid;
    assert_int_equal(kiln_spawn_fn(rt, empty_body, NULL, NULL, &pid), KILN_OK);
    assert_true(wait_dead(rt, pid, WAIT_MS));
    assert_int_equal(kiln_register(rt, name, pid), KILN_ENOPROC);
    assert_true(kiln_is_none(kiln_whereis(rt, name)));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

static void test_unregister_free_name_enotreg(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    assert_int_equal(kiln_unregister(rt, atom("rg_never_taken")), KILN_ENOTREG);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

static void test_register_bad_names(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    kiln_term pid = spawn_inbox(rt, NULL, NULL);
    assert_int_equal(kiln_register(rt, KILN_ATOM_UNDEFINED, pid), KILN_EBADARG);
    assert_true(kiln_is_none(kiln_whereis(rt, KILN_ATOM_UNDEFINED)));
    assert_int_equal(kiln_register(rt, kiln_small(42), pid), KILN_EBADARG);
    assert_int_equal(kiln_register(rt, KILN_NIL, pid), KILN_EBADARG);
    /* A name that is not a pid as the process. */
    assert_int_equal(kiln_register(rt, atom("rg_not_a_pid"), atom("rg_x")), KILN_EBADARG);
    assert_true(kiln_is_none(kiln_whereis(rt, atom("rg_not_a_pid"))));
    /* The failed attempts left the process free to register. */
    assert_int_equal(kiln_register(rt, atom("rg_bad_then_good"), pid), KILN_OK);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* ======================= sending to names ======================= */

struct send_ctx {
    kiln_term to;
    _Atomic int rc, rc_missing;
};

static void send_body(void *arg)
{
    struct send_ctx *c = arg;
    kiln_msg *m = kiln_msg_new(32);
    if (m)
        kiln_msg_set_term(m, kiln_build(m, "{msg,~i}", (int64_t)17));
    atomic_store(&c->rc, kiln_send(c->to, m));
    m = kiln_msg_new(32);
    if (m)
        kiln_msg_set_term(m, kiln_build(m, "{msg,~i}", (int64_t)18));
    atomic_store(&c->rc_missing, kiln_send(kiln_atom_c("rg_nobody_home"), m));
}

/* Sending to a registered name reaches its process; sending to a name
 * nobody holds is badarg. */
static void test_send_to_name(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct inbox b;
    static struct send_ctx c;
    kiln_term pid = spawn_inbox(rt, &b, NULL);
    assert_int_equal(kiln_register(rt, atom("rg_mailbox"), pid), KILN_OK);
    memset(&c, 0, sizeof c);
    c.to = atom("rg_mailbox");
    atomic_store(&c.rc, -999);
    atomic_store(&c.rc_missing, -999);
    kiln_test_run_in_process(rt, send_body, &c, WAIT_MS);
    assert_int_equal(atomic_load(&c.rc), KILN_OK);
    assert_int_equal(atomic_load(&c.rc_missing), KILN_EBADARG);
    assert_true(kiln_test_wait_count(&b.n, 1, WAIT_MS));
    assert_int_equal(atomic_load(&b.last), 17);
    assert_int_equal(atomic_load(&b.n), 1);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* The same from a thread outside the runtime, with kiln_rt_send. */
static void test_rt_send_to_name(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct inbox b;
    kiln_term pid = spawn_inbox(rt, &b, "rg_rt_mailbox");
    assert_true(kiln_whereis(rt, atom("rg_rt_mailbox")) == pid);
    assert_int_equal(kiln_rt_send(rt, atom("rg_rt_mailbox"), kiln_test_msg("{msg,5}")), KILN_OK);
    assert_int_equal(kiln_rt_send(rt, atom("rg_rt_nobody"), kiln_test_msg("{msg,6}")), KILN_EBADARG);
    assert_true(kiln_test_wait_count(&b.n, 1, WAIT_MS));
    assert_int_equal(atomic_load(&b.last), 5);
    /* {Name, node()} is the same destination. */
    kiln_msg *dest = kiln_msg_new(32);
    assert_non_null(dest);
    kiln_term to = kiln_tuple(dest, 2, atom("rg_rt_mailbox"), kiln_rt_node(rt));
    assert_int_equal(kiln_rt_send(rt, to, kiln_test_msg("{msg,7}")), KILN_OK);
    assert_true(kiln_test_wait_count(&b.n, 2, WAIT_MS));
    assert_int_equal(atomic_load(&b.last), 7);
    kiln_msg_free(dest);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* ======================= spawn register_as ======================= */

static void test_spawn_register_as(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    kiln_term name = atom("rg_spawned");
    kiln_term pid = spawn_inbox(rt, NULL, "rg_spawned");
    assert_true(kiln_whereis(rt, name) == pid);
    kiln_proc_info info;
    assert_int_equal(kiln_process_info(rt, pid, &info), KILN_OK);
    assert_true(info.registered_name == name);
    /* The name is taken: a second spawn with it fails and starts nothing. */
    size_t before = kiln_rt_process_count(rt);
    kiln_spawn_opts o;
    memset(&o, 0, sizeof o);
    o.register_as = "rg_spawned";
    kiln_term pid2 = KILN_NONE;
    assert_int_equal(kiln_spawn_fn(rt, inbox_body, NULL, &o, &pid2), KILN_ENAME_TAKEN);
    assert_int_equal(kiln_rt_process_count(rt), before);
    assert_true(kiln_whereis(rt, name) == pid);
    /* Once the owner is gone the name is free for the next spawn. */
    stop_and_wait(rt, pid);
    kiln_term pid3 = spawn_inbox(rt, NULL, "rg_spawned");
    assert_true(kiln_whereis(rt, name) == pid3);
    assert_true(pid3 != pid);
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* ======================= race ======================= */

#define NRACERS 8
#define NROUNDS 100

struct race {
    kiln_term name;
    _Atomic int go;
    _Atomic long ready, finished;
    _Atomic int rc[NRACERS];
    _Atomic uint64_t pid[NRACERS];
};

struct racer {
    struct race *r;
    int i;
};

static void racer_body(void *arg)
{
    struct racer *me = arg;
    struct race *r = me->r;
    kiln_rt *rt = kiln_current_rt();
    atomic_store(&r->pid[me->i], kiln_self());
    atomic_fetch_add(&r->ready, 1);
    while (!atomic_load(&r->go))
        kiln_yield();
    atomic_store(&r->rc[me->i], kiln_register(rt, r->name, kiln_self()));
    atomic_fetch_add(&r->finished, 1);
    /* Hold on to the name (or not) until told to stop. */
    inbox_body(NULL);
}

/* 8 processes register the same name at once: exactly one wins, the others
 * get KILN_ENAME_TAKEN, and the name points at the winner. 100 rounds. */
static void test_register_race_one_winner(void **state)
{
    (void)state;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct race r;
    static struct racer racers[NRACERS];
    for (int round = 0; round < NROUNDS; round++) {
        memset(&r, 0, sizeof r);
        char name[32];
        snprintf(name, sizeof name, "rg_race_%d", round % 4);
        r.name = atom(name);
        assert_true(kiln_is_none(kiln_whereis(rt, r.name)));
        for (int i = 0; i < NRACERS; i++) {
            racers[i] = (struct racer){&r, i};
            atomic_store(&r.rc[i], -999);
            assert_int_equal(kiln_spawn_fn(rt, racer_body, &racers[i], NULL, NULL), KILN_OK);
        }
        assert_true(kiln_test_wait_count(&r.ready, NRACERS, WAIT_MS));
        atomic_store(&r.go, 1);
        assert_true(kiln_test_wait_count(&r.finished, NRACERS, WAIT_MS));
        int winners = 0, taken = 0, winner = -1;
        for (int i = 0; i < NRACERS; i++) {
            int rc = atomic_load(&r.rc[i]);
            if (rc == KILN_OK) {
                winners++;
                winner = i;
            } else if (rc == KILN_ENAME_TAKEN) {
                taken++;
            } else {
                fail_msg("round %d: racer %d got %d (%s)", round, i, rc, kiln_strerror(rc));
            }
        }
        if (winners != 1)
            fail_msg("round %d: %d winners", round, winners);
        assert_int_equal(taken, NRACERS - 1);
        assert_true(kiln_whereis(rt, r.name) == atomic_load(&r.pid[winner]));
        for (int i = 0; i < NRACERS; i++)
            assert_int_equal(kiln_rt_send(rt, atomic_load(&r.pid[i]), kiln_test_msg("stop")), KILN_OK);
        assert_true(wait_procs(rt, 0, WAIT_MS));
        /* Names are reused across rounds: the winner's exit freed it. */
        assert_true(kiln_is_none(kiln_whereis(rt, r.name)));
    }
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

/* Any atom can be a registered name, also when the atom limit is raised
 * past its default (2^20) and the name's atom comes after the first 2^20.
 * Runs last: it leaves the process-wide atom table with ~2^20 atoms. */
static void test_register_name_with_high_atom_index(void **state)
{
    (void)state;
    const size_t want = ((size_t)1 << 20) + 64;
    assert_int_equal(kiln_atom_set_limit(want + 4096), KILN_OK);
    char buf[40];
    kiln_term last = KILN_NONE;
    for (size_t i = 0; kiln_atom_count() < want; i++) {
        snprintf(buf, sizeof buf, "rg_bulk_%zu", i);
        last = kiln_atom_c(buf);
        assert_false(kiln_is_none(last));
    }
    assert_true(kiln_atom_index(last) >= ((uint32_t)1 << 20));
    kiln_rt *rt = kiln_test_rt(2, NULL);
    static struct inbox b;
    kiln_term pid = spawn_inbox(rt, &b, NULL);
    int rc = kiln_register(rt, last, pid);
    print_message("register(atom #%u) -> %d (%s)\n", kiln_atom_index(last), rc, kiln_strerror(rc));
    assert_int_equal(rc, KILN_OK);
    assert_true(kiln_whereis(rt, last) == pid);
    kiln_msg *m = kiln_test_msg("{msg,3}");
    assert_int_equal(kiln_rt_send(rt, last, m), KILN_OK);
    assert_true(kiln_test_wait_count(&b.n, 1, WAIT_MS));
    assert_int_equal(kiln_rt_stop(rt), KILN_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register_whereis_unregister),
        cmocka_unit_test(test_name_released_on_exit),
        cmocka_unit_test(test_name_released_when_killed),
        cmocka_unit_test(test_exit_after_unregister_keeps_new_owner),
        cmocka_unit_test(test_register_taken_name),
        cmocka_unit_test(test_register_second_name_already_registered),
        cmocka_unit_test(test_register_dead_pid_enoproc),
        cmocka_unit_test(test_unregister_free_name_enotreg),
        cmocka_unit_test(test_register_bad_names),
        cmocka_unit_test(test_send_to_name),
        cmocka_unit_test(test_rt_send_to_name),
        cmocka_unit_test(test_spawn_register_as),
        cmocka_unit_test(test_register_race_one_winner),
        cmocka_unit_test(test_register_name_with_high_atom_index),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
