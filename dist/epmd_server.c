/* The embedded EPMD: when nothing listens on the EPMD port, the node
 * serves it, so that erl -sname nodes started afterwards register with it
 * and find each other and us. One process per client; the registry is
 * the protocol core's (epmd_proto.c) under a lock. Replies are written and
 * the socket closed as real epmd does, except for registrations, whose
 * sockets stay open for their node's life. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dist/node_internal.h"
#include "runtime/alloc.h"

#define MAX_CLIENTS (sizeof(((kiln_node *)0)->epmd_clients) / sizeof(int))

struct client_arg {
    kiln_node *node;
    int fd;
    uint64_t id;
};

static _Atomic uint64_t next_id = 1;

static bool is_local_peer(int fd)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    if (getpeername(fd, (struct sockaddr *)&sa, &len) != 0 || sa.sin_family != AF_INET)
        return false;
    /* ALIVE2, KILL and STOP only from this machine, as epmd allows. */
    return (ntohl(sa.sin_addr.s_addr) >> 24) == 127;
}

static void client_main(void *arg)
{
    struct client_arg ca = *(struct client_arg *)arg;
    kiln_free(arg);
    kiln_node *n = ca.node;
    bool local = is_local_peer(ca.fd);
    uint8_t buf[KILN_EPMD_MAX_REQ + 2];
    size_t have = 0;
    kiln_epmd_buf out = {0};
    bool keep = false;
    for (;;) {
        size_t got;
        /* A request must arrive within 5 s; a registration is held open. */
        int rc = kiln_io_recv(ca.fd, buf + have, sizeof buf - have, keep ? -1 : 5000, &got);
        if (rc != KILN_OK || got == 0)
            break;
        have += got;
        kiln_epmd_reply reply;
        size_t used = 0;
        out.len = 0;
        pthread_mutex_lock(&n->epmd_lock);
        rc = kiln_epmd_server_feed(n->epmd, ca.id, local, buf, have, &out, &reply, &used);
        pthread_mutex_unlock(&n->epmd_lock);
        if (rc == KILN_EPMD_NEED_MORE) {
            if (have == sizeof buf)
                break; /* longer than any request can be */
            continue;
        }
        if (rc != KILN_OK)
            break;
        if (out.len && kiln_io_send(ca.fd, out.data, out.len, 5000) != KILN_OK)
            break;
        memmove(buf, buf + used, have - used);
        have -= used;
        if (reply.action != KILN_EPMD_KEEP)
            break;
        keep = true;
    }
    kiln_epmd_buf_free(&out);
    pthread_mutex_lock(&n->epmd_lock);
    kiln_epmd_server_closed(n->epmd, ca.id);
    for (size_t i = 0; i < n->nepmd_clients; i++) {
        if (n->epmd_clients[i] == ca.fd) {
            n->epmd_clients[i] = n->epmd_clients[--n->nepmd_clients];
            break;
        }
    }
    pthread_mutex_unlock(&n->epmd_lock);
    kiln_io_close(ca.fd);
}

static void epmd_acceptor(void *arg)
{
    kiln_node *n = arg;
    for (;;) {
        int fd;
        int rc = kiln_tcp_accept(n->epmd_lfd, -1, &fd);
        if (rc != KILN_OK) {
            kiln_sleep(10);
            continue;
        }
        struct client_arg *ca = kiln_malloc(sizeof(*ca));
        pthread_mutex_lock(&n->epmd_lock);
        bool room = n->nepmd_clients < MAX_CLIENTS;
        if (room && ca)
            n->epmd_clients[n->nepmd_clients++] = fd;
        pthread_mutex_unlock(&n->epmd_lock);
        if (!ca || !room) {
            kiln_free(ca);
            close(fd);
            continue;
        }
        ca->node = n;
        ca->fd = fd;
        ca->id = atomic_fetch_add(&next_id, 1);
        if (kiln_spawn_fn(n->rt, client_main, ca, NULL, NULL) != KILN_OK) {
            pthread_mutex_lock(&n->epmd_lock);
            for (size_t i = 0; i < n->nepmd_clients; i++)
                if (n->epmd_clients[i] == fd) {
                    n->epmd_clients[i] = n->epmd_clients[--n->nepmd_clients];
                    break;
                }
            pthread_mutex_unlock(&n->epmd_lock);
            kiln_free(ca);
            close(fd);
        }
    }
}

int kiln_epmd_serve(kiln_node *n, uint32_t *creation)
{
    int rc = kiln_tcp_listen(n->rt, NULL, n->epmd_port, 128, &n->epmd_lfd, NULL);
    if (rc != KILN_OK)
        return rc;
    /* NAMES replies start with this port; erl compares it with the one it
     * dialled and refuses a mismatch ({error, address}). */
    kiln_epmd_server_config cfg = {.port = n->epmd_port};
    n->epmd = kiln_epmd_server_new(&cfg);
    if (!n->epmd) {
        close(n->epmd_lfd);
        n->epmd_lfd = -1;
        return KILN_ENOMEM;
    }
    kiln_epmd_node me = kiln_epmd_self(n);
    /* Our own registration needs no socket: connection id 0 never closes. */
    pthread_mutex_lock(&n->epmd_lock);
    rc = kiln_epmd_server_register(n->epmd, 0, &me, creation);
    pthread_mutex_unlock(&n->epmd_lock);
    if (rc == KILN_OK)
        rc = kiln_spawn_fn(n->rt, epmd_acceptor, n, NULL, &n->epmd_acceptor);
    if (rc != KILN_OK) {
        kiln_epmd_server_free(n->epmd);
        n->epmd = NULL;
        close(n->epmd_lfd);
        n->epmd_lfd = -1;
        return rc;
    }
    n->serves_epmd = true;
    return KILN_OK;
}

void kiln_epmd_serve_stop(kiln_node *n)
{
    if (!n->serves_epmd)
        return;
    kiln_rt_exit(n->rt, n->epmd_acceptor, KILN_ATOM_KILL);
    for (int t = 0; t < 5000 && kiln_is_alive(n->rt, n->epmd_acceptor); t++)
        usleep(1000);
    /* Client processes end when their sockets do. */
    pthread_mutex_lock(&n->epmd_lock);
    for (size_t i = 0; i < n->nepmd_clients; i++)
        shutdown(n->epmd_clients[i], SHUT_RDWR);
    pthread_mutex_unlock(&n->epmd_lock);
    for (int t = 0; t < 5000; t++) {
        pthread_mutex_lock(&n->epmd_lock);
        size_t left = n->nepmd_clients;
        pthread_mutex_unlock(&n->epmd_lock);
        if (!left)
            break;
        usleep(1000);
    }
    close(n->epmd_lfd);
    n->epmd_lfd = -1;
    kiln_epmd_server_free(n->epmd);
    n->epmd = NULL;
    n->serves_epmd = false;
}
