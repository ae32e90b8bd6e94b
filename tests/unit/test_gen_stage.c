/* gen_stage semantics, after Elixir's GenStage: the wire protocol from
 * both ends (hand-written peers check the exact message shapes and that
 * demand is never exceeded), min/max demand re-asking, the demand,
 * broadcast and partition dispatchers, manual demand, cancel modes,
 * buffer_keep first/last, accumulate mode, and a producer -> producer_consumer
 * -> consumer pipeline keeping order end to end. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln/gen_stage.h"
#include "testutil.h"

static kiln_term A(const char *s) { return kiln_atom_c(s); }

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void wait_dead(kiln_rt *rt, kiln_term pid)
{
    for (int i = 0; i < 5000 && kiln_is_alive(rt, pid); i++)
        sleep_ms(1);
    assert_false(kiln_is_alive(rt, pid));
}

/* The first element of a tuple, or the term itself: enough to record a
 * reason as an immediate. */
static kiln_term head_of(kiln_term t) { return kiln_is_tuple(t) && kiln_tuple_arity(t) > 0 ? kiln_tuple_get(t, 0) : t; }

/* [from, from+1, ...] (n elements) in m. */
static kiln_term int_list(kiln_msg *m, int64_t from, int64_t n)
{
    kiln_term l = KILN_NIL;
    for (int64_t i = n - 1; i >= 0; i--)
        l = kiln_cons(m, kiln_int(m, from + i), l);
    return l;
}

/* ---- a counting producer ---- */

struct pctl {
    _Atomic long demanded, emitted, cancels, discarded_cb, subscribes;
    _Atomic uint64_t cancel_kind, cancel_reason, term_reason;
    _Atomic int terminated;
};

struct pcfg {
    struct pctl *c;
    int64_t limit; /* events handle_demand may emit in all; -1 = unbounded */
    kiln_stage_dispatcher disp;
    size_t partitions;
    int64_t (*hash)(kiln_term event, void *arg);
    bool accumulate;
    int64_t buffer_size;
    kiln_stage_keep keep;
};

struct pst {
    struct pcfg cfg;
    int64_t next;
};

static kiln_stage_ret prod_init(void *arg, void **state, kiln_stage_opts *o)
{
    struct pcfg *cfg = arg;
    struct pst *p = calloc(1, sizeof(*p));
    p->cfg = *cfg;
    *state = p;
    o->dispatcher = cfg->disp;
    o->partition.partitions = cfg->partitions;
    o->partition.hash = cfg->hash;
    o->demand_accumulate = cfg->accumulate;
    o->buffer_size = cfg->buffer_size;
    o->buffer_keep = cfg->keep;
    return kiln_stage_ok();
}

static kiln_stage_ret emit_n(struct pst *p, int64_t n)
{
    kiln_msg *m = kiln_msg_new((size_t)n * 24 + 16);
    kiln_term l = int_list(m, p->next, n);
    p->next += n;
    atomic_fetch_add(&p->cfg.c->emitted, n);
    return kiln_stage_hold(kiln_stage_emit(l), m);
}

static kiln_stage_ret prod_demand(void *state, int64_t demand)
{
    struct pst *p = state;
    atomic_fetch_add(&p->cfg.c->demanded, demand);
    int64_t n = demand;
    if (p->cfg.limit >= 0 && n > p->cfg.limit - p->next)
        n = p->cfg.limit - p->next;
    if (n <= 0)
        return kiln_stage_noreply();
    return emit_n(p, n);
}

static kiln_stage_ret prod_call(void *state, kiln_term req, kiln_term from)
{
    struct pst *p = state;
    int64_t n;
    if (kiln_match(req, "{emit,~i}", &n) == KILN_OK) {
        /* {reply, ok, Events, State}: events that ignore demand. */
        kiln_stage_ret r = emit_n(p, n);
        r.action = KILN_STAGE_REPLY;
        r.reply = KILN_ATOM_OK;
        return r;
    }
    return kiln_stage_reply(A("unknown"));
}

static kiln_stage_ret prod_subscribe(void *state, kiln_stage_type peer, kiln_term opts, kiln_term from)
{
    struct pst *p = state;
    if (peer == KILN_STAGE_CONSUMER)
        atomic_fetch_add(&p->cfg.c->subscribes, 1);
    return kiln_stage_automatic();
}

static kiln_stage_ret prod_cancel(void *state, kiln_term reason, kiln_term from)
{
    struct pst *p = state;
    atomic_store(&p->cfg.c->cancel_kind, kiln_tuple_get(reason, 0));
    atomic_store(&p->cfg.c->cancel_reason, head_of(kiln_tuple_get(reason, 1)));
    atomic_fetch_add(&p->cfg.c->cancels, 1);
    return kiln_stage_noreply();
}

static bool prod_discarded(void *state, int64_t n)
{
    struct pst *p = state;
    atomic_fetch_add(&p->cfg.c->discarded_cb, n);
    return false;
}

static void prod_terminate(void *state, kiln_term reason)
{
    struct pst *p = state;
    atomic_store(&p->cfg.c->term_reason, head_of(reason));
    atomic_store(&p->cfg.c->terminated, 1);
    free(p);
}

static const kiln_gen_stage counter_producer = {
    .name = "counter_producer",
    .type = KILN_STAGE_PRODUCER,
    .init = prod_init,
    .handle_demand = prod_demand,
    .handle_call = prod_call,
    .handle_subscribe = prod_subscribe,
    .handle_cancel = prod_cancel,
    .format_discarded = prod_discarded,
    .terminate = prod_terminate,
};

static kiln_term start_producer(kiln_rt *rt, struct pcfg *cfg)
{
    kiln_term pid = KILN_NONE;
    assert_int_equal(kiln_stage_start(rt, &counter_producer, cfg, NULL, &pid, NULL), KILN_OK);
    assert_true(kiln_is_local_pid(pid));
    return pid;
}

/* ---- a recording consumer ---- */

#define LOG_CAP 8192

struct cctl {
    _Atomic long count, batches, max_batch, cancels, pace_violations, order_violations;
    _Atomic uint64_t cancel_kind, cancel_reason, term_reason;
    _Atomic int terminated;
    int64_t log[LOG_CAP]; /* written before count is published */
};

struct ccfg {
    struct cctl *c;
    kiln_stage_type type;      /* 0: consumer */
    bool manual;
    int64_t initial_ask;       /* manual: asked from handle_subscribe */
    int sleep_ms;              /* per batch: a slow consumer */
    const kiln_stage_sub_opts *sub;
    size_t nsub;
    _Atomic long *pace_emitted; /* broadcast: the producer's emitted counter */
    int64_t pace_max;
    bool check_increasing;
};

struct cst {
    struct ccfg cfg;
    kiln_msg *from; /* a manual subscription, kept */
    int64_t last;
};

static kiln_stage_ret cons_init(void *arg, void **state, kiln_stage_opts *o)
{
    struct ccfg *cfg = arg;
    struct cst *s = calloc(1, sizeof(*s));
    s->cfg = *cfg;
    s->last = -1;
    *state = s;
    if (cfg->type)
        o->type = cfg->type;
    o->subscribe_to = cfg->sub;
    o->nsubscribe_to = cfg->nsub;
    return kiln_stage_ok();
}

static kiln_stage_ret cons_events(void *state, kiln_term events, kiln_term from)
{
    struct cst *s = state;
    struct cctl *c = s->cfg.c;
    long before = atomic_load(&c->count);
    if (s->cfg.pace_emitted && atomic_load(s->cfg.pace_emitted) > before + s->cfg.pace_max)
        atomic_fetch_add(&c->pace_violations, 1);
    long n = 0;
    for (kiln_term t = events; kiln_is_cons(t); t = kiln_tl(t), n++) {
        int64_t v = -1;
        kiln_get_int64(kiln_hd(t), &v);
        if (s->cfg.check_increasing && v <= s->last)
            atomic_fetch_add(&c->order_violations, 1);
        s->last = v;
        if (before + n < LOG_CAP)
            c->log[before + n] = v;
    }
    if (n > atomic_load(&c->max_batch))
        atomic_store(&c->max_batch, n);
    atomic_fetch_add(&c->batches, 1);
    atomic_store(&c->count, before + n);
    if (s->cfg.sleep_ms)
        kiln_sleep((uint64_t)s->cfg.sleep_ms);
    return kiln_stage_noreply();
}

static kiln_stage_ret cons_subscribe(void *state, kiln_stage_type peer, kiln_term opts, kiln_term from)
{
    struct cst *s = state;
    if (!s->cfg.manual || peer != KILN_STAGE_PRODUCER)
        return kiln_stage_automatic();
    kiln_msg_free(s->from);
    s->from = kiln_gs_from_keep(from);
    if (s->cfg.initial_ask)
        kiln_stage_ask(from, s->cfg.initial_ask);
    return kiln_stage_manual();
}

static kiln_stage_ret cons_cast(void *state, kiln_term msg)
{
    struct cst *s = state;
    int64_t n;
    if (kiln_match(msg, "{ask,~i}", &n) == KILN_OK && s->from)
        kiln_stage_ask(kiln_msg_term(s->from), n);
    return kiln_stage_noreply();
}

static kiln_stage_ret cons_cancel(void *state, kiln_term reason, kiln_term from)
{
    struct cst *s = state;
    atomic_store(&s->cfg.c->cancel_kind, kiln_tuple_get(reason, 0));
    atomic_store(&s->cfg.c->cancel_reason, head_of(kiln_tuple_get(reason, 1)));
    atomic_fetch_add(&s->cfg.c->cancels, 1);
    return kiln_stage_noreply();
}

static void cons_terminate(void *state, kiln_term reason)
{
    struct cst *s = state;
    atomic_store(&s->cfg.c->term_reason, head_of(reason));
    atomic_store(&s->cfg.c->terminated, 1);
    kiln_msg_free(s->from);
    free(s);
}

static const kiln_gen_stage recorder = {
    .name = "recorder",
    .type = KILN_STAGE_CONSUMER,
    .init = cons_init,
    .handle_events = cons_events,
    .handle_subscribe = cons_subscribe,
    .handle_cast = cons_cast,
    .handle_cancel = cons_cancel,
    .terminate = cons_terminate,
};

static kiln_term start_consumer(kiln_rt *rt, struct ccfg *cfg)
{
    kiln_term pid = KILN_NONE;
    assert_int_equal(kiln_stage_start(rt, &recorder, cfg, NULL, &pid, NULL), KILN_OK);
    assert_true(kiln_is_local_pid(pid));
    return pid;
}

static kiln_msg *subscribe(kiln_rt *rt, kiln_term consumer, kiln_stage_sub_opts o)
{
    kiln_msg *tag = NULL;
    assert_int_equal(kiln_stage_subscribe(rt, consumer, &o, 5000, &tag), KILN_OK);
    assert_non_null(tag);
    assert_true(kiln_is_ref(kiln_msg_term(tag)));
    return tag;
}

/* ---- a doubling producer_consumer ---- */

static kiln_stage_ret dbl_init(void *arg, void **state, kiln_stage_opts *o)
{
    const struct ccfg *cfg = arg;
    *state = NULL;
    o->subscribe_to = cfg->sub;
    o->nsubscribe_to = cfg->nsub;
    return kiln_stage_ok();
}

static kiln_stage_ret dbl_events(void *state, kiln_term events, kiln_term from)
{
    kiln_msg *m = kiln_msg_new(256);
    kiln_term out = KILN_NIL;
    /* Build the doubled list back to front to keep the order. */
    int64_t vals[1024];
    size_t n = 0;
    for (kiln_term t = events; kiln_is_cons(t) && n < 1024; t = kiln_tl(t)) {
        int64_t v = 0;
        kiln_get_int64(kiln_hd(t), &v);
        vals[n++] = v;
    }
    for (size_t i = n; i-- > 0;)
        out = kiln_cons(m, kiln_int(m, 2 * vals[i]), out);
    return kiln_stage_hold(kiln_stage_emit(out), m);
}

static const kiln_gen_stage doubler = {
    .name = "doubler",
    .type = KILN_STAGE_PRODUCER_CONSUMER,
    .init = dbl_init,
    .handle_events = dbl_events,
};

/* ---- wire helpers for hand-written peers ---- */

/* {Tag, {Self, Ref}, Body}; ref and body copied. */
static void send_wire(kiln_term to, const char *tag, kiln_term ref, kiln_term body)
{
    kiln_msg *m = kiln_msg_new(256);
    kiln_msg_set_term(m, kiln_tuple(m, 3, A(tag), kiln_tuple(m, 2, kiln_self(), kiln_term_copy(m, ref)),
                                     kiln_term_copy(m, body)));
    kiln_send(to, m);
}

static bool is_tag3(kiln_term t, void *tag)
{
    return kiln_is_tuple(t) && kiln_tuple_arity(t) == 3 && kiln_tuple_get(t, 0) == *(kiln_term *)tag;
}

/* ---- wire test 1: a hand-written producer checks a Kiln consumer ---- */

struct fakep {
    kiln_term consumer;
    int subscribe_ok, sub_current_nil;
    int64_t opt_max, opt_min;
    kiln_term opt_cancel;
    int64_t asks[8];
    int nasks, phase_a_quiet;
    int violations, stalls;
    int64_t total_sent, max_outstanding_seen;
    int unknown_cancel_ok;
    _Atomic int done;
};

static int64_t recv_ask(kiln_term ref, int64_t timeout)
{
    kiln_term tag = A("$gen_producer");
    kiln_msg *m;
    if (kiln_receive(is_tag3, &tag, timeout, &m) != KILN_OK)
        return -1;
    int64_t n = -2;
    kiln_term r;
    if (kiln_match(kiln_msg_term(m), "{'$gen_producer',{_,~t},{ask,~i}}", &r, &n) != KILN_OK ||
        !kiln_term_eq(r, ref))
        n = -2;
    kiln_msg_free(m);
    return n;
}

static void send_events(kiln_term to, kiln_term ref, int64_t from, int64_t n)
{
    kiln_msg *tmp = kiln_msg_new(64 + (size_t)n * 24);
    send_wire(to, "$gen_consumer", ref, int_list(tmp, from, n));
    kiln_msg_free(tmp);
}

static void fakep_body(void *arg)
{
    struct fakep *f = arg;
    kiln_term tag = A("$gen_producer");
    kiln_msg *sub;
    if (kiln_receive(is_tag3, &tag, 5000, &sub) != KILN_OK)
        goto out;
    kiln_term cpid, ref, current, opts;
    if (kiln_match(kiln_msg_term(sub), "{'$gen_producer',{~p,~t},{subscribe,~t,~t}}", &cpid, &ref, &current, &opts) !=
        KILN_OK)
        goto out_sub;
    f->subscribe_ok = kiln_is_ref(ref);
    f->consumer = cpid;
    f->sub_current_nil = current == A("nil");
    for (kiln_term t = opts; kiln_is_cons(t); t = kiln_tl(t)) {
        kiln_term k, v;
        if (kiln_match(kiln_hd(t), "{~A,~t}", &k, &v) != KILN_OK)
            continue;
        if (k == A("max_demand"))
            kiln_get_int64(v, &f->opt_max);
        else if (k == A("min_demand"))
            kiln_get_int64(v, &f->opt_min);
        else if (k == A("cancel"))
            f->opt_cancel = v;
    }
    /* Phase A: the exact asks for max 10 / min 5. */
    int64_t outstanding = 0, next = 1;
    int64_t a = recv_ask(ref, 2000);
    f->asks[f->nasks++] = a;
    outstanding += a;
    send_events(cpid, ref, next, 3), next += 3, outstanding -= 3;
    f->phase_a_quiet = recv_ask(ref, 50) == -1; /* 7 owed > min 5: no ask */
    send_events(cpid, ref, next, 3), next += 3, outstanding -= 3;
    a = recv_ask(ref, 2000); /* 4 owed <= 5: top up by 6 */
    f->asks[f->nasks++] = a;
    outstanding += a;
    send_events(cpid, ref, next, 10), next += 10, outstanding -= 10;
    for (int i = 0; i < 2; i++) { /* two batches of 5, each tops up by 5 */
        a = recv_ask(ref, 2000);
        f->asks[f->nasks++] = a;
        outstanding += a;
    }
    if (recv_ask(ref, 50) != -1)
        f->violations++;
    /* Phase B: random batches within demand; what is owed never exceeds
     * max_demand. */
    uint64_t rnd = 88172645463325252ull;
    while (next <= 3000) {
        if (outstanding > 0) {
            rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
            int64_t k = 1 + (int64_t)(rnd % (uint64_t)outstanding);
            send_events(cpid, ref, next, k);
            next += k;
            outstanding -= k;
            for (;;) {
                a = recv_ask(ref, 0);
                if (a == -1)
                    break;
                outstanding += a;
                if (a <= 0 || outstanding > f->opt_max)
                    f->violations++;
                if (outstanding > f->max_outstanding_seen)
                    f->max_outstanding_seen = outstanding;
            }
        } else {
            a = recv_ask(ref, 3000);
            if (a <= 0) {
                f->stalls++;
                break;
            }
            outstanding += a;
            if (outstanding > f->opt_max)
                f->violations++;
            if (outstanding > f->max_outstanding_seen)
                f->max_outstanding_seen = outstanding;
        }
    }
    f->total_sent = next - 1;
    /* Phase C: events for a subscription the consumer does not know. */
    kiln_msg *bogus = kiln_msg_new(64);
    kiln_term bref = kiln_make_ref(bogus);
    send_events(cpid, bref, 0, 2);
    kiln_msg *got;
    if (kiln_receive(is_tag3, &tag, 2000, &got) == KILN_OK) {
        /* Asks on the real subscription may come first. */
        kiln_term r, why;
        while (kiln_match(kiln_msg_term(got), "{'$gen_producer',{_,~t},{cancel,~t}}", &r, &why) != KILN_OK) {
            kiln_msg_free(got);
            got = NULL;
            if (kiln_receive(is_tag3, &tag, 2000, &got) != KILN_OK)
                break;
        }
        if (got) {
            f->unknown_cancel_ok = kiln_term_eq(r, bref) && why == A("unknown_subscription");
            kiln_msg_free(got);
        }
    }
    kiln_msg_free(bogus);
    /* Phase D: the producer cancels; the transient consumer survives a
     * shutdown. */
    kiln_msg *body = kiln_msg_new(32);
    send_wire(cpid, "$gen_consumer", ref, kiln_tuple(body, 2, A("cancel"), A("shutdown")));
    kiln_msg_free(body);
out_sub:
    kiln_msg_free(sub);
out:
    atomic_store(&f->done, 1);
}

static void test_wire_consumer_demand(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct fakep *f = calloc(1, sizeof(*f));
    kiln_term fp;
    assert_int_equal(kiln_spawn_fn(rt, fakep_body, f, NULL, &fp), KILN_OK);
    struct cctl *c = calloc(1, sizeof(*c));
    struct ccfg cfg = {.c = c, .check_increasing = true};
    kiln_term cons = start_consumer(rt, &cfg);
    kiln_msg *tag = subscribe(rt, cons, (kiln_stage_sub_opts){.to = fp, .max_demand = 10, .min_demand = 5,
                                                              .cancel = KILN_STAGE_TRANSIENT});
    assert_true(kiln_test_wait_flag(&f->done, 20000));
    assert_int_equal(f->subscribe_ok, 1);
    assert_true(kiln_term_eq(f->consumer, cons));
    assert_int_equal(f->sub_current_nil, 1);
    assert_int_equal(f->opt_max, 10);
    assert_int_equal(f->opt_min, 5);
    assert_int_equal(f->opt_cancel, A("transient"));
    /* Ask max at once, then top up to max whenever the owed demand falls
     * to min or below. */
    assert_int_equal(f->nasks, 4);
    assert_int_equal(f->asks[0], 10);
    assert_int_equal(f->asks[1], 6);
    assert_int_equal(f->asks[2], 5);
    assert_int_equal(f->asks[3], 5);
    assert_int_equal(f->phase_a_quiet, 1);
    assert_int_equal(f->violations, 0);
    assert_int_equal(f->stalls, 0);
    assert_true(f->max_outstanding_seen <= 10);
    assert_int_equal(f->unknown_cancel_ok, 1);
    /* Every event arrived, in order, in batches of at most max - min. */
    assert_true(kiln_test_wait_count(&c->cancels, 1, 5000));
    assert_int_equal(atomic_load(&c->count), f->total_sent);
    assert_int_equal(atomic_load(&c->order_violations), 0);
    assert_true(atomic_load(&c->max_batch) <= 5);
    for (long i = 0; i < atomic_load(&c->count) && i < LOG_CAP; i++)
        assert_int_equal(c->log[i], i + 1);
    assert_int_equal(atomic_load(&c->cancel_kind), A("cancel"));
    assert_int_equal(atomic_load(&c->cancel_reason), A("shutdown"));
    /* transient + shutdown: still alive */
    sleep_ms(20);
    assert_true(kiln_is_alive(rt, cons));
    kiln_msg_free(tag);
    assert_int_equal(kiln_gs_stop_server(rt, cons, A("normal"), 5000), KILN_OK);
    kiln_rt_stop(rt);
    free(f);
    free(c);
}

/* ---- wire test 2: a hand-written consumer checks a Kiln producer ---- */

struct fakec {
    kiln_term producer;
    int64_t got[16];
    int ngot, shape_ok, quiet_after_5, dup_ok, unknown_ok, cancel_ok;
    _Atomic int done;
};

/* Events for ref, appended to f->got; false on timeout or a bad shape. */
static bool recv_events(struct fakec *f, kiln_term ref, int64_t timeout)
{
    kiln_term tag = A("$gen_consumer");
    kiln_msg *m;
    if (kiln_receive(is_tag3, &tag, timeout, &m) != KILN_OK)
        return false;
    kiln_term p, r, list;
    bool ok = kiln_match(kiln_msg_term(m), "{'$gen_consumer',{~p,~t},~t}", &p, &r, &list) == KILN_OK &&
              kiln_term_eq(p, f->producer) && kiln_term_eq(r, ref) && kiln_is_cons(list);
    for (kiln_term t = list; ok && kiln_is_cons(t); t = kiln_tl(t))
        if (f->ngot < 16)
            kiln_get_int64(kiln_hd(t), &f->got[f->ngot++]);
    kiln_msg_free(m);
    return ok;
}

static kiln_term recv_cancel(kiln_term *ref_out, kiln_msg **hold)
{
    kiln_term tag = A("$gen_consumer");
    kiln_msg *m;
    *hold = NULL;
    *ref_out = KILN_NONE;
    if (kiln_receive(is_tag3, &tag, 2000, &m) != KILN_OK)
        return KILN_NONE;
    kiln_term r, why;
    if (kiln_match(kiln_msg_term(m), "{'$gen_consumer',{_,~t},{cancel,~t}}", &r, &why) != KILN_OK) {
        kiln_msg_free(m);
        return KILN_NONE;
    }
    *ref_out = r;
    *hold = m;
    return why;
}

static void fakec_body(void *arg)
{
    struct fakec *f = arg;
    kiln_msg *rm = kiln_msg_new(128);
    kiln_term ref;
    kiln_monitor(f->producer, rm, &ref); /* the protocol: monitor, then subscribe */
    kiln_msg *b = kiln_msg_new(256);
    send_wire(f->producer, "$gen_producer", ref,
              kiln_build(b, "{subscribe,nil,[{max_demand,5},{cancel,temporary}]}"));
    send_wire(f->producer, "$gen_producer", ref, kiln_build(b, "{ask,5}"));
    f->shape_ok = 1;
    while (f->ngot < 5 && f->shape_ok)
        f->shape_ok = recv_events(f, ref, 2000);
    f->quiet_after_5 = f->ngot == 5 && !recv_events(f, ref, 100);
    send_wire(f->producer, "$gen_producer", ref, kiln_build(b, "{ask,3}"));
    while (f->ngot < 8 && f->shape_ok)
        f->shape_ok = recv_events(f, ref, 2000);
    /* A duplicate subscription is refused on the known ref. */
    send_wire(f->producer, "$gen_producer", ref, kiln_build(b, "{subscribe,nil,[]}"));
    kiln_term r;
    kiln_msg *h;
    kiln_term why = recv_cancel(&r, &h);
    f->dup_ok = why == A("duplicated_subscription") && kiln_term_eq(r, ref);
    kiln_msg_free(h);
    /* An ask on an unknown subscription is answered with a cancel. */
    kiln_term bogus = kiln_make_ref(b);
    send_wire(f->producer, "$gen_producer", bogus, kiln_build(b, "{ask,1}"));
    why = recv_cancel(&r, &h);
    f->unknown_ok = why == A("unknown_subscription") && kiln_term_eq(r, bogus);
    kiln_msg_free(h);
    /* Our cancel is confirmed with the same reason. */
    send_wire(f->producer, "$gen_producer", ref, kiln_build(b, "{cancel,bye}"));
    why = recv_cancel(&r, &h);
    f->cancel_ok = why == A("bye") && kiln_term_eq(r, ref);
    kiln_msg_free(h);
    kiln_demonitor(ref, true);
    kiln_msg_free(b);
    kiln_msg_free(rm);
    atomic_store(&f->done, 1);
}

static void test_wire_producer_demand(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct pctl pc = {0};
    struct pcfg cfg = {.c = &pc, .limit = -1};
    struct fakec *f = calloc(1, sizeof(*f));
    f->producer = start_producer(rt, &cfg);
    kiln_term fc;
    assert_int_equal(kiln_spawn_fn(rt, fakec_body, f, NULL, &fc), KILN_OK);
    assert_true(kiln_test_wait_flag(&f->done, 10000));
    assert_int_equal(f->shape_ok, 1);
    assert_int_equal(f->ngot, 8);
    for (int i = 0; i < 8; i++)
        assert_int_equal(f->got[i], i);
    assert_int_equal(f->quiet_after_5, 1); /* never more than asked */
    assert_int_equal(atomic_load(&pc.demanded), 8);
    assert_int_equal(f->dup_ok, 1);
    assert_int_equal(f->unknown_ok, 1);
    assert_int_equal(f->cancel_ok, 1);
    assert_true(kiln_test_wait_count(&pc.cancels, 1, 5000));
    assert_int_equal(atomic_load(&pc.cancel_kind), A("cancel"));
    assert_int_equal(atomic_load(&pc.cancel_reason), A("bye"));
    assert_int_equal(atomic_load(&pc.subscribes), 1);
    assert_int_equal(kiln_gs_stop_server(rt, f->producer, A("normal"), 5000), KILN_OK);
    kiln_rt_stop(rt);
    free(f);
}

/* ---- demand dispatcher: events spread over consumers, none lost ---- */

static void test_demand_dispatcher(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct pctl pc = {0};
    enum { N = 3000, NC = 3 };
    /* Accumulate until all have subscribed, so each gets a share. */
    struct pcfg pcfg = {.c = &pc, .limit = N, .accumulate = true};
    kiln_term prod = start_producer(rt, &pcfg);
    struct cctl *c = calloc(NC, sizeof(*c));
    kiln_term cons[NC];
    for (int i = 0; i < NC; i++) {
        struct ccfg cfg = {.c = &c[i], .check_increasing = true};
        cons[i] = start_consumer(rt, &cfg);
        kiln_msg_free(subscribe(rt, cons[i], (kiln_stage_sub_opts){.to = prod, .max_demand = 7}));
    }
    assert_int_equal(kiln_stage_set_demand(rt, prod, false), KILN_OK);
    for (int i = 0; i < 5000; i++) {
        long total = 0;
        for (int k = 0; k < NC; k++)
            total += atomic_load(&c[k].count);
        if (total >= N)
            break;
        sleep_ms(1);
    }
    char *seen = calloc(N, 1);
    long total = 0;
    for (int k = 0; k < NC; k++) {
        long n = atomic_load(&c[k].count);
        total += n;
        assert_true(n > 0); /* every consumer got a share */
        assert_int_equal(atomic_load(&c[k].order_violations), 0);
        assert_true(atomic_load(&c[k].max_batch) <= 7 - 3); /* max - min (min defaults to 7/2) */
        for (long i = 0; i < n; i++) {
            assert_true(c[k].log[i] >= 0 && c[k].log[i] < N);
            assert_int_equal(seen[c[k].log[i]], 0);
            seen[c[k].log[i]] = 1;
        }
    }
    assert_int_equal(total, N);
    free(seen);
    /* The producer was asked only for what consumers could take: at most
     * N plus one max_demand per consumer. */
    assert_true(atomic_load(&pc.demanded) <= N + NC * 7);
    kiln_rt_stop(rt);
    free(c);
}

/* ---- broadcast: everyone gets everything, paced by the slowest ---- */

static void test_broadcast(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct pctl pc = {0};
    enum { N = 400, NC = 3 };
    struct pcfg pcfg = {.c = &pc, .limit = N, .disp = KILN_STAGE_DISPATCH_BROADCAST, .accumulate = true};
    kiln_term prod = start_producer(rt, &pcfg);
    bool acc = false;
    assert_int_equal(kiln_stage_get_demand(rt, prod, 5000, &acc), KILN_OK);
    assert_true(acc);
    struct cctl *c = calloc(NC, sizeof(*c));
    kiln_term cons[NC];
    for (int i = 0; i < NC; i++) {
        struct ccfg cfg = {.c = &c[i], .check_increasing = true};
        if (i == 0) { /* the slow one */
            cfg.sleep_ms = 2;
            cfg.pace_emitted = &pc.emitted;
            cfg.pace_max = 10;
        }
        cons[i] = start_consumer(rt, &cfg);
        kiln_msg_free(subscribe(rt, cons[i], (kiln_stage_sub_opts){.to = prod, .max_demand = i == 0 ? 10 : 50}));
    }
    /* The same pid twice is refused: a temporary subscription survives it. */
    kiln_msg_free(subscribe(rt, cons[1], (kiln_stage_sub_opts){.to = prod, .cancel = KILN_STAGE_TEMPORARY}));
    assert_true(kiln_test_wait_count(&c[1].cancels, 1, 5000));
    assert_int_equal(atomic_load(&c[1].cancel_reason), A("already_subscribed"));
    /* Nothing flowed while accumulating. */
    sleep_ms(30);
    assert_int_equal(atomic_load(&pc.emitted), 0);
    assert_int_equal(kiln_stage_set_demand(rt, prod, false), KILN_OK);
    assert_int_equal(kiln_stage_get_demand(rt, prod, 5000, &acc), KILN_OK);
    assert_false(acc);
    for (int k = 0; k < NC; k++)
        assert_true(kiln_test_wait_count(&c[k].count, N, 20000));
    for (int k = 0; k < NC; k++) {
        assert_int_equal(atomic_load(&c[k].count), N);
        for (long i = 0; i < N; i++)
            assert_int_equal(c[k].log[i], i);
        assert_int_equal(atomic_load(&c[k].order_violations), 0);
    }
    /* The slow consumer never had more than its max_demand produced ahead
     * of it, although the others asked for 50. */
    assert_int_equal(atomic_load(&c[0].pace_violations), 0);
    assert_true(atomic_load(&c[0].max_batch) <= 5);
    kiln_rt_stop(rt);
    free(c);
}

/* ---- partition: a hash routes each event to one partition ---- */

static int64_t mod4(kiln_term ev, void *arg)
{
    (void)arg;
    int64_t v = 0;
    kiln_get_int64(ev, &v);
    return v % 4;
}

static int64_t mod2_drop_9(kiln_term ev, void *arg)
{
    (void)arg;
    int64_t v = 0;
    kiln_get_int64(ev, &v);
    return v % 10 == 9 ? -1 : v % 2;
}

static void check_partition_log(struct cctl *c, int64_t n, int64_t (*hash)(kiln_term, void *), int64_t part)
{
    long k = 0;
    for (int64_t v = 0; v < n; v++)
        if (hash(kiln_small(v), NULL) == part) {
            assert_true(k < atomic_load(&c->count));
            assert_int_equal(c->log[k++], v);
        }
    assert_int_equal(atomic_load(&c->count), k);
    assert_int_equal(atomic_load(&c->order_violations), 0);
}

static void test_partition(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct pctl pc = {0};
    enum { N = 2000, NP = 4 };
    struct pcfg pcfg = {.c = &pc, .limit = N, .disp = KILN_STAGE_DISPATCH_PARTITION, .partitions = NP, .hash = mod4};
    kiln_term prod = start_producer(rt, &pcfg);
    struct cctl *c = calloc(NP + 4, sizeof(*c));
    for (int i = 0; i < NP; i++) {
        struct ccfg cfg = {.c = &c[i], .check_increasing = true, .sleep_ms = i == 3 ? 1 : 0};
        kiln_term cp = start_consumer(rt, &cfg);
        /* Partitions subscribe one by one; events for partitions nobody
         * has taken yet wait in their queue. */
        kiln_msg_free(subscribe(rt, cp, (kiln_stage_sub_opts){.to = prod, .max_demand = 6,
                                                               .partition = kiln_small(i)}));
        sleep_ms(5);
    }
    /* A taken partition and an unknown one are refused. */
    struct ccfg cfg_t = {.c = &c[NP]}, cfg_u = {.c = &c[NP + 1]};
    kiln_term ct = start_consumer(rt, &cfg_t), cu = start_consumer(rt, &cfg_u);
    kiln_msg_free(subscribe(rt, ct, (kiln_stage_sub_opts){.to = prod, .partition = kiln_small(0),
                                                           .cancel = KILN_STAGE_TEMPORARY}));
    kiln_msg_free(subscribe(rt, cu, (kiln_stage_sub_opts){.to = prod, .partition = kiln_small(9)}));
    assert_true(kiln_test_wait_count(&c[NP].cancels, 1, 5000));
    assert_int_equal(atomic_load(&c[NP].cancel_reason), A("partition_taken"));
    wait_dead(rt, cu); /* permanent: exits with the cancel reason */
    assert_int_equal(atomic_load(&c[NP + 1].term_reason), A("unknown_partition"));
    for (int i = 0; i < NP; i++)
        if (!kiln_test_wait_count(&c[i].count, N / NP, 20000))
            fail_msg("partition %d: %ld of %d events (emitted %ld, demanded %ld)", i, atomic_load(&c[i].count),
                     N / NP, atomic_load(&pc.emitted), atomic_load(&pc.demanded));
    sleep_ms(20);
    for (int i = 0; i < NP; i++)
        check_partition_log(&c[i], N, mod4, i);

    /* Discarding (hash -1): the events go nowhere. As in GenStage a
     * discarded event uses up the demand it was produced for, so this
     * producer emits a batch beyond demand (the rest is buffered). */
    struct pctl pc2 = {0};
    struct pcfg pcfg2 = {.c = &pc2, .limit = 0, .disp = KILN_STAGE_DISPATCH_PARTITION, .partitions = 2,
                         .hash = mod2_drop_9};
    kiln_term prod2 = start_producer(rt, &pcfg2);
    for (int i = 0; i < 2; i++) {
        struct ccfg cfg = {.c = &c[NP + 2 + i], .check_increasing = true};
        kiln_term cp = start_consumer(rt, &cfg);
        kiln_msg_free(subscribe(rt, cp, (kiln_stage_sub_opts){.to = prod2, .max_demand = 100,
                                                               .partition = kiln_small(i)}));
    }
    kiln_msg *reply = NULL;
    assert_int_equal(kiln_gs_call(rt, prod2, kiln_test_msg("{emit,~i}", (int64_t)60), 5000, &reply, NULL), KILN_OK);
    kiln_msg_free(reply);
    assert_true(kiln_test_wait_count(&c[NP + 2].count, 30, 5000)); /* the evens */
    assert_true(kiln_test_wait_count(&c[NP + 3].count, 24, 5000)); /* odds but x9 */
    sleep_ms(20);
    for (int i = 0; i < 2; i++)
        check_partition_log(&c[NP + 2 + i], 60, mod2_drop_9, i);
    kiln_rt_stop(rt);
    free(c);
}

/* ---- manual demand ---- */

static void test_manual_demand(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct pctl pc = {0};
    struct pcfg pcfg = {.c = &pc, .limit = -1};
    kiln_term prod = start_producer(rt, &pcfg);
    struct cctl *c = calloc(1, sizeof(*c));
    struct ccfg cfg = {.c = c, .manual = true, .initial_ask = 3, .check_increasing = true};
    kiln_term cons = start_consumer(rt, &cfg);
    kiln_msg_free(subscribe(rt, cons, (kiln_stage_sub_opts){.to = prod, .max_demand = 2}));
    assert_true(kiln_test_wait_count(&c->count, 3, 5000));
    /* No automatic top-up: max_demand does not apply to a manual
     * subscription, and nothing more comes until we ask. */
    sleep_ms(100);
    assert_int_equal(atomic_load(&c->count), 3);
    assert_int_equal(atomic_load(&pc.demanded), 3);
    assert_int_equal(kiln_gs_cast(rt, cons, kiln_test_msg("{ask,~i}", (int64_t)4)), KILN_OK);
    assert_true(kiln_test_wait_count(&c->count, 7, 5000));
    sleep_ms(100);
    assert_int_equal(atomic_load(&c->count), 7);
    for (int i = 0; i < 7; i++)
        assert_int_equal(c->log[i], i);
    /* kiln_stage_ask outside a process has no consumer to send from. */
    kiln_msg *m = kiln_msg_new(64);
    assert_int_equal(kiln_stage_ask(kiln_tuple(m, 2, prod, A("tag")), 1), KILN_ENOTPROC);
    kiln_msg_free(m);
    kiln_rt_stop(rt);
    free(c);
}

/* ---- cancel modes ---- */

static void test_cancel_modes_producer_exit(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct pctl pc = {0};
    /* No events: an endless producer and its consumers feeding each
     * other would starve the rest of their worker (see the runtime
     * notes in docs/otp.md); subscriptions are all this needs. */
    struct pcfg pcfg = {.c = &pc, .limit = 0};
    kiln_term prod = start_producer(rt, &pcfg);
    struct cctl *c = calloc(4, sizeof(*c));
    kiln_stage_cancel_mode modes[4] = {KILN_STAGE_TEMPORARY, KILN_STAGE_PERMANENT, KILN_STAGE_TRANSIENT,
                                       KILN_STAGE_TRANSIENT};
    kiln_term cons[4];
    for (int i = 0; i < 4; i++) {
        struct ccfg cfg = {.c = &c[i]};
        cons[i] = start_consumer(rt, &cfg);
    }
    /* The last transient one watches a producer that stops with shutdown. */
    struct pctl pc2 = {0};
    struct pcfg pcfg2 = {.c = &pc2, .limit = 0};
    kiln_term prod2 = start_producer(rt, &pcfg2);
    for (int i = 0; i < 4; i++)
        kiln_msg_free(subscribe(rt, cons[i], (kiln_stage_sub_opts){.to = i == 3 ? prod2 : prod, .max_demand = 4,
                                                                   .cancel = modes[i]}));
    assert_true(kiln_test_wait_count(&pc.subscribes, 3, 5000));
    assert_true(kiln_test_wait_count(&pc2.subscribes, 1, 5000));
    assert_int_equal(kiln_gs_stop_server(rt, prod, A("boom"), 5000), KILN_OK);
    assert_int_equal(kiln_gs_stop_server(rt, prod2, A("shutdown"), 5000), KILN_OK);
    /* permanent and transient: exit with the producer's reason */
    wait_dead(rt, cons[1]);
    wait_dead(rt, cons[2]);
    assert_int_equal(atomic_load(&c[1].term_reason), A("boom"));
    assert_int_equal(atomic_load(&c[2].term_reason), A("boom"));
    /* handle_cancel ran before the exit */
    assert_int_equal(atomic_load(&c[1].cancel_kind), A("down"));
    assert_int_equal(atomic_load(&c[1].cancel_reason), A("boom"));
    /* temporary: survives, told {down, boom}; transient: survives shutdown */
    assert_true(kiln_test_wait_count(&c[0].cancels, 1, 5000));
    assert_true(kiln_test_wait_count(&c[3].cancels, 1, 5000));
    sleep_ms(20);
    assert_true(kiln_is_alive(rt, cons[0]));
    assert_true(kiln_is_alive(rt, cons[3]));
    assert_int_equal(atomic_load(&c[0].cancel_kind), A("down"));
    assert_int_equal(atomic_load(&c[0].cancel_reason), A("boom"));
    assert_int_equal(atomic_load(&c[3].cancel_reason), A("shutdown"));
    assert_int_equal(atomic_load(&c[0].terminated), 0);
    kiln_rt_stop(rt);
    free(c);
}

static void test_cancel_modes_cancel(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct pctl pc = {0};
    struct pcfg pcfg = {.c = &pc, .limit = 0};
    kiln_term prod = start_producer(rt, &pcfg);
    struct cctl *c = calloc(3, sizeof(*c));
    kiln_term cons[3];
    kiln_msg *tags[3];
    kiln_stage_cancel_mode modes[3] = {KILN_STAGE_PERMANENT, KILN_STAGE_TEMPORARY, KILN_STAGE_PERMANENT};
    for (int i = 0; i < 3; i++) {
        struct ccfg cfg = {.c = &c[i]};
        cons[i] = start_consumer(rt, &cfg);
        tags[i] = subscribe(rt, cons[i], (kiln_stage_sub_opts){.to = prod, .max_demand = 4, .cancel = modes[i]});
    }
    assert_true(kiln_test_wait_count(&pc.subscribes, 3, 5000));
    /* GenStage.cancel({Producer, Ref}, Reason), here from a foreign thread. */
    kiln_msg *fm = kiln_msg_new(64);
    for (int i = 0; i < 2; i++) {
        kiln_term from = kiln_tuple(fm, 2, prod, kiln_term_copy(fm, kiln_msg_term(tags[i])));
        assert_int_equal(kiln_stage_cancel(rt, from, A("my_cancel")), KILN_OK);
    }
    /* permanent: exits with the cancel reason; temporary: lives on */
    wait_dead(rt, cons[0]);
    assert_int_equal(atomic_load(&c[0].term_reason), A("my_cancel"));
    assert_int_equal(atomic_load(&c[0].cancel_kind), A("cancel"));
    assert_true(kiln_test_wait_count(&c[1].cancels, 1, 5000));
    assert_int_equal(atomic_load(&c[1].cancel_kind), A("cancel"));
    assert_int_equal(atomic_load(&c[1].cancel_reason), A("my_cancel"));
    sleep_ms(20);
    assert_true(kiln_is_alive(rt, cons[1]));
    /* The producer saw both cancels, and the third consumer's death. */
    assert_true(kiln_test_wait_count(&pc.cancels, 2, 5000));
    assert_int_equal(atomic_load(&pc.cancel_kind), A("cancel"));
    assert_int_equal(kiln_rt_exit(rt, cons[2], KILN_ATOM_KILL), KILN_OK);
    assert_true(kiln_test_wait_count(&pc.cancels, 3, 5000));
    assert_int_equal(atomic_load(&pc.cancel_kind), A("down"));
    assert_int_equal(atomic_load(&pc.cancel_reason), A("killed"));
    /* The producer lives on. */
    assert_true(kiln_is_alive(rt, prod));
    kiln_msg_free(fm);
    for (int i = 0; i < 3; i++)
        kiln_msg_free(tags[i]);
    kiln_rt_stop(rt);
    free(c);
}

/* ---- subscribe errors ---- */

/* A terminate that frees its state and then blocks for good, stopped
 * from the loop and killed there by runtime stop: the stage's own state
 * goes too (ASan's leak check is the assertion). */
static void stuck_terminate(void *state, kiln_term reason)
{
    prod_terminate(state, reason);
    kiln_sleep(1000000);
}

static void test_killed_in_terminate_leaks_nothing(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    kiln_gen_stage stuck = counter_producer;
    stuck.terminate = stuck_terminate;
    struct pctl c = {0};
    struct pcfg cfg = {.c = &c, .limit = -1};
    kiln_term pid = KILN_NONE;
    assert_int_equal(kiln_stage_start(rt, &stuck, &cfg, NULL, &pid, NULL), KILN_OK);
    assert_int_equal(kiln_gs_stop_server(rt, pid, KILN_ATOM_SHUTDOWN, 200), KILN_ETIMEOUT);
    assert_true(kiln_test_wait_flag(&c.terminated, 5000));
    assert_true(kiln_is_alive(rt, pid));
    kiln_rt_stop(rt);
}

static void test_subscribe_errors(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct pctl pc = {0};
    struct pcfg pcfg = {.c = &pc, .limit = -1};
    kiln_term prod = start_producer(rt, &pcfg);
    kiln_stage_sub_opts o = {.to = prod};
    /* A producer is not a consumer. */
    assert_int_equal(kiln_stage_subscribe(rt, prod, &o, 5000, NULL), KILN_EBADARG);
    struct cctl *c = calloc(2, sizeof(*c));
    struct ccfg cfg = {.c = &c[0]}, cfg2 = {.c = &c[1]};
    kiln_term cons = start_consumer(rt, &cfg);
    /* min_demand must be below max_demand */
    kiln_stage_sub_opts bad = {.to = prod, .max_demand = 5, .min_demand = 5};
    assert_int_equal(kiln_stage_subscribe(rt, cons, &bad, 5000, NULL), KILN_EINVAL);
    /* A producer that is not there: temporary is fine... */
    kiln_stage_sub_opts gone = {.to = A("no_such_stage"), .cancel = KILN_STAGE_TEMPORARY};
    kiln_msg *tag = NULL;
    assert_int_equal(kiln_stage_subscribe(rt, cons, &gone, 5000, &tag), KILN_OK);
    assert_true(kiln_is_ref(kiln_msg_term(tag)));
    kiln_msg_free(tag);
    assert_true(kiln_is_alive(rt, cons));
    /* ...permanent exits with noproc (after answering, as GenStage does). */
    gone.cancel = KILN_STAGE_PERMANENT;
    assert_int_equal(kiln_stage_subscribe(rt, cons, &gone, 5000, NULL), KILN_OK);
    wait_dead(rt, cons);
    assert_int_equal(atomic_load(&c[0].term_reason), A("noproc"));
    /* subscribe_to in init: a missing permanent producer fails the start. */
    kiln_stage_sub_opts to_gone = {.to = A("no_such_stage")};
    cfg2.sub = &to_gone;
    cfg2.nsub = 1;
    kiln_term pid = KILN_NONE;
    kiln_msg *why = NULL;
    assert_int_equal(kiln_stage_start(rt, &recorder, &cfg2, NULL, &pid, &why), KILN_EEXIT);
    assert_int_equal(kiln_msg_term(why), A("noproc"));
    kiln_msg_free(why);
    assert_int_equal(atomic_load(&c[1].terminated), 1); /* its state was freed */
    kiln_rt_stop(rt);
    free(c);
}

/* ---- buffer_keep first / last ---- */

static void run_buffer(kiln_stage_keep keep, int64_t first_expected)
{
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct pctl pc = {0};
    /* limit 0: handle_demand emits nothing; only {emit, N} calls do. */
    struct pcfg pcfg = {.c = &pc, .limit = 0, .buffer_size = 5, .keep = keep};
    kiln_term prod = start_producer(rt, &pcfg);
    kiln_msg *reply = NULL;
    assert_int_equal(kiln_gs_call(rt, prod, kiln_test_msg("{emit,~i}", (int64_t)12), 5000, &reply, NULL), KILN_OK);
    assert_int_equal(kiln_msg_term(reply), KILN_ATOM_OK);
    kiln_msg_free(reply);
    int64_t n = -1;
    assert_int_equal(kiln_stage_estimate_buffered_count(rt, prod, 5000, &n), KILN_OK);
    assert_int_equal(n, 5);
    assert_int_equal(kiln_stage_discarded_count(rt, prod, 5000, &n), KILN_OK);
    assert_int_equal(n, 7);
    assert_int_equal(atomic_load(&pc.discarded_cb), 7);
    /* A second batch into the full buffer. */
    assert_int_equal(kiln_gs_call(rt, prod, kiln_test_msg("{emit,~i}", (int64_t)3), 5000, &reply, NULL), KILN_OK);
    kiln_msg_free(reply);
    assert_int_equal(kiln_stage_discarded_count(rt, prod, 5000, &n), KILN_OK);
    assert_int_equal(n, 10);
    assert_int_equal(atomic_load(&pc.discarded_cb), 10);
    /* A consumer drains the buffer: the kept events, in order. */
    struct cctl *c = calloc(1, sizeof(*c));
    struct ccfg cfg = {.c = c};
    kiln_term cons = start_consumer(rt, &cfg);
    kiln_msg_free(subscribe(rt, cons, (kiln_stage_sub_opts){.to = prod, .max_demand = 10}));
    assert_true(kiln_test_wait_count(&c->count, 5, 5000));
    sleep_ms(50);
    assert_int_equal(atomic_load(&c->count), 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(c->log[i], first_expected + i);
    assert_int_equal(kiln_stage_estimate_buffered_count(rt, prod, 5000, &n), KILN_OK);
    assert_int_equal(n, 0);
    /* What the buffer could not serve reached handle_demand: 10 - 5 of
     * the first ask, then the 5 the consumer topped up with after its
     * batch (10 - 5 owed <= min_demand 5). */
    assert_int_equal(atomic_load(&pc.demanded), 10);
    kiln_rt_stop(rt);
    free(c);
}

static void test_buffer_keep_first(void **st)
{
    (void)st;
    run_buffer(KILN_STAGE_KEEP_FIRST, 0); /* 0..4 kept; 5..11 and 12..14 dropped */
}

static void test_buffer_keep_last(void **st)
{
    (void)st;
    run_buffer(KILN_STAGE_KEEP_LAST, 10); /* 10..14 kept: the newest */
}

/* ---- producer -> producer_consumer -> consumer ---- */

static void test_pipeline_order(void **st)
{
    (void)st;
    kiln_rt *rt = kiln_test_rt(2, NULL);
    struct pctl pc = {0};
    enum { N = 3000 };
    struct pcfg pcfg = {.c = &pc, .limit = N};
    kiln_term prod = start_producer(rt, &pcfg);
    /* Both subscribe in init (subscribe_to). */
    kiln_stage_sub_opts up = {.to = prod, .max_demand = 8, .min_demand = 2};
    struct ccfg dcfg = {.sub = &up, .nsub = 1};
    kiln_term mid = KILN_NONE;
    assert_int_equal(kiln_stage_start(rt, &doubler, &dcfg, NULL, &mid, NULL), KILN_OK);
    kiln_stage_sub_opts down = {.to = mid, .max_demand = 5, .min_demand = KILN_STAGE_DEMAND_ZERO};
    struct cctl *c = calloc(1, sizeof(*c));
    struct ccfg ccfg = {.c = c, .check_increasing = true, .sub = &down, .nsub = 1};
    kiln_term cons = start_consumer(rt, &ccfg);
    assert_true(kiln_test_wait_count(&c->count, N, 20000));
    sleep_ms(20);
    assert_int_equal(atomic_load(&c->count), N);
    for (long i = 0; i < N; i++)
        assert_int_equal(c->log[i], 2 * i);
    assert_true(atomic_load(&c->max_batch) <= 5);
    /* The producer_consumer only took what its consumer could use: the
     * producer was never asked far beyond the total. */
    assert_true(atomic_load(&pc.demanded) <= N + 8);
    int64_t n = -1;
    assert_int_equal(kiln_stage_estimate_buffered_count(rt, mid, 5000, &n), KILN_OK);
    assert_int_equal(n, 0);
    /* Stopping the middle with a reason takes the permanent consumer down. */
    assert_int_equal(kiln_gs_stop_server(rt, mid, A("done"), 5000), KILN_OK);
    wait_dead(rt, cons);
    assert_int_equal(atomic_load(&c->term_reason), A("done"));
    kiln_rt_stop(rt);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wire_consumer_demand),
        cmocka_unit_test(test_wire_producer_demand),
        cmocka_unit_test(test_demand_dispatcher),
        cmocka_unit_test(test_broadcast),
        cmocka_unit_test(test_partition),
        cmocka_unit_test(test_manual_demand),
        cmocka_unit_test(test_cancel_modes_producer_exit),
        cmocka_unit_test(test_cancel_modes_cancel),
        cmocka_unit_test(test_subscribe_errors),
        cmocka_unit_test(test_killed_in_terminate_leaks_nothing),
        cmocka_unit_test(test_buffer_keep_first),
        cmocka_unit_test(test_buffer_keep_last),
        cmocka_unit_test(test_pipeline_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
