/*
 * aksk_sign_cli: proxy/aksk.c's signer on the command line, so that
 * tests/integration/test_sim_auth.py can check that the C signer, the
 * test's own Python signer and the simulator's verifier agree.
 *
 *   aksk_sign_cli [--omit-host] [--project ID] [--header NAME:VALUE]...
 *                 [--body TEXT] [--trace] METHOD URL AK SK DATE
 *
 * Prints the Authorization value on one line; with --trace, then the
 * signed headers, the canonical request and the string to sign, each after
 * a line "--". Exit 0, or 1 with the signer's message on stderr. A test
 * helper: it takes the SK on its command line, which a real tool must not.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aksk.h"

#define MAX_HEADERS 16

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"omit-host", no_argument, NULL, 'o'},    {"project", required_argument, NULL, 'p'},
        {"header", required_argument, NULL, 'H'}, {"body", required_argument, NULL, 'b'},
        {"trace", no_argument, NULL, 't'},        {NULL, 0, NULL, 0},
    };
    struct aksk_header headers[MAX_HEADERS];
    struct aksk_request r = {0};
    struct aksk_trace trace;
    char authorization[1024];
    char err[256];
    int option, want_trace = 0;

    while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (option) {
        case 'o': r.flags |= AKSK_OMIT_HOST; break;
        case 'p': r.project_id = optarg; break;
        case 'b':
            r.body = optarg;
            r.body_len = strlen(optarg);
            break;
        case 't': want_trace = 1; break;
        case 'H': {
            char *colon = strchr(optarg, ':');

            if (colon == NULL || r.header_count == MAX_HEADERS) {
                fprintf(stderr, "aksk_sign_cli: --header wants NAME:VALUE (at most %d)\n", MAX_HEADERS);
                return 2;
            }
            *colon = '\0';
            headers[r.header_count].name = optarg;
            headers[r.header_count].value = colon + 1;
            r.header_count++;
            break;
        }
        default: return 2;
        }
    }
    if (argc - optind != 5) {
        fprintf(stderr, "usage: aksk_sign_cli [--omit-host] [--project ID] [--header NAME:VALUE]... [--body TEXT] "
                        "[--trace] METHOD URL AK SK DATE\n");
        return 2;
    }
    r.method = argv[optind];
    r.url = argv[optind + 1];
    r.ak = argv[optind + 2];
    r.sk = argv[optind + 3];
    r.sdk_date = argv[optind + 4];
    r.headers = r.header_count > 0 ? headers : NULL;

    if (aksk_sign_traced(&r, authorization, sizeof(authorization), &trace, err, sizeof(err)) != 0) {
        fprintf(stderr, "aksk_sign_cli: %s\n", err);
        return 1;
    }
    printf("%s\n", authorization);
    if (want_trace)
        printf("--\n%s\n--\n%s\n--\n%s\n", trace.signed_headers, trace.canonical_request, trace.string_to_sign);
    aksk_trace_free(&trace);
    return 0;
}
