/* A distributed Kiln node: registers with EPMD (or serves EPMD itself),
 * accepts and makes Erlang distribution connections, and lets processes
 * talk to processes on Erlang/OTP nodes as if they were local: send to
 * pids and to {Name, Node}, link, monitor, exit, call.
 *
 * Start a node right after the runtime, before processes make references
 * (refs carry the node name and creation). Stop it before the runtime. */
#ifndef KILN_NODE_H
#define KILN_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/error.h"
#include "kiln/runtime.h"
#include "kiln/term.h"

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)

typedef struct kiln_node kiln_node;

typedef struct kiln_node_config {
    /* "alive" or "alive@host"; without a host, the machine's short host
     * name (as erl -sname). */
    const char *name;
    /* The shared secret; NULL reads $HOME/.erlang.cookie, as erl does. */
    const char *cookie;
    /* Hidden nodes do not appear in nodes() and get no global traffic. */
    bool hidden;
    /* Distribution listen port; 0 = any but the EPMD port. Equal to
     * the EPMD port: KILN_EINVAL. */
    uint16_t port;
    uint16_t epmd_port;     /* 0 = $ERL_EPMD_PORT, else 4369 */
    /* When nothing listens on the EPMD port, serve it from this node
     * (unless this is set), so erl -sname nodes can register with us. */
    bool no_embedded_epmd;
    unsigned net_ticktime;  /* seconds (Erlang's net_ticktime); 0 = 60 */
    /* Messages larger than this go out in fragments, so one big message
     * does not hold up small ones on the same connection; 0 = 256 KiB
     * (measured: docs/dist.md; OTP uses 64 KiB). */
    size_t fragment_size;
} kiln_node_config;

/* Start distribution on rt. From any thread; blocks until the node is
 * registered with EPMD (or failed to). */
int kiln_node_start(kiln_rt *rt, const kiln_node_config *cfg, kiln_node **out);
/* Close every connection and stop the node's processes. */
int kiln_node_stop(kiln_node *n);

/* This node's name atom ('alive@host') and creation. */
kiln_term kiln_node_name(const kiln_node *n);
uint32_t kiln_node_creation(const kiln_node *n);
/* True if this node serves EPMD itself. */
bool kiln_node_serves_epmd(const kiln_node *n);
/* The distribution port it listens on. */
uint16_t kiln_node_port(const kiln_node *n);

/* net_kernel:connect_node (in a process): connect to node if not yet
 * connected. KILN_OK once up; KILN_EREFUSED, KILN_EBADCOOKIE, KILN_ETIMEOUT,
 * KILN_ESYS (unreachable) otherwise. */
int kiln_node_connect(kiln_term node, int64_t timeout_ms);
/* monitor_node(Node, true|false) (in a process): {nodedown, Node} arrives
 * when the connection to node goes, or at once if it cannot be made (a
 * connection is attempted). Each true needs its own false, as in Erlang. */
int kiln_monitor_node(kiln_term node, bool on);
/* net_kernel:monitor_nodes(true|false) (in a process): {nodeup, Node} and
 * {nodedown, Node} for every connection that comes or goes. */
int kiln_monitor_nodes(bool on);

/* nodes(): the connected nodes' atoms, up to cap; returns how many there are. */
size_t kiln_node_list(kiln_node *n, kiln_term *out, size_t cap);

/* ---- rpc ----
 *
 * A C function that Erlang can call as Mod:Fun(Args...) with rpc:call,
 * erpc:call, erpc:cast or spawn(Node, Mod, Fun, Args). It runs in a new
 * Kiln process. args is the argument list (a proper list). Return KILN_OK
 * with *result (a message whose root is the return value; NULL means
 * `ok`), or an error code: the caller then sees an error exception with
 * reason {kiln_error, Code}. */
typedef int (*kiln_rpc_fn)(kiln_term args, kiln_msg **result, void *arg);

/* Make Mod:Fun/Arity callable from other nodes. */
int kiln_node_register_rpc(kiln_node *n, const char *module, const char *function, unsigned arity, kiln_rpc_fn fn,
                           void *arg);

/* erpc:call(Node, Mod, Fun, Args, Timeout) from a process: KILN_OK with
 * *result (root = the value); KILN_EEXIT when the call raised (root of
 * *result = {Class, Reason}); KILN_ENOPROC/KILN_EREFUSED when the node
 * cannot be reached or refuses; KILN_ETIMEOUT. args: a proper list. */
int kiln_erpc_call(kiln_term node, const char *module, const char *function, kiln_term args, int64_t timeout_ms,
                   kiln_msg **result);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif
