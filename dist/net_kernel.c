/* The registered processes an Erlang node expects to find on its peers:
 *  - net_kernel answers {is_auth, Node} with yes, which is what
 *    net_adm:ping needs for pong;
 *  - on a visible node, rex answers features_request (OTP's rpc asks on
 *    connect) and global_name_server (global.c) takes part in global's
 *    sync with each peer; hidden nodes get neither. */
#include <string.h>

#include "dist/node_internal.h"
#include "runtime/alloc.h"

static int keep_node(void *arg, void **state)
{
    *state = arg;
    return KILN_OK;
}

static kiln_action net_kernel_handle(void *state, kiln_msg *msg)
{
    (void)state;
    kiln_term from, req;
    if (kiln_match_call(kiln_msg_term(msg), &from, &req) != KILN_OK)
        return KILN_CONTINUE;
    kiln_msg *r = kiln_msg_new(32);
    if (!r)
        return KILN_CONTINUE;
    /* is_auth is ping's question; anything else net_kernel is asked is a
     * feature Kiln does not have. */
    bool auth = kiln_match(req, "{is_auth,_}") == KILN_OK;
    kiln_msg_set_term(r, auth ? kiln_atom_c("yes") : kiln_build(r, "{error,notsup}"));
    kiln_reply(from, r);
    return KILN_CONTINUE;
}

static kiln_action rex_handle(void *state, kiln_msg *msg)
{
    kiln_node *n = state;
    kiln_term from;
    if (kiln_match(kiln_msg_term(msg), "{~p,features_request}", &from) == KILN_OK) {
        kiln_msg *r = kiln_msg_new(64);
        if (r) {
            kiln_msg_set_term(r, kiln_build(r, "{features_reply,~A,[erpc]}", n->name));
            kiln_send(from, r);
        }
    }
    return KILN_CONTINUE;
}

static const kiln_behaviour net_kernel_beh = {"net_kernel", keep_node, net_kernel_handle, NULL};
static const kiln_behaviour rex_beh = {"rex", keep_node, rex_handle, NULL};

int kiln_net_kernel_start(kiln_node *n)
{
    kiln_spawn_opts o = {.register_as = "net_kernel"};
    int rc = kiln_spawn(n->rt, &net_kernel_beh, n, &o, &n->net_kernel);
    if (rc != KILN_OK || n->hidden)
        return rc;
    o.register_as = "rex";
    if ((rc = kiln_spawn(n->rt, &rex_beh, n, &o, &n->rex)) != KILN_OK)
        return rc;
    return kiln_global_start(n);
}
