#include <string.h>

#include "fault.h"

static const char *const fault_names[] = {
    [FAULT_NONE] = "none",         [FAULT_CONNECT] = "connect",     [FAULT_DNS] = "dns",
    [FAULT_TLS] = "tls",           [FAULT_RESET] = "reset",         [FAULT_TRUNCATED] = "truncated",
    [FAULT_TIMEOUT] = "timeout",   [FAULT_OVERSIZED] = "oversized", [FAULT_PROTOCOL] = "protocol",
    [FAULT_BAD_BODY] = "bad_body", [FAULT_WRONG_JOB] = "wrong_job", [FAULT_INTERNAL] = "internal",
};
_Static_assert(sizeof(fault_names) / sizeof(fault_names[0]) == FAULT__COUNT, "a fault has no name");

const char *fault_name(enum upstream_fault fault)
{
    return (fault >= 0 && fault < FAULT__COUNT) ? fault_names[fault] : "unknown";
}

enum upstream_fault fault_from_name(const char *name)
{
    for (int i = 1; i < FAULT__COUNT; i++)
        if (strcmp(name, fault_names[i]) == 0)
            return (enum upstream_fault)i;
    return FAULT_NONE;
}
