/* Talking to EPMD as a client: registering the node (ALIVE2, the socket
 * held open for the node's life, as EPMD unregisters a name when its
 * socket closes) and asking where another node listens (PORT_PLEASE2). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "dist/node_internal.h"
#include "runtime/alloc.h"

kiln_epmd_node kiln_epmd_self(const kiln_node *n)
{
    const char *at = strchr(n->name_text, '@');
    return (kiln_epmd_node){
        .port = n->port,
        .type = n->hidden ? KILN_EPMD_NODE_HIDDEN : KILN_EPMD_NODE_NORMAL,
        .protocol = KILN_EPMD_PROTO_TCP,
        .highest = KILN_EPMD_HIGHEST_VERSION,
        .lowest = KILN_EPMD_LOWEST_VERSION,
        .name = (const uint8_t *)n->name_text,
        .name_len = (size_t)(at - n->name_text),
    };
}

/* ALIVE2 on a new socket; on success *fd is the registration to hold. */
static int alive2(kiln_node *n, int *fd, uint32_t *creation, uint32_t *err)
{
    int rc = kiln_tcp_connect("127.0.0.1", n->epmd_port, 2000, fd);
    if (rc != KILN_OK) {
        *err = (uint32_t)kiln_io_errno();
        return rc;
    }
    kiln_epmd_node me = kiln_epmd_self(n);
    uint8_t buf[64 + KILN_NODE_NAME_MAX];
    size_t len;
    rc = kiln_epmd_enc_alive2_req(buf, sizeof buf, &me, &len);
    if (rc == KILN_OK)
        rc = kiln_io_send(*fd, buf, len, 2000);
    size_t have = 0;
    kiln_epmd_alive2_resp resp;
    while (rc == KILN_OK) {
        size_t got, used;
        rc = kiln_io_recv(*fd, buf + have, sizeof buf - have, 2000, &got);
        if (rc == KILN_OK && got == 0)
            rc = KILN_EPROTO;
        if (rc != KILN_OK)
            break;
        have += got;
        rc = kiln_epmd_parse_alive2_resp(buf, have, &resp, &used);
        if (rc == KILN_EPMD_NEED_MORE) {
            rc = KILN_OK;
            continue;
        }
        break;
    }
    if (rc == KILN_OK && resp.result != 0)
        rc = KILN_ENAME_TAKEN;
    if (rc != KILN_OK) {
        *err = 0;
        kiln_io_close(*fd);
        return rc;
    }
    *creation = resp.creation;
    return KILN_OK;
}

/* Blocks until EPMD closes the registration (it went away). */
static void hold(int fd)
{
    uint8_t buf[64];
    for (;;) {
        size_t got;
        int rc = kiln_io_recv(fd, buf, sizeof buf, -1, &got);
        if (rc != KILN_OK || got == 0)
            break;
    }
    kiln_io_close(fd);
}

/* The EPMD we registered with is gone (the Kiln node serving it stopped,
 * or epmd was killed). Names must stay resolvable, so one of the nodes
 * left serves EPMD and the others register with it: whoever binds the
 * port first wins, the rest find it taken and send ALIVE2 there. The
 * delays are staggered by name so that the nodes do not all collide on
 * every round. Our creation stays what it was: pids already handed out
 * carry it. Returns when registered again (*fd set) or serving. */
static bool reregister(kiln_node *n, int *fd)
{
    uint32_t h = 2166136261u;
    for (const char *c = n->name_text; *c; c++)
        h = (h ^ (uint8_t)*c) * 16777619u;
    for (unsigned attempt = 0;; attempt++) {
        uint64_t base = attempt < 5 ? 20u << attempt : 500;
        kiln_sleep(base + h % (base + 1));
        h = h * 1103515245u + 12345u;
        if (n->embedded_epmd) {
            pthread_mutex_lock(&n->lock);
            bool stopping = n->stopping;
            int rc = KILN_ESYS;
            uint32_t ignored;
            /* Under the lock: kiln_node_stop either sees us serving or we
             * see it stopping, never half of it. */
            if (!stopping)
                rc = kiln_epmd_serve(n, &ignored);
            pthread_mutex_unlock(&n->lock);
            if (stopping)
                return false;
            if (rc == KILN_OK) {
                fprintf(stderr, "kiln: %s now serves EPMD on port %u\n", n->name_text, n->epmd_port);
                return false;
            }
        }
        uint32_t creation, err;
        if (alive2(n, fd, &creation, &err) == KILN_OK) {
            fprintf(stderr, "kiln: %s registered again with EPMD on port %u\n", n->name_text, n->epmd_port);
            return true;
        }
    }
}

struct holder {
    kiln_node *node;
    struct kiln_waitbox box;
};

static void holder_main(void *arg)
{
    struct holder *h = arg;
    kiln_node *n = h->node;
    int fd;
    uint32_t creation, err;
    int rc = alive2(n, &fd, &creation, &err);
    kiln_waitbox_post(&h->box, rc, rc == KILN_OK ? creation : err);
    if (rc != KILN_OK)
        return;
    /* h belongs to the starter from here on. Hold the registration: EPMD
     * unregisters a name when its socket closes. The holder is killed
     * when the node stops. */
    do {
        hold(fd);
        fprintf(stderr, "kiln: EPMD closed the registration of %s\n", n->name_text);
    } while (reregister(n, &fd));
}

int kiln_epmd_register(kiln_node *n, uint32_t *creation)
{
    struct holder *h = kiln_calloc(1, sizeof(*h));
    if (!h)
        return KILN_ENOMEM;
    h->node = n;
    kiln_waitbox_init(&h->box);
    int rc = kiln_spawn_fn(n->rt, holder_main, h, NULL, &n->epmd_holder);
    uint32_t value = 0;
    if (rc == KILN_OK)
        rc = kiln_waitbox_wait(&h->box, 10000, &value);
    if (rc == KILN_OK) {
        *creation = value;
    } else {
        if (rc == KILN_ESYS)
            errno = (int)value;
        n->epmd_holder = KILN_NONE;
    }
    kiln_waitbox_destroy(&h->box);
    kiln_free(h);
    return rc;
}

int kiln_epmd_port_please(kiln_node *n, const char *host, const char *alive, uint16_t *port)
{
    int fd;
    int rc = kiln_tcp_connect(host, n->epmd_port, 5000, &fd);
    if (rc != KILN_OK)
        return rc;
    uint8_t buf[64 + 2 * 1024];
    size_t len;
    rc = kiln_epmd_enc_port_please2_req(buf, sizeof buf, (const uint8_t *)alive, strlen(alive), &len);
    if (rc == KILN_OK)
        rc = kiln_io_send(fd, buf, len, 5000);
    /* The answer is complete when EPMD closes the socket. */
    size_t have = 0;
    while (rc == KILN_OK && have < sizeof buf) {
        size_t got;
        rc = kiln_io_recv(fd, buf + have, sizeof buf - have, 5000, &got);
        if (rc != KILN_OK || got == 0)
            break;
        have += got;
    }
    kiln_io_close(fd);
    if (rc != KILN_OK)
        return rc;
    kiln_epmd_port2_resp resp;
    size_t used;
    rc = kiln_epmd_parse_port2_resp(buf, have, &resp, &used);
    if (rc != KILN_OK)
        return rc == KILN_EPMD_NEED_MORE ? KILN_EPROTO : rc;
    if (resp.result != 0)
        return KILN_EBADNODE; /* no such node registered there */
    *port = resp.node.port;
    return KILN_OK;
}
