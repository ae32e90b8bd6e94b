/* Running an OTP operation from a thread that is not a Kiln process
 * (main(), a test, a foreign library's thread). Starting, calling and
 * stopping need a process: its mailbox receives the ack, the reply or the
 * DOWN. So the operation runs in a helper behaviour process while the
 * calling thread waits on a condition variable.
 *
 * The helper signals from terminate, which the runtime calls whatever ends
 * the process (also kill and runtime stop), so the waiting thread cannot be
 * left hanging; an operation cut short that way returns KILN_ESTOPPED. */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "otp/otp_internal.h"

struct job {
    int (*fn)(void *arg);
    void *arg;
    int rc;
    bool ran, done;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static int job_init(void *arg, void **state)
{
    *state = arg;
    /* Run the operation from handle, after init: a behaviour's init may
     * not end the process, and handle's KILN_STOP does. */
    kiln_msg *go = kiln_msg_new(0);
    int rc = go ? KILN_OK : KILN_ENOMEM;
    if (go) {
        kiln_msg_set_term(go, KILN_NIL);
        rc = kiln_send(kiln_self(), go);
    }
    if (rc != KILN_OK) {
        /* terminate will not run after a failed init: answer now. */
        struct job *j = arg;
        pthread_mutex_lock(&j->mu);
        j->rc = rc;
        j->done = true;
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
    }
    return rc;
}

static kiln_action job_handle(void *state, kiln_msg *msg)
{
    (void)msg;
    struct job *j = state;
    j->rc = j->fn(j->arg);
    j->ran = true;
    return KILN_STOP;
}

static void job_terminate(void *state, kiln_term reason)
{
    (void)reason;
    struct job *j = state;
    pthread_mutex_lock(&j->mu);
    if (!j->ran)
        j->rc = KILN_ESTOPPED;
    j->done = true;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static const kiln_behaviour job_beh = {"kiln_otp_job", job_init, job_handle, job_terminate};

int kiln_otp_run(kiln_rt *rt, int (*fn)(void *arg), void *arg)
{
    kiln_rt *cur = kiln_current_rt();
    if (cur && (!rt || cur == rt))
        return fn(arg);
    if (!rt)
        return KILN_ENOTPROC;
    /* A process of another runtime would block its worker thread here. */
    if (cur)
        return KILN_EINVAL;
    struct job *j = calloc(1, sizeof(*j));
    if (!j)
        return KILN_ENOMEM;
    j->fn = fn;
    j->arg = arg;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    kiln_term pid;
    int rc = kiln_spawn(rt, &job_beh, j, NULL, &pid);
    if (rc == KILN_OK) {
        /* A process killed before its first run (kiln_rt_stop) never runs
         * terminate, so the wait also watches the helper's liveness. Once
         * it is gone without answering it never will: terminate runs
         * before a process leaves the process table. */
        pthread_mutex_lock(&j->mu);
        while (!j->done) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            if (pthread_cond_timedwait(&j->cv, &j->mu, &ts) != 0 && !j->done) {
                pthread_mutex_unlock(&j->mu);
                bool alive = kiln_is_alive(rt, pid);
                pthread_mutex_lock(&j->mu);
                if (!alive && !j->done) {
                    j->rc = KILN_ESTOPPED;
                    break;
                }
            }
        }
        pthread_mutex_unlock(&j->mu);
        rc = j->rc;
    }
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
    return rc;
}
