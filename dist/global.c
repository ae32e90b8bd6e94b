/* global_name_server on a visible node: enough of OTP's global protocol
 * (version 8, OTP 25) for an Erlang peer to count this node as synced.
 *
 * Kiln keeps no global names, so it never has anything to lock or to
 * resolve: it never starts a lock round itself and only answers the
 * peer's. Per peer, one round is (docs/dist.md has the message shapes):
 *
 *   peer: init_connect {8, HisTag} ->      we answer with our own
 *                                          init_connect {8, MyTag}
 *   peer's locker: lock_set true MyTag ->  lock_set true HisTag, then
 *                                          exchange (no names) HisTag
 *   peer: exchange MyTag ->                resolved (nothing) HisTag
 *   peer: resolved MyTag ->                synced
 *
 * A peer that learnt of us through a third node skips the round and sends
 * in_sync instead; we answer in kind, which is what it then waits for.
 * Lock and registration calls are answered yes: the names live on the
 * Erlang nodes, which lock among themselves. */
#include <string.h>

#include "dist/node_internal.h"
#include "runtime/alloc.h"

struct gpeer {
    kiln_term node;
    int64_t my_tag;   /* 0: no round of ours under way */
    kiln_msg *his;    /* root: the peer's tag for the round, or NULL */
    bool synced;
};

struct gstate {
    kiln_node *n;
    struct gpeer *v;
    size_t len, cap;
    int64_t next_tag;
};

static kiln_term a_gns(void) { return kiln_atom_c("global_name_server"); }

static struct gpeer *peer_find(struct gstate *s, kiln_term node, bool add)
{
    for (size_t i = 0; i < s->len; i++)
        if (s->v[i].node == node)
            return &s->v[i];
    if (!add)
        return NULL;
    if (s->len == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        struct gpeer *v = kiln_realloc(s->v, cap * sizeof(*v));
        if (!v)
            return NULL;
        s->v = v;
        s->cap = cap;
    }
    struct gpeer *p = &s->v[s->len++];
    memset(p, 0, sizeof(*p));
    p->node = node;
    return p;
}

static void peer_reset(struct gpeer *p)
{
    kiln_msg_free(p->his);
    p->his = NULL;
    p->my_tag = 0;
}

static void peer_drop(struct gstate *s, kiln_term node)
{
    struct gpeer *p = peer_find(s, node, false);
    if (!p)
        return;
    peer_reset(p);
    *p = s->v[--s->len];
}

/* gen_server:cast({global_name_server, Node}, Msg), with Msg built in m. */
static void cast(kiln_term node, kiln_msg *m, kiln_term msg)
{
    if (kiln_is_none(msg)) {
        kiln_msg_free(m);
        return;
    }
    kiln_msg_set_term(m, kiln_tuple(m, 2, KILN_ATOM_GEN_CAST, msg));
    kiln_msg *to = kiln_msg_new(32);
    if (!to) {
        kiln_msg_free(m);
        return;
    }
    kiln_send(kiln_tuple(to, 2, a_gns(), node), m);
    kiln_msg_free(to);
}

static bool tag_is_mine(const struct gpeer *p, kiln_term tag)
{
    return p && p->my_tag != 0 && tag == kiln_small(p->my_tag);
}

/* Our half of the round: a fresh tag, and the locker the peer is to name
 * in lock ids. No message goes to it directly at version 8 (lock_set
 * travels through global_name_server), so this process serves as both. */
static void send_init_connect(struct gstate *s, struct gpeer *p)
{
    p->my_tag = s->next_tag++;
    kiln_msg *m = kiln_msg_new(128);
    if (!m)
        return;
    cast(p->node, m,
         kiln_build(m, "{init_connect,{8,~t},~A,{locker,no_longer_a_pid,[],~p}}", kiln_small(p->my_tag),
                    s->n->name, kiln_self()));
}

static void send_in_sync(struct gstate *s, kiln_term node)
{
    kiln_msg *m = kiln_msg_new(64);
    if (m)
        cast(node, m, kiln_build(m, "{in_sync,~A,true}", s->n->name));
}

static void on_init_connect(struct gstate *s, kiln_term node, kiln_term vsn)
{
    /* {Vsn, Tag}, or a longer tuple from a later version. */
    if (!kiln_is_atom(node) || !kiln_is_tuple(vsn) || kiln_tuple_arity(vsn) < 2)
        return;
    struct gpeer *p = peer_find(s, node, true);
    if (!p)
        return;
    /* A peer sends init_connect only after dropping what it had about us
     * (a first nodeup, or a restart), so it needs ours again too. */
    peer_reset(p);
    p->synced = false;
    p->his = kiln_msg_new(32);
    if (!p->his)
        return;
    kiln_msg_set_term(p->his, kiln_term_copy(p->his, kiln_tuple_get(vsn, 1)));
    send_init_connect(s, p);
}

static void on_lock_set(struct gstate *s, kiln_term t)
{
    kiln_term locker, set, tag = KILN_NONE;
    size_t ar = kiln_tuple_arity(t);
    locker = kiln_tuple_get(t, 1);
    set = kiln_tuple_get(t, 2);
    if (ar == 5)
        tag = kiln_tuple_get(t, 4);
    kiln_term node;
    if (set != KILN_ATOM_TRUE || !kiln_is_box_of(locker, KILN_SUB_EXT_PID) ||
        kiln_get_ext_pid(locker, &node, NULL, NULL, NULL) != KILN_OK)
        return;
    struct gpeer *p = peer_find(s, node, false);
    bool ours = p && p->his && p->my_tag != 0 && (ar == 4 || tag_is_mine(p, tag));
    kiln_msg *m = kiln_msg_new(64);
    if (!m)
        return;
    if (!ours) {
        /* A stale tag is dropped, as OTP's server does; a locker that asks
         * without a tag (older versions) hears no. */
        if (ar == 4)
            cast(node, m, kiln_build(m, "{lock_set,~p,false,[]}", kiln_self()));
        else
            kiln_msg_free(m);
        return;
    }
    kiln_term his = kiln_msg_term(p->his);
    cast(node, m, kiln_build(m, "{lock_set,~p,true,[],~t}", kiln_self(), his));
    /* The lock is set on both sides: our (empty) name list follows. */
    m = kiln_msg_new(64);
    if (m)
        cast(node, m, kiln_build(m, "{exchange,~A,[],[],~t}", s->n->name, his));
}

static void on_exchange(struct gstate *s, kiln_term node, kiln_term tag)
{
    struct gpeer *p = peer_find(s, node, false);
    if (!tag_is_mine(p, tag) || !p->his)
        return;
    /* Kiln holds no names, so none of the peer's conflict with ours: no
     * resolutions, no known nodes to pass on, no external names. */
    kiln_msg *m = kiln_msg_new(64);
    if (m)
        cast(node, m, kiln_build(m, "{resolved,~A,[],[],unused,[],~t}", s->n->name, kiln_msg_term(p->his)));
}

static void on_resolved(struct gstate *s, kiln_term node, kiln_term tag)
{
    struct gpeer *p = peer_find(s, node, false);
    if (!tag_is_mine(p, tag))
        return;
    peer_reset(p);
    p->synced = true;
}

static void on_in_sync(struct gstate *s, kiln_term node)
{
    if (!kiln_is_atom(node))
        return;
    struct gpeer *p = peer_find(s, node, true);
    if (!p || p->synced)
        return;
    /* It counts us as known through another node and waits for word from
     * us; with no names here there is nothing to exchange first. */
    peer_reset(p);
    p->synced = true;
    send_in_sync(s, node);
}

static kiln_term synced_list(struct gstate *s, kiln_msg *m)
{
    kiln_term l = KILN_NIL;
    for (size_t i = 0; i < s->len; i++)
        if (s->v[i].synced)
            l = kiln_cons(m, s->v[i].node, l);
    return l;
}

static void on_call(struct gstate *s, kiln_term from, kiln_term req)
{
    kiln_msg *r = kiln_msg_new(64);
    if (!r)
        return;
    kiln_term reply;
    if (kiln_match(req, "{set_lock,_}") == KILN_OK || kiln_match(req, "{del_lock,_}") == KILN_OK)
        reply = KILN_ATOM_TRUE;
    else if (kiln_match(req, "{register,_,_,_}") == KILN_OK || kiln_match(req, "{register_ext,_,_,_,_}") == KILN_OK)
        reply = kiln_atom_c("yes");
    else if (kiln_match(req, "{unregister,_}") == KILN_OK)
        reply = KILN_ATOM_OK;
    else if (req == kiln_atom_c("get_known") || req == kiln_atom_c("get_names_ext"))
        reply = KILN_NIL;
    else if (req == kiln_atom_c("get_synced"))
        reply = synced_list(s, r);
    else if (req == kiln_atom_c("get_protocol_version"))
        reply = kiln_small(8);
    else {
        /* OTP's server does not answer what it does not know either. */
        kiln_msg_free(r);
        return;
    }
    kiln_msg_set_term(r, reply);
    kiln_reply(from, r);
}

static void on_cast(struct gstate *s, kiln_term c)
{
    if (!kiln_is_tuple(c) || kiln_tuple_arity(c) < 2)
        return;
    kiln_term op = kiln_tuple_get(c, 0);
    size_t ar = kiln_tuple_arity(c);
    if (op == kiln_atom_c("init_connect") && ar == 4)
        on_init_connect(s, kiln_tuple_get(c, 2), kiln_tuple_get(c, 1));
    else if (op == kiln_atom_c("lock_set") && (ar == 4 || ar == 5))
        on_lock_set(s, c);
    else if (op == kiln_atom_c("exchange") && ar == 5)
        on_exchange(s, kiln_tuple_get(c, 1), kiln_tuple_get(c, 4));
    else if (op == kiln_atom_c("resolved") && ar == 7)
        on_resolved(s, kiln_tuple_get(c, 1), kiln_tuple_get(c, 6));
    else if (op == kiln_atom_c("in_sync") && ar == 3)
        on_in_sync(s, kiln_tuple_get(c, 1));
    /* new_nodes, async_del_name, async_del_lock: about names and nodes
     * this node does not track. */
}

static kiln_action global_handle(void *state, kiln_msg *msg)
{
    struct gstate *s = state;
    kiln_term t = kiln_msg_term(msg), from, req, node, tag;
    if (kiln_match_call(t, &from, &req) == KILN_OK)
        on_call(s, from, req);
    else if (kiln_match(t, "{'$gen_cast',~t}", &req) == KILN_OK)
        on_cast(s, req);
    else if (kiln_match(t, "{cancel_connect,~A,~t}", &node, &tag) == KILN_OK) {
        /* The peer dropped the round (and starts a new one if it still
         * wants us): forget ours. */
        struct gpeer *p = peer_find(s, node, false);
        if (tag_is_mine(p, tag))
            peer_reset(p);
    } else if (kiln_match(t, "{nodedown,~A}", &node) == KILN_OK)
        peer_drop(s, node);
    /* init_connect_ack is a consistency check we do not need (we never
     * restart a round ourselves); lost_connection and remove_connection
     * concern overlapping partitions, which a node without names cannot
     * cause. */
    return KILN_CONTINUE;
}

static int global_init(void *arg, void **state)
{
    struct gstate *s = kiln_calloc(1, sizeof(*s));
    if (!s)
        return KILN_ENOMEM;
    s->n = arg;
    s->next_tag = 1;
    /* nodedown ends what we know about a peer, as it does in OTP. */
    int rc = kiln_monitor_nodes(true);
    if (rc != KILN_OK) {
        kiln_free(s);
        return rc;
    }
    *state = s;
    return KILN_OK;
}

static void global_terminate(void *state, kiln_term reason)
{
    (void)reason;
    struct gstate *s = state;
    for (size_t i = 0; i < s->len; i++)
        peer_reset(&s->v[i]);
    kiln_free(s->v);
    kiln_free(s);
}

static const kiln_behaviour global_beh = {"global_name_server", global_init, global_handle, global_terminate};

int kiln_global_start(kiln_node *n)
{
    kiln_spawn_opts o = {.register_as = "global_name_server"};
    return kiln_spawn(n->rt, &global_beh, n, &o, &n->global);
}
