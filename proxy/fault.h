/*
 * fault: the ways an upstream exchange can fail without an HTTP status to
 * show for it. The upstream module reports them; the rules' error map turns
 * each into an answer from the documented status table.
 */
#ifndef JOBGATE_FAULT_H
#define JOBGATE_FAULT_H

enum upstream_fault {
    FAULT_NONE = 0,
    FAULT_CONNECT,   /* connection refused or unreachable */
    FAULT_DNS,       /* host name did not resolve */
    FAULT_TLS,       /* handshake failed or certificate refused */
    FAULT_RESET,     /* connection reset or closed with no answer */
    FAULT_TRUNCATED, /* body shorter than announced */
    FAULT_TIMEOUT,   /* connect or total timeout */
    FAULT_OVERSIZED, /* body larger than upstream.max_body_bytes */
    FAULT_PROTOCOL,  /* not a usable HTTP answer (garbage, 1xx final ...) */
    FAULT_BAD_BODY,  /* a 200 that is not a JSON job object */
    FAULT_WRONG_JOB, /* a 200 about another job than the one asked for */
    FAULT_INTERNAL,  /* jobgate could not even send the request */
    FAULT__COUNT
};

/* The name used in rule files and metrics ("connect", "timeout" ...). */
const char *fault_name(enum upstream_fault fault);

/* The fault named `name`, or FAULT_NONE if there is none. */
enum upstream_fault fault_from_name(const char *name);

#endif
