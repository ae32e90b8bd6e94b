/* Where the runtime meets the distribution layer.
 *
 * Outgoing: when a local process sends to, links to, exits, or monitors a
 * process on another node, the runtime calls the operations the node
 * installed (kiln_rt_set_dist). Without a node these fail with
 * KILN_ENOTSUP, as Erlang's do on a node that is not alive.
 *
 * Incoming: the node's connection processes turn control messages from a
 * peer into the same signals local processes exchange, with the remote pid
 * as sender, through the kiln_dist_in_* calls. */
#ifndef KILN_RUNTIME_DIST_HOOKS_H
#define KILN_RUNTIME_DIST_HOOKS_H

#include <stdbool.h>
#include <stdint.h>

#include "kiln/runtime.h"
#include "kiln/term.h"

struct kiln_dist_ops {
    /* msg (consumed) to a remote pid, a {Name, Node} or a remote alias;
     * from is the sending process, or KILN_NONE. */
    int (*send)(void *ctx, kiln_term from, kiln_term to, kiln_msg *msg);
    /* Link and unlink signals from local `from` to remote `to`. */
    int (*link)(void *ctx, kiln_term from, kiln_term to);
    int (*unlink)(void *ctx, kiln_term from, kiln_term to);
    /* An exit signal: from a dying linked process (exit2 false) or exit/2. */
    int (*exit)(void *ctx, kiln_term from, kiln_term to, kiln_term reason, bool exit2);
    /* from monitors remote target (a pid, or a name on node) with ref. */
    int (*monitor)(void *ctx, kiln_term from, kiln_term target, kiln_term node, kiln_term ref);
    int (*demonitor)(void *ctx, kiln_term from, kiln_term target, kiln_term node, kiln_term ref);
    /* A monitored local process (what: its pid, or the name the watcher
     * used) died: tell the remote watcher, naming its ref. */
    int (*down)(void *ctx, kiln_term what, kiln_term watcher, kiln_term ref, kiln_term reason);
    /* Local pid now has a link or monitor that crosses to node; the node
     * tells it when the connection goes (kiln_dist_in_nodedown). */
    void (*involve)(void *ctx, kiln_term node, kiln_term pid);
};

/* Install (or with NULL, remove) the distribution layer. The operations
 * are called only inside an epoch section, so whoever removes them can
 * wait for the last caller with kiln_epoch_synchronize. */
void kiln_rt_set_dist(kiln_rt *rt, const struct kiln_dist_ops *ops, void *ctx);
/* The installed operations, or NULL. */
const struct kiln_dist_ops *kiln_rt_dist(kiln_rt *rt, void **ctx);

/* True for a pid, port or ref term that names another node. */
bool kiln_is_remote(kiln_rt *rt, kiln_term t);
/* The node a remote pid lives on (KILN_NONE if t is not a remote pid). */
kiln_term kiln_pid_node(kiln_term t);

/* ---- incoming: a peer's control messages, as signals to local processes ---- */

int kiln_dist_in_link(kiln_rt *rt, kiln_term remote_from, kiln_term local_to);
int kiln_dist_in_unlink(kiln_rt *rt, kiln_term remote_from, kiln_term local_to);
int kiln_dist_in_exit(kiln_rt *rt, kiln_term remote_from, kiln_term local_to, kiln_term reason, bool exit2);
/* target: a local pid or a registered name (atom). */
int kiln_dist_in_monitor(kiln_rt *rt, kiln_term remote_from, kiln_term target, kiln_term ref);
int kiln_dist_in_demonitor(kiln_rt *rt, kiln_term remote_from, kiln_term target, kiln_term ref);
/* A remote process that local watcher monitors died. what: its pid, or
 * {Name, Node} when monitored by name. */
int kiln_dist_in_down(kiln_rt *rt, kiln_term what, kiln_term local_watcher, kiln_term ref, kiln_term reason);
/* The connection to node is gone: every link and monitor local_pid has
 * across it fires with noconnection. */
int kiln_dist_in_nodedown(kiln_rt *rt, kiln_term node, kiln_term local_pid);

#endif
