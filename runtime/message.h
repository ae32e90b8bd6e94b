/* Internal layout of a message: the mailbox link, the signal fields and the
 * arena that owns the message's terms. One allocation holds the header and
 * the first arena chunk; a message built past its size hint chains further
 * chunks (rare: builders and the decoder size the first chunk). */
#ifndef KILN_RUNTIME_MESSAGE_H
#define KILN_RUNTIME_MESSAGE_H

#include <stdatomic.h>
#include <stdbool.h>

#include "kiln/term.h"

/* What a mailbox entry is. User messages are data; the rest are signals that
 * the owner handles as it drains its queue, in arrival order. */
enum kiln_msg_kind {
    KILN_MK_USER = 0,     /* root = the message */
    KILN_MK_EXIT,         /* from = sender, root = reason (exit signal from a link or exit/2) */
    KILN_MK_EXIT2,        /* exit/2 sent explicitly: kill is untrappable */
    KILN_MK_LINK,         /* from wants a link */
    KILN_MK_UNLINK,       /* from removed its link */
    KILN_MK_MONITOR,      /* from monitors us; aux = ref, root = name atom or NONE */
    KILN_MK_DEMONITOR,    /* aux = ref */
    KILN_MK_DOWN,         /* a monitor of ours fired: aux = ref, from = what died, root = reason */
    KILN_MK_ALIAS_MSG,    /* user message sent to an alias: aux = the alias's number (raw) */
    KILN_MK_TIMEOUT,      /* a receive timeout; aux = small int generation */
    KILN_MK_WAKE,         /* resume a process blocked on an outside event (blocking pool, sleep) */
    KILN_MK_STOP,         /* runtime shutdown: die with reason root */
    KILN_MK_NODEDOWN      /* the connection to node root is gone: fire what crosses it */
};

/* kiln_msg.flags */
enum kiln_msg_flag {
    /* A call request that also asks for a monitor on the receiver: from =
     * caller, aux = the monitor's number (raw). Saves a separate MONITOR
     * signal on every call. */
    KILN_MF_MONITOR = 1u << 0,
    /* A reply whose sender dropped the caller's monitor itself (it was the
     * monitored process): the caller need not send DEMONITOR. */
    KILN_MF_DEMONITORED = 1u << 1,
    /* A WAKE whose result (from) is a new socket: if nobody takes the
     * message, the socket is closed with it. */
    KILN_MF_IO_FD = 1u << 2,
    /* A reply to a local call's alias (kiln_reply): root is the bare
     * reply, aux the alias's number. Only that call takes it so; anywhere
     * else it is wrapped into {[alias|Ref], Reply} as it is drained. */
    KILN_MF_REPLY = 1u << 3
};

struct kiln_msg_chunk {
    struct kiln_msg_chunk *next;
    size_t words;
    uint64_t data[];
};

struct kiln_msg {
    _Atomic(struct kiln_msg *) next; /* mailbox link (intrusive MPSC) */
    uint16_t kind;                   /* enum kiln_msg_kind */
    uint16_t flags;
    uint32_t aux32;
    kiln_term root;
    kiln_term from;
    kiln_term aux;
    uint64_t *cur, *end;             /* bump region of the current chunk */
    struct kiln_msg_chunk *chunks;   /* chunks after the inline one */
    void *offheap;                   /* first refcounted-binary box in this arena (binary.c) */
    size_t inline_words;
    uint64_t inline_data[];
};

/* Arena allocation: the bump fast path inline, growth out of line. Every
 * term constructor goes through here. */
uint64_t *kiln_arena_grow(kiln_msg *m, size_t n);
static inline uint64_t *kiln_arena_alloc(kiln_msg *m, size_t n)
{
    if ((size_t)(m->end - m->cur) >= n) {
        uint64_t *p = m->cur;
        m->cur += n;
        return p;
    }
    return kiln_arena_grow(m, n);
}

/* Make sure the next n words can be bump-allocated from one block (for
 * decoders that want a whole term contiguous). False on allocation failure. */
static inline bool kiln_arena_reserve(kiln_msg *m, size_t n)
{
    if ((size_t)(m->end - m->cur) >= n)
        return true;
    uint64_t *p = kiln_arena_grow(m, n);
    if (!p)
        return false;
    m->cur = p; /* grow handed out n words of a fresh chunk: give them back */
    return true;
}

/* A message sized for n words of terms without growing. */
kiln_msg *kiln_msg_new_words(size_t n);
/* The words of arena kiln_msg_new_words(n) gives: n, or for a small
 * message more, up to the allocator's size class. */
size_t kiln_msg_arena_words(size_t n);
/* A signal with no payload terms beyond from/aux/root set by the caller. */
kiln_msg *kiln_signal_new(enum kiln_msg_kind kind, size_t words);

/* Release every refcounted binary the arena holds (binary.c). */
void kiln_offheap_release(kiln_msg *m);

#endif
