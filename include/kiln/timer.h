/* Timers: erlang:send_after / cancel_timer. Millisecond precision. */
#ifndef KILN_TIMER_H
#define KILN_TIMER_H

#include <stdint.h>

#include "kiln/error.h"
#include "kiln/runtime.h"
#include "kiln/term.h"

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)

/* A timer handle; 0 is never a valid one. */
typedef uint64_t kiln_timer;

/* Deliver msg to dest (pid or registered name, resolved when it fires)
 * after ms milliseconds. msg is consumed. */
int kiln_send_after(kiln_rt *rt, uint64_t ms, kiln_term dest, kiln_msg *msg, kiln_timer *out);
/* Cancel: KILN_OK and *left_ms (time that was left) if it had not fired;
 * KILN_ENOTREG if it already fired or was cancelled. The message is freed. */
int kiln_cancel_timer(kiln_rt *rt, kiln_timer t, uint64_t *left_ms);
/* Pending timers (for tests). */
uint64_t kiln_timers_pending(kiln_rt *rt);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif
