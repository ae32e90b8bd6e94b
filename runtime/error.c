/* Fixed English text for every Kiln error code. */
#include "kiln/error.h"

const char *kiln_strerror(int code)
{
    switch ((kiln_err)code) {
    case KILN_OK: return "success";
    case KILN_ENOMEM: return "out of memory";
    case KILN_EINVAL: return "invalid argument";
    case KILN_EBADARG: return "term of the wrong type";
    case KILN_ENOPROC: return "no such process";
    case KILN_ETIMEOUT: return "timed out";
    case KILN_ESYSTEM_LIMIT: return "system limit reached";
    case KILN_EATOM_TOO_LONG: return "atom longer than 255 characters";
    case KILN_EBADUTF8: return "invalid UTF-8";
    case KILN_ENAME_TAKEN: return "name already registered";
    case KILN_ENOTREG: return "name not registered";
    case KILN_EALREADY_REG: return "process already has a registered name";
    case KILN_ENOTPROC: return "not called from a Kiln process";
    case KILN_EMAILBOX_FULL: return "mailbox full";
    case KILN_ESTOPPED: return "runtime stopped";
    case KILN_EEXIT: return "process exited before replying";
    case KILN_ESYS: return "operating system call failed";
    case KILN_ENOTSUP: return "not supported";
    case KILN_EFORMAT: return "malformed format string";
    case KILN_ENOMATCH: return "no match";
    case KILN_EBUSY: return "resource busy";
    case KILN_ETRUNCATED: return "external term truncated";
    case KILN_EBADTAG: return "unknown external term tag";
    case KILN_EBADVERSION: return "bad external term version";
    case KILN_ETOODEEP: return "term nested too deeply";
    case KILN_EBADLENGTH: return "length field exceeds input";
    case KILN_EBADTERM: return "structurally invalid term";
    case KILN_EZLIB: return "compressed term failed to inflate";
    case KILN_ETRAILING: return "trailing bytes after term";
    case KILN_EUNSUPPORTED_TERM: return "unsupported external term";
    case KILN_ETOOBIG: return "declared size over the configured limit";
    case KILN_EPROTO: return "distribution protocol violation";
    case KILN_ENOSPC: return "output buffer too small";
    case KILN_EBADCOOKIE: return "handshake digest mismatch (wrong cookie)";
    case KILN_EDFLAGS: return "peer lacks mandatory distribution flags";
    case KILN_EBADNODE: return "bad or unexpected node name";
    case KILN_EREFUSED: return "connection refused by the peer";
    case KILN_EBADREQ: return "unknown EPMD request";
    case KILN_ELAST: break;
    }
    return "unknown error";
}
