/* Loads the installed shared library at run time, as a language binding
 * does: it must load (its thread-locals fit the little static TLS a
 * dlopen'ed library may take), export the public API and nothing else,
 * and run processes whose threads use its per-thread tables. */
#include <dlfcn.h>
#include <stdio.h>

#include <kiln/kiln.h>

static void *lib;
static int failures;

static void *need(const char *name)
{
    void *f = dlsym(lib, name);
    if (!f) {
        fprintf(stderr, "dlopen test: %s is not exported\n", name);
        failures++;
    }
    return f;
}

static __typeof__(kiln_msg_new) *msg_new;
static __typeof__(kiln_msg_free) *msg_free;
static __typeof__(kiln_atom_c) *atom_c;

/* Message blocks (kept per thread once freed) and atom look-ups (memoised
 * per thread) on a worker thread. */
static void churn(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++) {
        msg_free(msg_new(64));
        (void)atom_c(i % 2 ? "dlopen_a" : "dlopen_b");
    }
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen test: %s\n", dlerror());
        return 1;
    }
    static const char *internal[] = {"kiln_proc_deliver", "kiln_mb_push", "kiln_fiber_switch", "kiln_current_worker"};
    for (size_t i = 0; i < sizeof internal / sizeof *internal; i++)
        if (dlsym(lib, internal[i])) {
            fprintf(stderr, "dlopen test: internal %s is exported\n", internal[i]);
            failures++;
        }
    __typeof__(kiln_rt_start) *start = need("kiln_rt_start");
    __typeof__(kiln_rt_stop) *stop = need("kiln_rt_stop");
    __typeof__(kiln_rt_wait_idle) *wait_idle = need("kiln_rt_wait_idle");
    __typeof__(kiln_spawn_fn) *spawn_fn = need("kiln_spawn_fn");
    __typeof__(kiln_strerror) *strerror_fn = need("kiln_strerror");
    msg_new = need("kiln_msg_new");
    msg_free = need("kiln_msg_free");
    atom_c = need("kiln_atom_c");
    if (failures)
        return 1;
    kiln_rt *rt;
    int rc = start(NULL, &rt);
    if (rc != KILN_OK) {
        fprintf(stderr, "dlopen test: kiln_rt_start: %s\n", strerror_fn(rc));
        return 1;
    }
    for (int i = 0; i < 8 && rc == KILN_OK; i++) {
        kiln_term pid;
        rc = spawn_fn(rt, churn, NULL, NULL, &pid);
    }
    if (rc == KILN_OK)
        rc = wait_idle(rt, 5000);
    int stop_rc = stop(rt);
    printf("dlopen'ed kiln: %s\n", rc == KILN_OK && stop_rc == KILN_OK ? "ok" : strerror_fn(rc ? rc : stop_rc));
    return rc == KILN_OK && stop_rc == KILN_OK ? 0 : 1;
}
