/* Kiln error codes. Every public call that can fail returns one of these
 * (0 on success); kiln_strerror turns a code into a fixed English string. */
#ifndef KILN_ERROR_H
#define KILN_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

#pragma GCC visibility push(default)

typedef enum kiln_err {
    KILN_OK = 0,
    KILN_ENOMEM = -1,        /* an allocation failed */
    KILN_EINVAL = -2,        /* a bad argument from the caller */
    KILN_EBADARG = -3,       /* a term of the wrong type */
    KILN_ENOPROC = -4,       /* no such (live) process */
    KILN_ETIMEOUT = -5,      /* a receive, call or wait timed out */
    KILN_ESYSTEM_LIMIT = -6, /* a configured table (atoms, processes) is full */
    KILN_EATOM_TOO_LONG = -7,/* atom over 255 characters */
    KILN_EBADUTF8 = -8,      /* text is not valid UTF-8 */
    KILN_ENAME_TAKEN = -9,   /* register: the name is already registered */
    KILN_ENOTREG = -10,      /* unregister / whereis: the name is not registered */
    KILN_EALREADY_REG = -11, /* register: the process already has a name */
    KILN_ENOTPROC = -12,     /* must be called from inside a Kiln process */
    KILN_EMAILBOX_FULL = -13,/* a bounded mailbox refused the message */
    KILN_ESTOPPED = -14,     /* the runtime is stopping or stopped */
    KILN_EEXIT = -15,        /* the called process exited before replying */
    KILN_ESYS = -16,         /* an operating-system call failed (see errno) */
    KILN_ENOTSUP = -17,      /* not supported in this build or configuration */
    KILN_EFORMAT = -18,      /* a builder/matcher format string is malformed */
    KILN_ENOMATCH = -19,     /* a pattern did not match */
    KILN_EBUSY = -20,        /* resource in use */
    /* codec (ETF) errors */
    KILN_ETRUNCATED = -40,   /* input ended inside a term */
    KILN_EBADTAG = -41,      /* unknown or unsupported tag */
    KILN_EBADVERSION = -42,  /* missing version byte 131 */
    KILN_ETOODEEP = -43,     /* nesting deeper than the configured limit */
    KILN_EBADLENGTH = -44,   /* a length field larger than the input allows */
    KILN_EBADTERM = -45,     /* structurally invalid term (e.g. bad bit count) */
    KILN_EZLIB = -46,        /* compressed term failed to inflate */
    KILN_ETRAILING = -47,    /* bytes left over after the term */
    KILN_EUNSUPPORTED_TERM = -48, /* valid ETF Kiln does not accept (LOCAL_EXT) */
    KILN_ETOOBIG = -49,      /* a declared size over the configured limit (compressed terms) */
    /* distribution protocol (EPMD, handshake) errors */
    KILN_EPROTO = -60,       /* a peer broke the protocol: unexpected or malformed message */
    KILN_ENOSPC = -61,       /* an output buffer is too small for the message */
    KILN_EBADCOOKIE = -62,   /* handshake digest mismatch: the peer has another cookie */
    KILN_EDFLAGS = -63,      /* the peer lacks mandatory distribution flags */
    KILN_EBADNODE = -64,     /* a node name is malformed, or not the node that was dialled */
    KILN_EREFUSED = -65,     /* the peer refused the connection (not_allowed, nok, false) */
    KILN_EBADREQ = -66,      /* an EPMD request with an unknown code */
    KILN_ELAST = -99
} kiln_err;

/* A fixed string describing code; never NULL. */
const char *kiln_strerror(int code);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif
