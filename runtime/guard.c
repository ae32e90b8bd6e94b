/* Stack overflow reports. Process stacks have a guard page; a fault in it
 * would otherwise be an anonymous SIGSEGV (sanitizers cannot report it
 * either: their handlers run into the same dead stack). Workers run a
 * handler on an alternate stack that names the process, then aborts: the
 * stack is gone, so there is nothing safe to continue with. Faults
 * elsewhere go to whatever handler was there before. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "rt.h"
#include "tls.h"

#define KILN_GUARD 1

#ifdef KILN_GUARD
static KILN_TLS void *alt_stack;
static struct sigaction prev_segv;

static void on_segv(int sig, siginfo_t *si, void *uctx)
{
    struct kiln_worker *w = kiln_current_worker();
    if (w && w->cur_fiber && kiln_fiber_guard_hit(w->cur_fiber, si->si_addr)) {
        char buf[128];
        kiln_term pid = w->running ? w->running->pid : KILN_NONE;
        int n = snprintf(buf, sizeof(buf), "kiln: stack overflow in process <0.%u.%u> (stack %zu bytes)\n",
                         kiln_local_pid_id(pid), kiln_local_pid_serial(pid), w->cur_fiber->stack_size);
        if (n > 0 && write(2, buf, (size_t)n) < 0)
            abort();
        abort();
    }
    /* Not ours: behave as if we were never here. */
    if (prev_segv.sa_flags & SA_SIGINFO && prev_segv.sa_sigaction)
        prev_segv.sa_sigaction(sig, si, uctx);
    else if (prev_segv.sa_handler != SIG_IGN && prev_segv.sa_handler != SIG_DFL)
        prev_segv.sa_handler(sig);
    else {
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
    }
}

static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static void install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &prev_segv);
}
#endif

void kiln_guard_install(void)
{
#ifdef KILN_GUARD
    pthread_once(&install_once, install);
#endif
}

void kiln_guard_thread_init(void)
{
#ifdef KILN_GUARD
    size_t sz = 64 * 1024;
    alt_stack = kiln_malloc(sz);
    if (!alt_stack)
        return;
    stack_t ss = {.ss_sp = alt_stack, .ss_size = sz, .ss_flags = 0};
    sigaltstack(&ss, NULL);
#endif
}

void kiln_guard_thread_fini(void)
{
#ifdef KILN_GUARD
    stack_t ss = {.ss_sp = NULL, .ss_size = 0, .ss_flags = SS_DISABLE};
    sigaltstack(&ss, NULL);
    kiln_free(alt_stack);
    alt_stack = NULL;
#endif
}
