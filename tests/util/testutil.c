#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

const char *kiln_test_data_path(const char *name, char *buf, size_t size)
{
    const char *dir = getenv("KILN_TEST_DATA");
    snprintf(buf, size, "%s/%s", dir ? dir : "tests/data", name);
    return buf;
}

kiln_rt *kiln_test_rt(unsigned workers, const kiln_rt_config *cfg)
{
    kiln_rt_config c;
    if (cfg)
        c = *cfg;
    else
        kiln_rt_config_init(&c);
    if (workers)
        c.workers = workers;
    kiln_rt *rt = NULL;
    int rc = kiln_rt_start(&c, &rt);
    if (rc != KILN_OK)
        fail_msg("kiln_rt_start: %s", kiln_strerror(rc));
    return rt;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

bool kiln_test_wait_flag(_Atomic int *flag, int ms)
{
    for (int i = 0; i < ms; i++) {
        if (atomic_load(flag))
            return true;
        sleep_ms(1);
    }
    return atomic_load(flag) != 0;
}

bool kiln_test_wait_count(_Atomic long *counter, long target, int ms)
{
    for (int i = 0; i < ms; i++) {
        if (atomic_load(counter) >= target)
            return true;
        sleep_ms(1);
    }
    return atomic_load(counter) >= target;
}

struct run_ctx {
    void (*fn)(void *);
    void *arg;
    _Atomic int done;
};

static void run_body(void *a)
{
    struct run_ctx *c = a;
    c->fn(c->arg);
    atomic_store(&c->done, 1);
}

void kiln_test_run_in_process(kiln_rt *rt, void (*fn)(void *), void *arg, int ms)
{
    struct run_ctx *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->fn = fn;
    c->arg = arg;
    kiln_term pid;
    assert_int_equal(kiln_spawn_fn(rt, run_body, c, NULL, &pid), KILN_OK);
    if (!kiln_test_wait_flag(&c->done, ms))
        fail_msg("process did not finish within %d ms", ms);
    free(c);
}

kiln_msg *kiln_test_msg(const char *fmt, ...)
{
    kiln_msg *m = kiln_msg_new(256);
    assert_non_null(m);
    va_list ap;
    va_start(ap, fmt);
    kiln_term t = kiln_vbuild(m, fmt, ap);
    va_end(ap);
    assert_false(kiln_is_none(t));
    kiln_msg_set_term(m, t);
    return m;
}

bool kiln_test_any(kiln_term t, void *arg)
{
    (void)t;
    (void)arg;
    return true;
}
