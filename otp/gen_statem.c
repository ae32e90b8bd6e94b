/* gen_statem on a Kiln behaviour, after OTP's gen_statem.erl. The
 * behaviour's handle turns each mailbox message into an event (or answers
 * a system message), runs the state callback, acts on its result, and
 * then drains the machine's own event queue (next_event events, retried
 * postponed events, zero timeouts) before returning: between two
 * messages the queue is always empty, so an idle machine holds no stack.
 *
 * Timeouts are runtime timers that send {'$kiln_gsm_timeout', Gen}. Each
 * armed timeout has a generation; a cancelled timer whose message was
 * already on its way arrives with an old generation and is dropped, as
 * are queued zero timeouts cancelled before their turn.
 *
 * Start, stop, terminate and sys follow gen_server.c (proc_start.c's
 * handshake, sys_server.c's protocol); the client side (call, cast,
 * stop) is gen_server's. */
#include <stdlib.h>

#include "kiln/gen_statem.h"
#include "kiln/timer.h"
#include "otp/otp_internal.h"

/* An event waiting in the queue or among the postponed, or the one being
 * handled. */
struct ev {
    struct ev *next;
    kiln_gsm_event e;
    kiln_msg *owner; /* owns e's terms; NULL for none */
    uint64_t tgen;   /* a queued zero timeout: its generation (content comes from the slot) */
    bool heap;       /* malloc'ed; else on handle's stack */
    bool borrowed;   /* owner is the message handle was given (kiln_msg_take to keep it) */
    bool moved;      /* postponed: no longer the handler's to free */
};

enum act_kind { ACT_REPLY, ACT_NEXT, ACT_TIMEOUT };

/* An action asked for during a callback, acted on once it returns. */
struct act {
    struct act *next;
    enum act_kind kind;
    kiln_gsm_event_type type; /* NEXT: the event's type; TIMEOUT: which timeout */
    int64_t ms;
    kiln_msg *m; /* owns the terms below; a reply's root is the reply */
    kiln_term from, name, content;
};

/* A timeout slot: the event timeout, the state timeout, or one generic
 * timeout per name. */
struct tmo {
    kiln_gsm_event_type type;
    uint64_t gen;     /* nonzero while armed (a timer, or a queued zero timeout) */
    kiln_timer timer; /* 0 for a queued zero timeout */
    kiln_msg *msg;    /* owns name and content */
    kiln_term name, content;
};

struct kiln_gsm {
    const kiln_gen_statem *cb;
    void *data;
    kiln_rt *rt;
    kiln_otp_sys sys;
    kiln_term state;
    kiln_msg *state_msg;    /* owns state */
    kiln_term *state_atoms; /* state_functions: the atom of each cb->states entry */
    bool init_done;         /* terminate is owed */
    bool terminated;
    struct ev *qh, *qt;     /* events to handle before the next message */
    struct ev *ph, *pt;     /* postponed, oldest first */
    struct tmo ev_tmo, st_tmo;
    struct tmo *gtmo;
    size_t ngtmo, capgtmo;
    uint64_t gen_next;
    kiln_term tmo_tag;      /* '$kiln_gsm_timeout', looked up once per machine */
    /* The callback now running. */
    bool in_cb, in_enter, in_init, postpone;
    struct act *ah, *at;
    kiln_term bad;          /* an action not allowed there: stop with this */
    kiln_msg *bad_msg;
    kiln_msg *stop_reason;  /* do_stop's copy, while terminate runs */
};

/* ---- queues ---- */

static void ev_free(struct ev *e)
{
    if (!e->borrowed)
        kiln_msg_free(e->owner);
    if (e->heap)
        free(e);
}

static void ev_list_free(struct ev *e)
{
    while (e) {
        struct ev *n = e->next;
        ev_free(e);
        e = n;
    }
}

static void ev_append(struct ev **h, struct ev **t, struct ev *e)
{
    e->next = NULL;
    if (*t)
        (*t)->next = e;
    else
        *h = e;
    *t = e;
}

/* Put the list h..t in front of the queue. */
static void q_prepend(struct kiln_gsm *s, struct ev *h, struct ev *t)
{
    if (!h)
        return;
    t->next = s->qh;
    if (!s->qh)
        s->qt = t;
    s->qh = h;
}

static struct ev *q_pop(struct kiln_gsm *s)
{
    struct ev *e = s->qh;
    if (e) {
        s->qh = e->next;
        if (!s->qh)
            s->qt = NULL;
        e->next = NULL;
    }
    return e;
}

static void postpone_event(struct kiln_gsm *s, struct ev *e)
{
    struct ev *p = e;
    if (!e->heap) {
        p = malloc(sizeof(*p));
        if (!p)
            return; /* out of memory: the event is dropped */
        *p = *e;
        p->heap = true;
    }
    if (p->borrowed) {
        kiln_msg_take(p->owner);
        p->borrowed = false;
    }
    e->moved = true;
    ev_append(&s->ph, &s->pt, p);
}

/* ---- actions ---- */

static void acts_free(struct act *a)
{
    while (a) {
        struct act *n = a->next;
        kiln_msg_free(a->m);
        free(a);
        a = n;
    }
}

static struct act *take_actions(struct kiln_gsm *s)
{
    struct act *a = s->ah;
    s->ah = s->at = NULL;
    return a;
}

/* The first action that was not allowed decides the stop reason. */
static int mark_bad(struct kiln_gsm *s, const char *tag, const char *what)
{
    if (kiln_is_none(s->bad)) {
        s->bad_msg = kiln_msg_new(32);
        s->bad = s->bad_msg ? kiln_tuple(s->bad_msg, 2, kiln_atom_c(tag), kiln_atom_c(what)) : KILN_NONE;
        if (kiln_is_none(s->bad))
            s->bad = kiln_atom_c(tag);
    }
    return KILN_EINVAL;
}

/* A new action with a copy of from, name and content (KILN_NONE stays
 * KILN_NONE); content becomes the message's root. */
static int add_action(struct kiln_gsm *s, enum act_kind kind, kiln_gsm_event_type type, int64_t ms, kiln_term from,
                      kiln_term name, kiln_term content)
{
    struct act *a = calloc(1, sizeof(*a));
    /* A reply holds a copy of From, about the room kiln_reply adds. */
    kiln_msg *m = kiln_msg_new(kind == ACT_REPLY ? 64 + 2 * KILN_REPLY_ROOM : 64);
    if (!a || !m) {
        free(a);
        kiln_msg_free(m);
        return KILN_ENOMEM;
    }
    a->kind = kind;
    a->type = type;
    a->ms = ms;
    a->m = m;
    a->from = kiln_is_none(from) ? KILN_NONE : kiln_term_copy(m, from);
    a->name = kiln_is_none(name) ? KILN_NONE : kiln_term_copy(m, name);
    a->content = kiln_term_copy(m, content);
    if ((!kiln_is_none(from) && kiln_is_none(a->from)) || (!kiln_is_none(name) && kiln_is_none(a->name)) ||
        kiln_is_none(a->content)) {
        kiln_msg_free(m);
        free(a);
        return KILN_ENOMEM;
    }
    kiln_msg_set_term(m, a->content);
    if (s->at)
        s->at->next = a;
    else
        s->ah = a;
    s->at = a;
    return KILN_OK;
}

static bool is_from(kiln_term from) { return kiln_is_tuple(from) && kiln_tuple_arity(from) == 2; }

int kiln_gsm_reply(kiln_gsm *sm, kiln_term from, kiln_term reply)
{
    if (!sm || !sm->in_cb)
        return KILN_EINVAL;
    if (!is_from(from) || kiln_is_none(reply))
        return KILN_EBADARG;
    return add_action(sm, ACT_REPLY, 0, 0, from, KILN_NONE, reply);
}

int kiln_gsm_postpone(kiln_gsm *sm)
{
    if (!sm || !sm->in_cb)
        return KILN_EINVAL;
    /* An enter call and init have no event to postpone. */
    if (sm->in_enter)
        return mark_bad(sm, "bad_state_enter_action_from_state_function", "postpone");
    if (sm->in_init)
        return mark_bad(sm, "bad_action_from_state_function", "postpone");
    sm->postpone = true;
    return KILN_OK;
}

int kiln_gsm_insert_event(kiln_gsm *sm, const kiln_gsm_event *ev)
{
    if (!sm || !sm->in_cb)
        return KILN_EINVAL;
    if (sm->in_enter)
        return mark_bad(sm, "bad_state_enter_action_from_state_function", "next_event");
    if (!ev || ev->type < KILN_GSM_CALL || ev->type >= KILN_GSM_ENTER || kiln_is_none(ev->content) ||
        (ev->type == KILN_GSM_CALL && !is_from(ev->from)) ||
        (ev->type == KILN_GSM_GENERIC_TIMEOUT && kiln_is_none(ev->name)))
        return KILN_EBADARG;
    return add_action(sm, ACT_NEXT, ev->type, 0, ev->type == KILN_GSM_CALL ? ev->from : KILN_NONE,
                      ev->type == KILN_GSM_GENERIC_TIMEOUT ? ev->name : KILN_NONE, ev->content);
}

int kiln_gsm_event_timeout(kiln_gsm *sm, int64_t ms, kiln_term content)
{
    if (!sm || !sm->in_cb)
        return KILN_EINVAL;
    return add_action(sm, ACT_TIMEOUT, KILN_GSM_TIMEOUT, ms, KILN_NONE, KILN_NONE,
                      kiln_is_none(content) ? KILN_NIL : content);
}

int kiln_gsm_state_timeout(kiln_gsm *sm, int64_t ms, kiln_term content)
{
    if (!sm || !sm->in_cb)
        return KILN_EINVAL;
    /* A cancel carries no content: [] stands in. */
    return add_action(sm, ACT_TIMEOUT, KILN_GSM_STATE_TIMEOUT, ms, KILN_NONE, KILN_NONE,
                      kiln_is_none(content) ? KILN_NIL : content);
}

int kiln_gsm_generic_timeout(kiln_gsm *sm, kiln_term name, int64_t ms, kiln_term content)
{
    if (!sm || !sm->in_cb)
        return KILN_EINVAL;
    if (kiln_is_none(name))
        return KILN_EBADARG;
    return add_action(sm, ACT_TIMEOUT, KILN_GSM_GENERIC_TIMEOUT, ms, KILN_NONE, name,
                      kiln_is_none(content) ? KILN_NIL : content);
}

int kiln_gsm_hibernate(kiln_gsm *sm)
{
    /* Nothing to do: between messages a Kiln machine holds no stack. */
    return sm && sm->in_cb ? KILN_OK : KILN_EINVAL;
}

/* ---- timeouts ---- */

static void tmo_cancel(struct kiln_gsm *s, struct tmo *t)
{
    if (t->timer)
        kiln_cancel_timer(s->rt, t->timer, NULL); /* if it already fired, its message is stale */
    t->timer = 0;
    t->gen = 0;
    kiln_msg_free(t->msg);
    t->msg = NULL;
    t->name = t->content = KILN_NONE;
}

static void gtmo_remove(struct kiln_gsm *s, size_t i)
{
    tmo_cancel(s, &s->gtmo[i]);
    s->gtmo[i] = s->gtmo[--s->ngtmo];
}

static struct tmo *gtmo_slot(struct kiln_gsm *s, kiln_term name, bool create)
{
    for (size_t i = 0; i < s->ngtmo; i++)
        if (kiln_term_eq(s->gtmo[i].name, name))
            return &s->gtmo[i];
    if (!create)
        return NULL;
    if (s->ngtmo == s->capgtmo) {
        size_t cap = s->capgtmo ? 2 * s->capgtmo : 4;
        struct tmo *g = realloc(s->gtmo, cap * sizeof(*g));
        if (!g)
            return NULL;
        s->gtmo = g;
        s->capgtmo = cap;
    }
    struct tmo *t = &s->gtmo[s->ngtmo++];
    *t = (struct tmo){KILN_GSM_GENERIC_TIMEOUT, 0, 0, NULL, KILN_NONE, KILN_NONE};
    return t;
}

/* The armed timeout of generation gen fires: its slot is released and e
 * takes its content. false when gen is stale (cancelled or restarted). */
static bool tmo_claim(struct kiln_gsm *s, uint64_t gen, struct ev *e)
{
    struct tmo *t = NULL;
    size_t gi = SIZE_MAX;
    if (gen == 0)
        return false;
    if (s->ev_tmo.gen == gen) {
        t = &s->ev_tmo;
    } else if (s->st_tmo.gen == gen) {
        t = &s->st_tmo;
    } else {
        for (size_t i = 0; i < s->ngtmo && !t; i++)
            if (s->gtmo[i].gen == gen) {
                t = &s->gtmo[i];
                gi = i;
            }
    }
    if (!t)
        return false;
    e->e.type = t->type;
    e->e.content = t->content;
    e->e.name = t->type == KILN_GSM_GENERIC_TIMEOUT ? t->name : KILN_NONE;
    e->e.from = KILN_NONE;
    e->owner = t->msg; /* a borrowed timer message stays the runtime's to free */
    e->borrowed = false;
    t->msg = NULL;
    t->timer = 0; /* it fired: nothing left to cancel */
    tmo_cancel(s, t);
    if (gi != SIZE_MAX)
        gtmo_remove(s, gi);
    return true;
}

/* Disarm t; a generic slot is also removed (its name identifies it). */
static void tmo_drop(struct kiln_gsm *s, struct tmo *t)
{
    if (t->type == KILN_GSM_GENERIC_TIMEOUT)
        gtmo_remove(s, (size_t)(t - s->gtmo));
    else
        tmo_cancel(s, t);
}

/* Apply one timeout action: (re)start, or cancel when ms < 0. */
static void tmo_arm(struct kiln_gsm *s, struct act *a)
{
    struct tmo *t;
    if (a->type == KILN_GSM_TIMEOUT)
        t = &s->ev_tmo;
    else if (a->type == KILN_GSM_STATE_TIMEOUT)
        t = &s->st_tmo;
    else if (!(t = gtmo_slot(s, a->name, a->ms >= 0)))
        return; /* cancelling a generic timeout that is not running, or out of memory */
    tmo_cancel(s, t);
    if (a->ms < 0 || (a->type == KILN_GSM_TIMEOUT && s->qh)) {
        /* infinity; or an event timeout with events queued, which the
         * first of them would cancel at once (OTP does not start it). */
        tmo_drop(s, t);
        return;
    }
    t->msg = a->m;
    a->m = NULL;
    t->name = a->name;
    t->content = a->content;
    t->gen = ++s->gen_next;
    if (a->ms == 0) {
        /* Zero: fire before any message not yet received, after what is
         * already queued. */
        struct ev *e = calloc(1, sizeof(*e));
        if (!e) {
            tmo_drop(s, t);
            return;
        }
        e->heap = true;
        e->tgen = t->gen;
        ev_append(&s->qh, &s->qt, e);
        return;
    }
    kiln_msg *m = kiln_msg_new(32);
    if (m)
        kiln_msg_set_term(m, kiln_tuple(m, 2, s->tmo_tag, kiln_uint(m, t->gen)));
    if (!m || kiln_send_after(s->rt, (uint64_t)a->ms, s->sys.self, m, &t->timer) != KILN_OK) {
        t->timer = 0;
        tmo_drop(s, t);
    }
}

static void apply_timeouts(struct kiln_gsm *s, struct act *a)
{
    for (; a; a = a->next)
        if (a->kind == ACT_TIMEOUT)
            tmo_arm(s, a);
}

static void cancel_all_timeouts(struct kiln_gsm *s)
{
    tmo_cancel(s, &s->ev_tmo);
    tmo_cancel(s, &s->st_tmo);
    while (s->ngtmo)
        gtmo_remove(s, s->ngtmo - 1);
}

/* ---- stopping ---- */

static void user_terminate(struct kiln_gsm *s, kiln_term reason)
{
    if (!s->init_done || s->terminated)
        return;
    s->terminated = true;
    cancel_all_timeouts(s);
    if (s->cb->terminate)
        s->cb->terminate(s->data, s->state, reason);
}

static void send_replies(struct act *a)
{
    for (; a; a = a->next)
        if (a->kind == ACT_REPLY && a->m) {
            kiln_reply(a->from, a->m); /* from lives in the reply's arena, which the send keeps */
            a->m = NULL;
        }
}

/* Stop from the loop: the replies (stop_and_reply), terminate, exit. The
 * reason is copied first: terminate may free what it lives in (why_msg,
 * the caller's message holding it, goes at once). The copy is kept in s
 * while terminate runs: one that blocks can be killed there. acts is
 * consumed. */
static kiln_action do_stop(struct kiln_gsm *s, kiln_term reason, kiln_msg *why_msg, struct act *acts)
{
    kiln_msg *rm = kiln_msg_new(64);
    kiln_term r = rm ? kiln_term_copy(rm, reason) : KILN_NONE;
    if (kiln_is_none(r))
        r = KILN_ATOM_KILLED; /* out of memory: an immediate reason needs no arena */
    kiln_msg_free(why_msg);
    send_replies(acts);
    acts_free(acts);
    s->stop_reason = rm;
    user_terminate(s, r);
    s->stop_reason = NULL;
    kiln_stop(r);
    kiln_msg_free(rm);
    return KILN_STOP;
}

static kiln_action stop_tagged(struct kiln_gsm *s, const char *tag, kiln_term v)
{
    kiln_msg *m = kiln_msg_new(64);
    kiln_term why = m ? kiln_tuple(m, 2, kiln_atom_c(tag), kiln_term_copy(m, v)) : KILN_NONE;
    return do_stop(s, kiln_is_none(why) ? kiln_atom_c(tag) : why, m, NULL);
}

/* ---- callbacks ---- */

static kiln_gsm_state_fn handler(struct kiln_gsm *s)
{
    if (s->cb->handle_event)
        return s->cb->handle_event;
    for (size_t i = 0; i < s->cb->nstates; i++)
        if (s->state_atoms[i] == s->state)
            return s->cb->states[i].fn;
    return NULL;
}

static kiln_gsm_ret call_cb(struct kiln_gsm *s, kiln_gsm_state_fn fn, const kiln_gsm_event *ev, bool enter)
{
    s->in_cb = true;
    s->in_enter = enter;
    s->in_init = false;
    s->postpone = false;
    kiln_gsm_ret r = fn(s, ev, s->state, s->data);
    s->in_cb = false;
    return r;
}

/* Stop if the callback asked for an action it may not: the reason was
 * recorded by mark_bad. */
static bool check_bad(struct kiln_gsm *s, struct act *acts, kiln_msg *hold, kiln_action *out)
{
    if (kiln_is_none(s->bad))
        return false;
    acts_free(acts);
    *out = do_stop(s, s->bad, NULL, NULL);
    kiln_msg_free(s->bad_msg);
    s->bad_msg = NULL;
    s->bad = KILN_NONE;
    kiln_msg_free(hold);
    return true;
}

/* State enter calls for the state just entered, from prev; repeated while
 * they return repeat_state. Their replies are sent at once; their
 * timeouts are appended to *timeouts for the caller to apply after the
 * transition's own. */
static kiln_action enter_calls(struct kiln_gsm *s, kiln_term prev, struct act **timeouts)
{
    for (;;) {
        kiln_gsm_state_fn fn = handler(s);
        if (!fn)
            return stop_tagged(s, "undef_state_function", s->state);
        kiln_gsm_event ev = {KILN_GSM_ENTER, prev, KILN_NONE, KILN_NONE};
        kiln_gsm_ret r = call_cb(s, fn, &ev, true);
        struct act *acts = take_actions(s);
        kiln_action a;
        if (check_bad(s, acts, r.hold, &a))
            return a;
        if (r.result == KILN_GSM_STOP) {
            a = do_stop(s, r.reason, NULL, acts);
            kiln_msg_free(r.hold);
            return a;
        }
        if (r.result == KILN_GSM_NEXT_STATE && !kiln_term_eq(r.state, s->state)) {
            /* An enter call may not change the state. */
            acts_free(acts);
            a = stop_tagged(s, "bad_state_enter_return_from_state_function", r.state);
            kiln_msg_free(r.hold);
            return a;
        }
        if (r.result != KILN_GSM_KEEP_STATE && r.result != KILN_GSM_NEXT_STATE &&
            r.result != KILN_GSM_REPEAT_STATE) {
            acts_free(acts);
            kiln_msg_free(r.hold);
            return stop_tagged(s, "bad_return_from_state_function", kiln_small((int64_t)r.result));
        }
        kiln_msg_free(r.hold);
        send_replies(acts);
        struct act **tail = timeouts;
        while (*tail)
            tail = &(*tail)->next;
        *tail = acts;
        if (r.result != KILN_GSM_REPEAT_STATE)
            return KILN_CONTINUE;
        prev = s->state;
    }
}

/* Act on a callback's result for event e (NULL: init's result), in OTP's
 * order: replies, postpone, the state change (which cancels the state
 * timeout and requeues the postponed events), next_event events ahead of
 * all, the state enter call, then the timeouts. */
static kiln_action transition(struct kiln_gsm *s, kiln_gsm_ret r, struct ev *e)
{
    struct act *acts = take_actions(s), *enter_acts = NULL;
    bool postpone = s->postpone;
    kiln_msg *old_msg = NULL;
    kiln_action res = KILN_CONTINUE;
    if (check_bad(s, acts, r.hold, &res))
        return res;
    if (r.result == KILN_GSM_STOP) {
        res = do_stop(s, r.reason, NULL, acts);
        kiln_msg_free(r.hold);
        return res;
    }
    if ((r.result != KILN_GSM_KEEP_STATE && r.result != KILN_GSM_NEXT_STATE && r.result != KILN_GSM_REPEAT_STATE) ||
        (r.result == KILN_GSM_NEXT_STATE && kiln_is_none(r.state))) {
        acts_free(acts);
        kiln_msg_free(r.hold);
        return stop_tagged(s, "bad_return_from_state_function", kiln_small((int64_t)r.result));
    }
    send_replies(acts);

    kiln_term old = s->state;
    bool changed = !e || (r.result == KILN_GSM_NEXT_STATE && !kiln_term_eq(r.state, s->state));
    if (changed) {
        /* Copied now: r.state may live in the event, which postpone moves. */
        kiln_msg *m = kiln_msg_new(32);
        kiln_term ns = m ? kiln_term_copy(m, r.state) : KILN_NONE;
        if (kiln_is_none(ns)) {
            kiln_msg_free(m);
            acts_free(acts);
            kiln_msg_free(r.hold);
            return do_stop(s, kiln_atom_c("enomem"), NULL, NULL);
        }
        old_msg = s->state_msg;
        s->state_msg = m;
        s->state = ns;
        if (!e)
            old = ns; /* the first enter call gets OldState = State */
    }
    if (postpone && e)
        postpone_event(s, e);
    if (changed && e) {
        tmo_cancel(s, &s->st_tmo);
        /* Postponed events are retried, oldest first, before the queue. */
        q_prepend(s, s->ph, s->pt);
        s->ph = s->pt = NULL;
    }
    /* next_event: ahead of everything, the first asked for first. */
    struct ev *nh = NULL, *nt = NULL;
    for (struct act *a = acts; a; a = a->next) {
        if (a->kind != ACT_NEXT)
            continue;
        struct ev *n = calloc(1, sizeof(*n));
        if (!n)
            continue; /* out of memory: the event is lost */
        n->heap = true;
        n->e = (kiln_gsm_event){a->type, a->content, a->from, a->name};
        n->owner = a->m;
        a->m = NULL;
        ev_append(&nh, &nt, n);
    }
    q_prepend(s, nh, nt);

    if (s->cb->state_enter && (changed || r.result == KILN_GSM_REPEAT_STATE))
        res = enter_calls(s, changed ? old : s->state, &enter_acts);
    if (res == KILN_CONTINUE) {
        apply_timeouts(s, acts);
        apply_timeouts(s, enter_acts);
    }
    acts_free(acts);
    acts_free(enter_acts);
    kiln_msg_free(old_msg);
    kiln_msg_free(r.hold);
    return res;
}

static kiln_action run_event(struct kiln_gsm *s, struct ev *e)
{
    /* Any event cancels the event timeout. */
    tmo_cancel(s, &s->ev_tmo);
    kiln_gsm_state_fn fn = handler(s);
    if (!fn)
        return stop_tagged(s, "undef_state_function", s->state);
    kiln_gsm_ret r = call_cb(s, fn, &e->e, false);
    return transition(s, r, e);
}

/* Handle the queued events; the mailbox waits until the queue is empty. */
static kiln_action drain(struct kiln_gsm *s)
{
    struct ev *e;
    while ((e = q_pop(s))) {
        if (e->tgen && !tmo_claim(s, e->tgen, e)) {
            ev_free(e); /* a zero timeout cancelled before its turn */
            continue;
        }
        kiln_action a = run_event(s, e);
        if (!e->moved)
            ev_free(e);
        if (a == KILN_STOP)
            return a;
    }
    return KILN_CONTINUE;
}

/* ---- sys (sys_server.c) ---- */

static kiln_term event_type_term(kiln_msg *m, kiln_gsm_event_type type, kiln_term from, kiln_term name)
{
    switch (type) {
    case KILN_GSM_CALL:
        return kiln_tuple(m, 2, kiln_atom_c("call"), kiln_term_copy(m, from));
    case KILN_GSM_CAST:
        return kiln_atom_c("cast");
    case KILN_GSM_INFO:
        return kiln_atom_c("info");
    case KILN_GSM_INTERNAL:
        return kiln_atom_c("internal");
    case KILN_GSM_TIMEOUT:
        return KILN_ATOM_TIMEOUT;
    case KILN_GSM_STATE_TIMEOUT:
        return kiln_atom_c("state_timeout");
    case KILN_GSM_GENERIC_TIMEOUT:
        return kiln_tuple(m, 2, KILN_ATOM_TIMEOUT, kiln_term_copy(m, name));
    default:
        return kiln_atom_c("enter");
    }
}

static kiln_term sys_state(void *beh, kiln_msg *m)
{
    struct kiln_gsm *s = beh;
    kiln_term d = s->cb->format_data ? s->cb->format_data(s->data, m) : KILN_ATOM_UNDEFINED;
    return kiln_tuple(m, 2, kiln_term_copy(m, s->state), kiln_is_none(d) ? KILN_ATOM_UNDEFINED : d);
}

static kiln_term tmo_term(kiln_msg *m, const struct tmo *t)
{
    return kiln_tuple(m, 2, event_type_term(m, t->type, KILN_NONE, t->name), kiln_term_copy(m, t->content));
}

/* gen_statem's status items: {"Time-outs", {N, [{Type, Content}]}},
 * {"Logged Events", []}, {"Postponed", [{Type, Content}]}. */
static kiln_term sys_status_data(void *beh, kiln_msg *m)
{
    struct kiln_gsm *s = beh;
    kiln_term tl = KILN_NIL, pl = KILN_NIL;
    int64_t n = 0;
    for (size_t i = s->ngtmo; i-- > 0;)
        if (s->gtmo[i].gen) {
            tl = kiln_cons(m, tmo_term(m, &s->gtmo[i]), tl);
            n++;
        }
    if (s->st_tmo.gen) {
        tl = kiln_cons(m, tmo_term(m, &s->st_tmo), tl);
        n++;
    }
    if (s->ev_tmo.gen) {
        tl = kiln_cons(m, tmo_term(m, &s->ev_tmo), tl);
        n++;
    }
    size_t np = 0;
    for (struct ev *e = s->ph; e; e = e->next)
        np++;
    kiln_term *items = np ? calloc(np, sizeof(*items)) : NULL;
    if (np && !items)
        return KILN_NONE;
    size_t i = 0;
    for (struct ev *e = s->ph; e; e = e->next)
        items[i++] = kiln_tuple(m, 2, event_type_term(m, e->e.type, e->e.from, e->e.name),
                                kiln_term_copy(m, e->e.content));
    pl = kiln_list_v(m, np, items, KILN_NIL);
    free(items);
    return kiln_build(m, "[{\"Time-outs\",{~i,~t}},{\"Logged Events\",[]},{\"Postponed\",~t}]", n, tl, pl);
}

static kiln_action sys_stop(void *beh, kiln_term reason) { return do_stop(beh, reason, NULL, NULL); }

static const kiln_otp_sys_ops gsm_sys_ops = {"gen_statem", "Status for state machine", sys_state, sys_status_data,
                                             sys_stop};

/* ---- the loop ---- */

static kiln_action gsm_handle(void *state, kiln_msg *msg)
{
    struct kiln_gsm *s = state;
    kiln_term t = kiln_msg_term(msg), from, req;
    size_t n = kiln_is_tuple(t) ? kiln_tuple_arity(t) : 0;
    struct ev e = {.e = {KILN_GSM_INFO, t, KILN_NONE, KILN_NONE}, .owner = msg, .borrowed = true};

    if (n == 2 && kiln_tuple_get(t, 0) == s->tmo_tag) {
        uint64_t gen = 0;
        if (kiln_get_uint64(kiln_tuple_get(t, 1), &gen) != KILN_OK || !tmo_claim(s, gen, &e))
            return KILN_CONTINUE; /* cancelled or restarted after it fired */
    } else if (kiln_match_call(t, &from, &req) == KILN_OK) {
        e.e = (kiln_gsm_event){KILN_GSM_CALL, req, from, KILN_NONE};
    } else if (n == 2 && kiln_tuple_get(t, 0) == KILN_ATOM_GEN_CAST) {
        e.e = (kiln_gsm_event){KILN_GSM_CAST, kiln_tuple_get(t, 1), KILN_NONE, KILN_NONE};
    } else if (kiln_otp_sys_match(t, &from, &req)) {
        /* Not an event: timeouts keep running, as in OTP. */
        return kiln_otp_sys_handle(&s->sys, from, req);
    } else if (kiln_otp_is_parent_exit(&s->sys, t)) {
        return do_stop(s, kiln_tuple_get(t, 2), NULL, NULL);
    }
    kiln_action a = run_event(s, &e);
    /* e is on this stack (ev_free would free the node): release its terms
     * unless postpone took a copy. */
    if (!e.moved && !e.borrowed)
        kiln_msg_free(e.owner);
    return a == KILN_STOP ? a : drain(s);
}

static void free_all(struct kiln_gsm *s)
{
    cancel_all_timeouts(s);
    free(s->gtmo);
    ev_list_free(s->qh);
    ev_list_free(s->ph);
    acts_free(take_actions(s));
    kiln_msg_free(s->bad_msg);
    /* Set only when a terminate that blocked was killed there. */
    kiln_msg_free(s->stop_reason);
    kiln_msg_free(s->state_msg);
    free(s->state_atoms);
    free(s);
}

/* The runtime's terminate: whatever ended the process. The user's
 * terminate has run already when the machine stopped itself. */
static void gsm_terminate(void *state, kiln_term reason)
{
    struct kiln_gsm *s = state;
    if (!s)
        return;
    user_terminate(s, reason);
    free_all(s);
}

/* ---- init ---- */

static int gsm_init(void *arg, void **state)
{
    struct kiln_otp_starting *st = arg;
    struct kiln_gsm *s = calloc(1, sizeof(*s));
    if (!s)
        return KILN_ENOMEM; /* the starter sees the DOWN */
    s->cb = st->impl;
    if (!s->cb->handle_event) {
        s->state_atoms = calloc(s->cb->nstates, sizeof(kiln_term));
        if (!s->state_atoms) {
            free(s);
            return KILN_ENOMEM;
        }
        for (size_t i = 0; i < s->cb->nstates; i++)
            s->state_atoms[i] = kiln_atom_c(s->cb->states[i].name);
    }
    /* Set now: if the process is killed while the user's init blocks, the
     * runtime's terminate still gets s and frees it. */
    *state = s;
    s->rt = kiln_current_rt();
    s->tmo_tag = kiln_atom_c("$kiln_gsm_timeout");
    s->sys = (kiln_otp_sys){&gsm_sys_ops, s, s->cb->name, kiln_self(), KILN_NONE, false};
    s->sys.parent = kiln_is_none(st->parent) ? s->sys.self : st->parent;
    s->state = KILN_NONE;
    s->bad = KILN_NONE;
    s->ev_tmo = (struct tmo){KILN_GSM_TIMEOUT, 0, 0, NULL, KILN_NONE, KILN_NONE};
    s->st_tmo = (struct tmo){KILN_GSM_STATE_TIMEOUT, 0, 0, NULL, KILN_NONE, KILN_NONE};

    s->in_cb = s->in_init = true;
    kiln_gsm_ret r = s->cb->init(s, st->arg, &s->data);
    s->in_cb = s->in_init = false;

    kiln_msg *tmp = kiln_msg_new(64);
    if (!tmp) {
        acts_free(take_actions(s));
        kiln_msg_free(r.hold);
        return KILN_ENOMEM;
    }
    kiln_term reason = KILN_NONE;
    switch (r.result) {
    case KILN_GSM_NEXT_STATE:
        if (kiln_is_none(r.state))
            goto bad;
        s->init_done = true;
        kiln_otp_ack(st, kiln_tuple(tmp, 2, KILN_ATOM_OK, s->sys.self));
        kiln_msg_free(tmp);
        /* As in OTP the start has returned by now; the initial state's
         * enter call and init's next_events run next. A stop here ends the
         * process once init returns (kiln_stop was called). */
        if (transition(s, r, NULL) == KILN_CONTINUE)
            drain(s);
        return KILN_OK;
    case KILN_GSM_IGNORE:
        kiln_otp_ack(st, kiln_atom_c("ignore"));
        reason = KILN_ATOM_NORMAL;
        break;
    case KILN_GSM_STOP:
        reason = r.reason;
        kiln_otp_ack(st, kiln_tuple(tmp, 2, KILN_ATOM_ERROR, reason));
        break;
    default:
    bad:
        reason = kiln_tuple(tmp, 2, kiln_atom_c("bad_return_from_init"), kiln_small((int64_t)r.result));
        kiln_otp_ack(st, kiln_tuple(tmp, 2, KILN_ATOM_ERROR, reason));
        break;
    }
    acts_free(take_actions(s));
    kiln_stop(reason);
    kiln_msg_free(tmp);
    kiln_msg_free(r.hold);
    return KILN_OK;
}

static const kiln_behaviour gsm_beh = {"gen_statem", gsm_init, gsm_handle, gsm_terminate};

/* ---- public API ---- */

static bool valid(const kiln_gen_statem *sm)
{
    return sm && sm->init && (sm->handle_event || (sm->states && sm->nstates));
}

int kiln_gsm_start_link(const kiln_gen_statem *sm, void *arg, const kiln_gs_opts *opts, kiln_term *pid,
                        kiln_msg **reason)
{
    if (reason)
        *reason = NULL;
    if (!valid(sm))
        return KILN_EINVAL;
    return kiln_otp_start(kiln_current_rt(), &gsm_beh, sm, arg, opts, true, pid, reason);
}

int kiln_gsm_start(kiln_rt *rt, const kiln_gen_statem *sm, void *arg, const kiln_gs_opts *opts, kiln_term *pid,
                   kiln_msg **reason)
{
    if (reason)
        *reason = NULL;
    if (!valid(sm))
        return KILN_EINVAL;
    return kiln_otp_start_nolink(rt, &gsm_beh, sm, arg, opts, pid, reason);
}

int kiln_gsm_child_start(void *arg, kiln_term extra, kiln_term *pid)
{
    (void)extra;
    const kiln_gsm_child *c = arg;
    return kiln_gsm_start_link(c->sm, c->arg, &c->opts, pid, NULL);
}
