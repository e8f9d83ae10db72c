/*
 * jobsim: a stand-in for Huawei Cloud's job-status APIs (the classic ELB
 * "query job status" API and its siblings).
 *
 * The integration tests and the quick-start demo point jobgate at jobsim
 * instead of the real cloud.  jobsim plays job lifecycles on a clock and,
 * on request, misbehaves in the ways a real upstream can, so that every
 * path through the gateway can be driven from a test.
 *
 * Command line
 *   jobsim [--listen HOST:PORT] [--tls-cert FILE --tls-key FILE]
 *          [--api NAME] [--init-ms N] [--running-ms N] [--quiet]
 *   Listens on 127.0.0.1:9090 by default (port 0 picks a free port); with a
 *   certificate and key it speaks HTTPS only (TLS 1.2 or later).  Once
 *   listening it prints one line to stdout, "jobsim listening on
 *   http://HOST:PORT" (or https), which scripts wait for.  Unless --quiet,
 *   every request is logged on one line of stderr.  SIGTERM or SIGINT make it
 *   free everything and exit 0, so that LeakSanitizer can vouch for it.
 *   --api NAME picks the one job API this instance plays (default elb-v1);
 *   a test that needs several APIs starts one simulator per API.
 *
 * Job API (what the gateway talks to): one of these shapes, by --api
 *   NAME    GET|HEAD path                                 states
 *   elb-v1  /v1.0/{project_id}/jobs/{job_id}              INIT RUNNING SUCCESS FAIL
 *           {"status","entities","job_id","job_type":"createELB","begin_time",
 *            "end_time","error_code","fail_reason","sub_jobs":[]}; entities.elb
 *           appears once the job has succeeded.  No sub-jobs.
 *   ecs     /v1/{project_id}/jobs/{job_id}                INIT RUNNING SUCCESS FAIL
 *           {"status","entities":{"sub_jobs_total":N,"sub_jobs":[{"status",
 *            "entities":{"server_id"},"job_id","job_type":"createSingleServer",
 *            "begin_time","end_time","error_code","fail_reason"}...]},"job_id",
 *            "job_type":"createServer","begin_time","end_time","error_code",
 *            "fail_reason"}
 *   evs     /v1/{project_id}/jobs/{job_id}                INIT RUNNING SUCCESS FAIL
 *           as ecs, with job_type "createVolume" and sub-jobs
 *           "createSingleVolume" whose entities carry "volume_id"
 *   vpc     /v1/{project_id}/jobs/{job_id}                INIT RUNNING SUCCESS FAIL
 *           as ecs, with job_type "createPublicip" and "entities":{}: no
 *           sub-jobs
 *   elb-v3  /v3/{project_id}/elb/jobs/{job_id}            INIT RUNNING SUCCESS FAIL
 *           {"job":{"status","job_id","job_type":"CreateLoadbalancer",
 *            "begin_time","end_time","error_code","error_msg","resource_id",
 *            "project_id","sub_jobs":[{"status","job_id","job_type":
 *            "CreateListener","resource_id"}...]},"request_id"}
 *   cce     /api/v3/projects/{project_id}/jobs/{job_id}   Initializing Running
 *                                                         Success Failed
 *           {"kind":"Job","apiVersion":"v3","metadata":{"uid","creationTimestamp"},
 *            "spec":{"type":"CreateCluster","clusterUID","resourceName",
 *            "subJobs":[{"kind":"Job","metadata":{"uid"},"spec":{"type":
 *            "CreateMaster"},"status":{"phase"}}...]},"status":{"phase","reason"}}
 *   Adding an API is adding a row to job_apis[] (and, for a new layout, a
 *   body builder).  Paths of the other shapes are unknown paths here.
 *   Any non-empty path segments are accepted: validating them is the
 *   gateway's job (CCE's job ids are UUIDs, the others 32 hex digits, but
 *   jobsim does not care).  Ids are compared exactly as they appear in the
 *   path, no percent-decoding.  A job's clock starts the first time its id
 *   is seen (or when it is defined through the control API): it is in its
 *   init state for init_ms, its running state for running_ms, then in its
 *   final state (success, or failure if it was defined with final=FAIL).
 *   Its sub-jobs follow the same timeline, except that they reach the
 *   parent's final state sub_lag_ms later (so for a while the parent has
 *   succeeded while its sub-jobs still run).  Other methods get 405 and
 *   other paths 404, both in the API gateway's flat error shape.  Every
 *   request on a job path is counted, whatever its method and whether or
 *   not a fault answered it.
 *
 * Create call (--api ecs only): the call that makes the job, played so that
 * a client can run the whole create-then-poll flow
 *   POST /v1/{project_id}/cloudservers      (the SDK's createPostPaidServers)
 *   POST /v1.1/{project_id}/cloudservers    (the SDK's createServers)
 *        body {"server":{"imageRef","flavorRef","name","vpcid","nics":[{"subnet_id"}...],
 *        "root_volume":{"volumetype"}[,"count":N]...}} (other members are
 *        accepted as they are; count 1 to 100, default 1); anything else is
 *        400 {"error":{"code":"Ecs.0005","message"}}.
 *        200 {"job_id":"<32 hex>","serverIds":[N ids]}: a new job on the
 *        command-line timeline with N sub-jobs, whose entities.server_id
 *        are the serverIds of this answer.  With X-Client-Token, a POST
 *        repeating a token of the same project gets the earlier answer and
 *        makes no job (ECS's idempotency).  Other methods: 405 (Allow:
 *        POST).  Every POST is counted per project ("posts" in /_sim/stats)
 *        and recorded for /_sim/last, checked by the authentication mode
 *        like a job request, and bent by the "on=create" fault if one is
 *        installed: a status fault refuses before any job is made (the API
 *        gateway throttling); the others (delay, hang, reset, truncated,
 *        nonjson, notobject, rawbody) bend the answer of a job that was made
 *        all the same.
 *
 * Control API (JSON answers; never counted as job requests; the same for
 * every --api)
 *   POST   /_sim/jobs/{job_id}?init_ms=N&running_ms=N&final=SUCCESS|FAIL
 *                             [&sub_jobs=N][&sub_lag_ms=N][&init_state=NAME]
 *          (re)start that job's timeline now; omitted values take the
 *          command-line defaults.  Its request count is kept.
 *          final: SUCCESS or FAIL (any case), whatever the API calls them
 *          (the API's own names, such as cce's Success and Failed, are
 *          accepted too).
 *          sub_jobs: how many sub-jobs (0 to 100; default 2 for the APIs
 *          with sub-jobs, 0 otherwise; the APIs without any refuse N > 0).
 *          sub_lag_ms: how long after the parent the sub-jobs reach the
 *          final state (default 0).
 *          init_state: the state shown (by the job and its sub-jobs) while
 *          the job is in its init phase, [A-Za-z_]{1,32}, e.g.
 *          PENDING_PAYMENT (ecs), WAITING_EXECUTE or LISTENING (evs);
 *          default the API's own (INIT, or Initializing for cce).
 *          Jobs never defined follow the command-line timeline with the
 *          API's default sub-job count, no lag and the default init state.
 *   POST   /_sim/faults?job=JOB_ID|*&kind=KIND[&count=N][&...]
 *   POST   /_sim/faults?on=create&kind=KIND[&count=N][&...]
 *          Install a fault for one job id, or for every job ("*"), or for
 *          the create call (on=create; not the kinds wrongid, nostatus,
 *          oversized, nor status with shape=json).  A fault for the same
 *          target replaces the previous one; a job's own fault wins over
 *          "*"; job faults never touch the create call and the create
 *          fault never touches job requests.  count=N: only the next N
 *          requests it matches (GET/HEAD on a job, POST on the create call),
 *          then it removes itself; absent or 0: until cleared.
 *          Kinds and their parameters:
 *            status     status=100..599 [reason=PHRASE] [shape=SHAPE]
 *                       [code=...] [message=...] [retry_after=SECONDS]
 *                       shape elb (default): {"error":{"message","code"}}
 *                             apigw: {"error_msg","error_code","request_id"}
 *                             text: "upstream says no" as text/plain
 *                             empty: no body
 *                             json: the normal job body
 *            delay      delay_ms=N: the normal answer, N ms late (a timer;
 *                       other clients are served meanwhile)
 *            hang       never answer; the connection stays open until the
 *                       client gives up
 *            reset      drop the connection with a TCP reset, no answer
 *            nonjson    200 with an HTML body
 *            notobject  200 with the JSON array [1,2,3]
 *            wrongid    200 with a valid body for another job id (the id
 *                       changes wherever the API shows it: job_id, job.job_id,
 *                       metadata.uid; sub-job ids follow)
 *            nostatus   200 with a job body lacking the job's status (status,
 *                       job.status, status.phase); sub-jobs keep theirs
 *            oversized  [size=N] 200 with a valid job body padded to N bytes
 *                       (default 4 MiB) through a top-level "padding" string
 *            truncated  200 announcing the whole body's Content-Length but
 *                       sending half of it, then closing the connection
 *            rawbody    body=TEXT (percent-encoded): 200 with exactly these
 *                       bytes as application/json (duplicate keys, escaped
 *                       NULs, invalid UTF-8: bodies parsers disagree on)
 *          Unknown kinds or parameters and bad values are refused with 400.
 *   DELETE /_sim/faults   clear every fault
 *   GET    /_sim/stats    {"total":N,"jobs":{"<job_id>":N,...},
 *                          "posts":{"<project_id>":N,...},"creates":N}:
 *                         total and jobs count job requests (jobs only those
 *                         asked for); posts the POSTs on the create call per
 *                         project, whatever their fate; creates the jobs the
 *                         create call made
 *   GET    /_sim/times    {"ms":[T,...]}: when each job request arrived, on the
 *                         host's CLOCK_MONOTONIC in milliseconds (Python's
 *                         time.monotonic() * 1000), the first SIM_TIMES_MAX
 *                         since the last reset; for tests that count calls
 *                         per time window
 *   GET    /_sim/last     the latest job or create request: {"method","path",
 *                         "query","peer":"ADDR:PORT","headers":{name as sent:
 *                         value}[,"body":TEXT]}; body only when one was sent;
 *                         404 if none. The peer's port tells whether a client
 *                         reused its connection (keep-alive).
 *   POST   /_sim/reset    forget all jobs, faults, counts and last request;
 *                         authentication back to mode none, its counters zeroed
 *   POST   /_sim/auth     JSON body: how job requests must authenticate (below);
 *                         replaces the previous mode, forgets issued tokens and
 *                         zeroes the counters.  Unknown members are refused (400).
 *   GET    /_sim/auth     {"mode","iam_calls","sig_ok","sig_bad","rejected",
 *                         "last_authorization_seen","issued_tokens",
 *                         "last_rejection"}: iam_calls counts POST
 *                         /v3/auth/tokens in iam mode; sig_ok and sig_bad the
 *                         AK/SK checks; rejected every job request refused;
 *                         last_authorization_seen whether the latest job
 *                         request carried an Authorization header (any mode)
 *   POST   /_sim/auth/expire  every token issued so far expires now
 *   POST   /_sim/projects  JSON body {"projects":{"<project_id>":"<name>",...}
 *                         [,"delay_ms":N]}: the projects IAM knows (below),
 *                         replacing the previous ones; zeroes their counts
 *   GET    /_sim/projects  {"total":N,"calls":{"<project_id>":N,...},
 *                         "last_auth":"token"|"aksk"|"none"}: GET
 *                         /v3/projects/{id} received (any id), and which
 *                         credentials the latest one carried
 *
 * IAM's project details (any --api, any authentication mode): GET
 * /v3/projects/{project_id} answers 200 {"project":{"id","name",
 * "domain_id","enabled":true,"description":"",...}} for a project told by
 * POST /_sim/projects (its name is the region, e.g. eu-west-0, or
 * REGION_SUB for a sub-project), else 404 in IAM's error shape; delay_ms
 * late.  Every call is counted per project id.
 *
 * Upstream authentication (POST /_sim/auth), checked on every job request
 * and create call before faults apply; a refused request is still counted
 * in /_sim/stats and recorded for /_sim/last.  Refusals use the API
 * gateway's flat shape, {"error_msg","error_code","request_id"}.
 *   {"mode":"none"}   the default: nothing is checked
 *   {"mode":"aksk","ak":AK,"sk":SK}
 *          Authorization must be "SDK-HMAC-SHA256 Access=AK,
 *          SignedHeaders=..., Signature=HEX", valid over the request as
 *          received (method, raw path and query, each header listed in
 *          SignedHeaders, which must include host and x-sdk-date, and the
 *          SHA-256 of the body, or the literal UNSIGNED-PAYLOAD when the
 *          signed X-Sdk-Content-Sha256 says so), computed here independently
 *          of jobgate's signer; X-Sdk-Date within 15 minutes of now;
 *          X-Project-Id, when sent, equal to the path's project.  Else 401
 *          APIGW.0301.  The official Node.js SDK signs content-type, host,
 *          x-project-id and x-sdk-date (every header it has set when it
 *          signs; User-Agent and Accept come later, unsigned).
 *   {"mode":"iam","user":U,"password":P,"domain":D[,"token_ttl_s":86400]
 *    [,"iam_delay_ms":0][,"token_bytes":68]}
 *          POST /v3/auth/tokens with Keystone's password body (methods
 *          ["password"], user name, password and domain name, a project
 *          scope by name or id) answers 201 with X-Subject-Token and
 *          {"token":{"expires_at","issued_at","methods","project","user"}},
 *          iam_delay_ms late, each token token_bytes long (68 to 49152:
 *          "sim-", 64 hex digits, then 'x'); the wrong account gets 401 and a malformed
 *          body 400, in Keystone's {"error":{"code","message","title"}}.
 *          Job requests need X-Auth-Token equal to a token issued: unknown
 *          or missing 401 APIGW.0301, expired 401 APIGW.0307 ("The token
 *          must be updated.").  In other modes /v3/auth/tokens is unknown.
 *   {"mode":"tokens","tokens":{"TOKEN":["PROJECT" or "*",...],...}}
 *          Job requests need one of these X-Auth-Tokens (else 401
 *          APIGW.0301), listed for the path's project or "*" (else 403
 *          APIGW.0302).
 *
 * Shape of the code: one event loop; requests come in through a single
 * evhttp callback (sim_on_request) that routes to the job API or the control
 * API.  A job's state at one instant is a struct job_snapshot, which the
 * API's body builder turns into JSON.  Answers are built as a struct
 * sim_reply and sent by reply_send().  Answers that must wait (delay, hang,
 * reset) are "parked": a parked request holds the evhttp request until its
 * timer fires or its client leaves.
 */

#define _GNU_SOURCE /* tdestroy() */

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <search.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "stream.h"

#define JSON_CONTENT_TYPE "application/json;charset=UTF-8"
#define CONTROL_PREFIX    "/_sim/"
#define SIM_TIMES_MAX     100000
#define IAM_TOKENS_PATH   "/v3/auth/tokens"
#define IAM_PROJECTS_PATH "/v3/projects/"

#define DEFAULT_LISTEN     "127.0.0.1:9090"
#define DEFAULT_INIT_MS    1000
#define DEFAULT_RUNNING_MS 2000
#define DEFAULT_API        "elb-v1"

/* Bounds that keep a hostile or mistaken client from exhausting memory. */
#define MAX_HEADERS_SIZE       (64 * 1024)
#define MAX_BODY_SIZE          (80 * 1024 * 1024) /* stream.c's sink reads large bodies */
#define MAX_TIMELINE_MS        (366LL * 24 * 3600 * 1000)
#define MAX_DELAY_MS           (3600LL * 1000)
#define MAX_FAULT_COUNT        1000000000LL
#define MAX_RETRY_AFTER        86400LL
#define MAX_REASON_LENGTH      100
#define OVERSIZED_DEFAULT_SIZE (4LL * 1024 * 1024)
#define OVERSIZED_MAX_SIZE     (64LL * 1024 * 1024)
#define MAX_SUB_JOBS           100
#define MAX_INIT_STATE_LENGTH  32
#define MAX_TOKEN_TTL_S        (366LL * 24 * 3600)
#define ISSUED_TOKEN_MIN       68LL          /* "sim-" and 64 hex digits */
#define ISSUED_TOKEN_MAX       (48LL * 1024) /* IAM's PKI tokens run to tens of KB */
#define MAX_ISSUED_TOKENS      10000
#define SDK_DATE_MAX_SKEW_S    (15 * 60) /* the API gateway's tolerance for X-Sdk-Date */

/* ------------------------------------------------------------------------ */
/* Data model                                                               */
/* ------------------------------------------------------------------------ */

enum job_phase { JOB_INIT, JOB_RUNNING, JOB_SUCCESS, JOB_FAIL };

#define JOB_PHASES 4

/* When a job's phases change and what it shows meanwhile. */
struct job_timeline {
    int64_t init_ms;                            /* how long the job stays in its init phase */
    int64_t running_ms;                         /* then how long it runs */
    enum job_phase final_phase;                 /* JOB_SUCCESS or JOB_FAIL */
    int sub_jobs;                               /* how many sub-jobs it has */
    int64_t sub_lag_ms;                         /* they reach final_phase this much later */
    char init_state[MAX_INIT_STATE_LENGTH + 1]; /* "": the API's own name */
};

/* One job id the simulator has seen or been told about. */
struct sim_job {
    TAILQ_ENTRY(sim_job) link;
    char *job_id;       /* owned */
    int64_t started_ms; /* monotonic clock when the timeline began */
    time_t started_at;  /* wall clock at that moment, for begin_time */
    struct job_timeline timeline;
    uint64_t requests;  /* job-API requests received for this id */
    char *project_id;   /* owned; the project that created it (NULL: never created by a POST) */
    char *client_token; /* owned; the X-Client-Token of the POST that created it, or NULL */
};

struct job_api;

/* How an API writes a time (always UTC). */
enum job_time_style {
    TIME_PLAIN,  /* 2026-11-28 12:00:00 */
    TIME_ISO,    /* 2026-11-28T12:00:00 */
    TIME_ISO_MS, /* 2026-11-28T12:00:00.000Z */
    TIME_GO_UTC, /* 2026-11-28 12:00:00.000000 +0000 UTC (Go's time.String) */
};

/* What a body builder needs to know about a job at one instant. */
struct job_snapshot {
    const struct job_api *api;
    const char *project_id;
    const char *job_id; /* the id to show (the wrongid fault lies) */
    enum job_phase phase;
    const char *status_name; /* NULL: leave the status out (nostatus fault) */
    time_t begin_time;
    time_t end_time; /* meaningful once the phase is terminal */
    int sub_jobs;
    enum job_phase sub_phase; /* every sub-job is in the same phase */
    const char *sub_status_name;
    time_t sub_end_time; /* meaningful once sub_phase is terminal */
};

/* How an API lays out a job's sub-jobs. */
struct sub_job_layout {
    int default_count;      /* sub-jobs of a job never defined; 0 if none */
    const char *job_type;   /* each sub-job's type; NULL: no sub-jobs at all */
    const char *entity_key; /* v1 APIs: the id in the sub-job's entities */
};

/*
 * The call that creates an API's jobs, when jobsim plays it: a POST on one
 * of "patterns" with {"<body_key>":{...}} makes a job and answers
 * {"job_id":...,"<ids_key>":[...]}, the ids those of the resources its
 * sub-jobs create.  "check" validates the resource object (0, or -1 with
 * "err" set).
 */
struct create_layout {
    const char *patterns[2]; /* literal segments and {project_id}; NULL-padded; [0] NULL: no create call */
    const char *body_key;
    const char *ids_key;
    const char *error_code; /* the service's code for a bad body */
    int (*check)(const cJSON *resource, char *err, size_t errlen);
};

/*
 * A job API the simulator can play (one per instance, chosen by --api):
 * its URL, the names of its states, and how to build its 200 body.  The
 * builder returns a new object, NULL when out of memory.
 */
struct job_api {
    const char *name;                    /* --api NAME */
    const char *pattern;                 /* literal segments, {project_id} and {job_id} */
    const char *phase_names[JOB_PHASES]; /* [JOB_INIT] is the default init state */
    enum job_time_style time_style;      /* how it writes its times */
    const char *job_type;                /* the parent job's type */
    const char *fail_code, *fail_reason; /* shown by a failed job */
    struct sub_job_layout sub_jobs;
    cJSON *(*build_body)(const struct job_snapshot *snap);
    struct create_layout create;
};

/* A request path matched against the API; the ids are owned copies. */
struct job_route {
    const struct job_api *api;
    char *project_id;
    char *job_id;
};

enum fault_kind {
    FAULT_STATUS,
    FAULT_DELAY,
    FAULT_HANG,
    FAULT_RESET,
    FAULT_NONJSON,
    FAULT_NOTOBJECT,
    FAULT_WRONGID,
    FAULT_NOSTATUS,
    FAULT_OVERSIZED,
    FAULT_TRUNCATED,
    FAULT_RAWBODY,
};

struct fault_kind_info {
    const char *name;
    enum fault_kind kind;
    const char *params; /* the parameters it accepts besides job/kind/count */
};

static const struct fault_kind_info fault_kinds[] = {
    {"status", FAULT_STATUS, "status reason shape code message retry_after"},
    {"delay", FAULT_DELAY, "delay_ms"},
    {"hang", FAULT_HANG, ""},
    {"reset", FAULT_RESET, ""},
    {"nonjson", FAULT_NONJSON, ""},
    {"notobject", FAULT_NOTOBJECT, ""},
    {"wrongid", FAULT_WRONGID, ""},
    {"nostatus", FAULT_NOSTATUS, ""},
    {"oversized", FAULT_OVERSIZED, "size"},
    {"truncated", FAULT_TRUNCATED, ""},
    {"rawbody", FAULT_RAWBODY, "body"},
};

/* Body of a status fault's answer. */
enum error_shape { SHAPE_ELB, SHAPE_APIGW, SHAPE_TEXT, SHAPE_EMPTY, SHAPE_JSON };

static const char *const error_shape_names[] = {
    [SHAPE_ELB] = "elb", [SHAPE_APIGW] = "apigw", [SHAPE_TEXT] = "text", [SHAPE_EMPTY] = "empty", [SHAPE_JSON] = "json",
};

struct fault {
    TAILQ_ENTRY(fault) link;
    int on_create; /* "on=create": bends the answers to the create call, not to job requests */
    char *job_id;  /* owned; NULL matches every job ("job=*"); always NULL with on_create */
    const struct fault_kind_info *kind;
    long long remaining; /* answers left before removal; 0: until cleared */
    /* kind=status */
    int status;
    char *reason; /* owned; NULL: "Sim Status" */
    enum error_shape shape;
    char *code;      /* owned; NULL: the shape's default */
    char *message;   /* owned; NULL: the shape's default */
    int retry_after; /* seconds; -1: no Retry-After header */
    /* kind=delay */
    long long delay_ms;
    /* kind=oversized */
    long long size;
    /* kind=rawbody */
    char *body; /* owned */
};

/* How job requests must authenticate (POST /_sim/auth). */
enum auth_mode { AUTH_NONE, AUTH_AKSK, AUTH_IAM, AUTH_TOKENS };

static const char *const auth_mode_names[] = {
    [AUTH_NONE] = "none",
    [AUTH_AKSK] = "aksk",
    [AUTH_IAM] = "iam",
    [AUTH_TOKENS] = "tokens",
};

/* A token handed out by POST /v3/auth/tokens (iam mode). */
struct issued_token {
    TAILQ_ENTRY(issued_token) link;
    char *value;       /* "sim-", 64 hex digits, then 'x' up to token_bytes (owned) */
    time_t expires_at; /* wall clock */
    int revoked;       /* POST /_sim/auth/expire: expired before its time */
};

/*
 * The authentication the simulator asks of job requests, and what it saw.
 * Every string is owned; a mode's settings are NULL in the other modes.
 */
struct sim_auth {
    enum auth_mode mode;
    char *ak, *sk;                                      /* aksk */
    char *user, *password, *domain;                     /* iam: the one account IAM knows */
    long long token_ttl_s;                              /* iam: life of an issued token */
    long long iam_delay_ms;                             /* iam: how late IAM answers */
    long long token_bytes;                              /* iam: length of an issued token (real ones: KBs) */
    TAILQ_HEAD(issued_token_list, issued_token) issued; /* iam, oldest first */
    size_t issued_count;
    cJSON *tokens; /* tokens: {"TOKEN":["PROJECT"|"*",...],...} */

    uint64_t iam_calls;          /* POST /v3/auth/tokens received in iam mode */
    uint64_t sig_ok, sig_bad;    /* aksk: signatures checked and found good or bad */
    uint64_t rejected;           /* job requests refused, any mode */
    int last_authorization_seen; /* did the latest job request carry Authorization? */
    char last_rejection[256];    /* why the latest refused request was refused */
};

/* An answer ready to send; see reply_send(). */
struct sim_reply {
    int status;
    char *reason;               /* owned; NULL: evhttp's standard phrase */
    const char *content_type;   /* static string; NULL: no Content-Type */
    int retry_after;            /* seconds; -1: no Retry-After header */
    struct evbuffer *body;      /* owned; NULL only in a reply never set up */
    long long announced_length; /* Content-Length to claim; -1: the body's */
    int close_connection;       /* close once sent */
};

enum park_action {
    PARK_SEND_LATER, /* send "reply" when the timer fires (delay) */
    PARK_HANG,       /* never answer (hang) */
    PARK_RESET,      /* reset the connection when the timer fires (reset) */
};

/*
 * A request whose answer waits.  evhttp owns "req" as long as it is
 * attached to "evcon"; the parked request owns the timer and the reply, and
 * is released either by its timer (after answering) or by the connection's
 * close callback (the client left, or the server is shutting down).
 */
struct parked_request {
    TAILQ_ENTRY(parked_request) link;
    struct sim *sim;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    enum park_action action;
    struct event *timer;    /* owned; NULL for PARK_HANG */
    struct sim_reply reply; /* PARK_SEND_LATER only */
};

struct sim {
    struct event_base *base;
    struct evhttp *http;
    SSL_CTX *tls; /* NULL when serving plain HTTP */
    int quiet;
    const struct job_api *api;            /* the one job API played */
    struct job_timeline default_timeline; /* of jobs never defined */

    void *job_index;                    /* tsearch() tree over "jobs", keyed by job_id */
    TAILQ_HEAD(job_list, sim_job) jobs; /* owns the jobs, first seen first */
    uint64_t total_job_requests;
    cJSON *posts;      /* owned; {"<project_id>":N}: POSTs received on the create call */
    uint64_t creates;  /* jobs the create call made (an idempotent replay makes none) */
    int64_t *times_ms; /* arrival of each job request (SIM_TIMES_MAX at most) */
    size_t ntimes;
    TAILQ_HEAD(fault_list, fault) faults;
    cJSON *last_request;        /* owned; NULL until a job request arrives */
    cJSON *iam_projects;        /* owned; {"<project_id>":"<name>"} (POST /_sim/projects) */
    cJSON *iam_project_calls;   /* owned; {"<project_id>":N}: GET /v3/projects/{id} received */
    uint64_t iam_project_total; /* ... all of them */
    long long iam_project_delay_ms;
    const char *iam_project_last_auth; /* "token", "aksk" or "none": the latest call's credentials */
    TAILQ_HEAD(parked_list, parked_request) parked;
    struct sim_auth auth;
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static void set_error(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_error(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void sim_log(const struct sim *sim, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One line on stderr, unless --quiet. */
static void sim_log(const struct sim *sim, const char *fmt, ...)
{
    va_list ap;

    if (sim->quiet)
        return;
    fputs("jobsim: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int64_t monotonic_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* 32 random lowercase hex characters, like the API gateway's request ids. */
static void random_request_id(char out[33])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char bytes[16];
    size_t i;

    evutil_secure_rng_get_bytes(bytes, sizeof(bytes));
    for (i = 0; i < sizeof(bytes); i++) {
        out[2 * i] = hex[bytes[i] >> 4];
        out[2 * i + 1] = hex[bytes[i] & 0xf];
    }
    out[32] = '\0';
}

static uint64_t fnv1a64(const char *text, uint64_t salt)
{
    uint64_t hash = 14695981039346656037ULL ^ salt;

    for (; *text != '\0'; text++) {
        hash ^= (unsigned char)*text;
        hash *= 1099511628211ULL;
    }
    return hash;
}

/*
 * A UUID-looking id derived from "text", so that the ELB a job "created"
 * keeps the same id on every poll.
 */
static void derived_uuid(const char *text, uint64_t salt, char out[37])
{
    uint64_t high = fnv1a64(text, salt);
    uint64_t low = fnv1a64(text, ~salt);

    snprintf(out, 37, "%08" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%012" PRIx64, high >> 32,
             (high >> 16) & 0xffff, high & 0xffff, low >> 48, low & (uint64_t)0xffffffffffff);
}

/* 32 lowercase hex characters derived from "text", like a v1 job id. */
static void derived_hex_id(const char *text, uint64_t salt, char out[33])
{
    snprintf(out, 33, "%016" PRIx64 "%016" PRIx64, fnv1a64(text, salt), fnv1a64(text, ~salt));
}

/*
 * Parse a whole string as a decimal integer within [min, max] (min >= 0):
 * no sign, no spaces, nothing after the digits.
 */
static int parse_integer(const char *text, long long min, long long max, long long *out)
{
    char *end;
    long long value;

    if (text == NULL || !isdigit((unsigned char)text[0]))
        return -1;
    errno = 0;
    value = strtoll(text, &end, 10);
    if (errno != 0 || *end != '\0' || value < min || value > max)
        return -1;
    *out = value;
    return 0;
}

/* Is "word" one of the space-separated words of "list"? */
static int word_in_list(const char *list, const char *word)
{
    size_t length = strlen(word);

    while (*list != '\0') {
        size_t n = strcspn(list, " ");

        if (n == length && strncmp(list, word, length) == 0)
            return 1;
        list += n;
        list += strspn(list, " ");
    }
    return 0;
}

static const char *method_name(enum evhttp_cmd_type method)
{
    switch (method) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    case EVHTTP_REQ_PATCH: return "PATCH";
    }
    return "UNKNOWN";
}

/* ------------------------------------------------------------------------ */
/* Query parameters                                                         */
/* ------------------------------------------------------------------------ */

/*
 * Refuse any parameter named in neither list (space-separated words), so
 * that a typo in a test ("delay=500") fails loudly instead of being ignored.
 */
static int params_check(const struct evkeyvalq *params, const char *accepted, const char *also_accepted, char *err,
                        size_t errlen)
{
    const struct evkeyval *param;

    TAILQ_FOREACH (param, params, next) {
        if (word_in_list(accepted, param->key) || word_in_list(also_accepted, param->key))
            continue;
        set_error(err, errlen, "unknown parameter '%s' (accepted: %s%s%s)", param->key, accepted,
                  *also_accepted ? " " : "", also_accepted);
        return -1;
    }
    return 0;
}

/* Read integer parameter "name" into *out; *out is left alone if absent. */
static int param_integer(const struct evkeyvalq *params, const char *name, long long min, long long max, long long *out,
                         char *err, size_t errlen)
{
    const char *text = evhttp_find_header(params, name);

    if (text == NULL)
        return 0;
    if (parse_integer(text, min, max, out) != 0) {
        set_error(err, errlen, "%s must be an integer from %lld to %lld", name, min, max);
        return -1;
    }
    return 0;
}

/* Copy optional string parameter "name" into *out (NULL if absent). */
static int param_string(const struct evkeyvalq *params, const char *name, char **out, char *err, size_t errlen)
{
    const char *text = evhttp_find_header(params, name);

    *out = NULL;
    if (text == NULL)
        return 0;
    if ((*out = strdup(text)) == NULL) {
        set_error(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Replies                                                                  */
/* ------------------------------------------------------------------------ */

static int reply_init(struct sim_reply *reply, int status)
{
    memset(reply, 0, sizeof(*reply));
    reply->status = status;
    reply->retry_after = -1;
    reply->announced_length = -1;
    reply->body = evbuffer_new();
    return reply->body != NULL ? 0 : -1;
}

static void reply_release(struct sim_reply *reply)
{
    if (reply->body != NULL)
        evbuffer_free(reply->body);
    free(reply->reason);
    memset(reply, 0, sizeof(*reply));
}

/* evbuffer cleanup callback for text printed by cJSON. */
static void free_printed_json(const void *data, size_t length, void *extra)
{
    cJSON_free((void *)data);
}

/* Make "json" (consumed, may be NULL) the reply's body. */
static int reply_set_json(struct sim_reply *reply, cJSON *json)
{
    char *text = json != NULL ? cJSON_PrintUnformatted(json) : NULL;

    cJSON_Delete(json);
    if (text == NULL)
        return -1;
    /* By reference: a multi-megabyte oversized body is not copied again. */
    if (evbuffer_add_reference(reply->body, text, strlen(text), free_printed_json, NULL) != 0) {
        cJSON_free(text);
        return -1;
    }
    reply->content_type = JSON_CONTENT_TYPE;
    return 0;
}

static int reply_set_text(struct sim_reply *reply, const char *content_type, const char *text)
{
    reply->content_type = content_type;
    return evbuffer_add(reply->body, text, strlen(text));
}

/* Keep only the first "keep" bytes of the body. */
static int reply_truncate_body(struct sim_reply *reply, size_t keep)
{
    struct evbuffer *kept = evbuffer_new();

    if (kept == NULL || evbuffer_remove_buffer(reply->body, kept, keep) < 0) {
        if (kept != NULL)
            evbuffer_free(kept);
        return -1;
    }
    evbuffer_free(reply->body);
    reply->body = kept;
    return 0;
}

/*
 * Send "reply" as the answer to "req"; the reply keeps ownership of its
 * (now emptied) buffer.  evhttp may free "req" from now on: callers must not
 * touch it afterwards.
 */
static void reply_send(struct evhttp_request *req, struct sim_reply *reply)
{
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    int is_head = evhttp_request_get_command(req) == EVHTTP_REQ_HEAD;
    /* RFC 9110: 1xx, 204 and 304 answers never carry content. */
    int bodyless = reply->status < 200 || reply->status == 204 || reply->status == 304;
    size_t body_length = evbuffer_get_length(reply->body);
    char number[32];

    if (reply->content_type != NULL && !bodyless)
        evhttp_add_header(headers, "Content-Type", reply->content_type);
    if (reply->retry_after >= 0) {
        snprintf(number, sizeof(number), "%d", reply->retry_after);
        evhttp_add_header(headers, "Retry-After", number);
    }
    /*
     * evhttp derives Content-Length from the buffer it sends and leaves it
     * out of HEAD answers, but a HEAD answer should announce what GET would
     * send, and the truncated fault announces more than it sends.  evhttp
     * keeps a Content-Length it finds already set.
     */
    if (!bodyless && (is_head || reply->announced_length >= 0)) {
        long long length = reply->announced_length >= 0 ? reply->announced_length : (long long)body_length;

        snprintf(number, sizeof(number), "%lld", length);
        evhttp_add_header(headers, "Content-Length", number);
    }
    /*
     * A 1xx answer leaves the client waiting for a final answer that will
     * never come; closing the connection at least ends the exchange.
     */
    if (reply->close_connection || reply->status < 200)
        evhttp_add_header(headers, "Connection", "close");
    /* evhttp would send the buffer even for HEAD, corrupting the stream. */
    if (is_head || bodyless)
        evbuffer_drain(reply->body, body_length);
    evhttp_send_reply(req, reply->status, reply->reason, reply->body);
}

/* {"error_msg":..., "error_code":..., "request_id":...}: the API gateway. */
static cJSON *apigw_error_json(const char *code, const char *message)
{
    cJSON *json = cJSON_CreateObject();
    char request_id[33];

    random_request_id(request_id);
    cJSON_AddStringToObject(json, "error_msg", message);
    cJSON_AddStringToObject(json, "error_code", code);
    cJSON_AddStringToObject(json, "request_id", request_id);
    return json;
}

/* {"error":{"message":..., "code":...}}: the classic ELB service itself. */
static cJSON *elb_error_json(const char *code, const char *message)
{
    cJSON *json = cJSON_CreateObject();
    cJSON *error = cJSON_AddObjectToObject(json, "error");

    cJSON_AddStringToObject(error, "message", message);
    cJSON_AddStringToObject(error, "code", code);
    return json;
}

/*
 * Last resort when an answer could not be built (out of memory): evhttp's
 * own error page needs almost no memory.
 */
static void answer_internal_error(struct evhttp_request *req, char *outcome, size_t outcome_len)
{
    evhttp_send_error(req, HTTP_INTERNAL, NULL);
    snprintf(outcome, outcome_len, "500 (could not build the answer)");
}

/* Send a JSON answer (consumed) with the given status. */
static void answer_json(struct evhttp_request *req, int status, cJSON *json, char *outcome, size_t outcome_len)
{
    struct sim_reply reply;
    int built = reply_init(&reply, status) == 0;

    if (built)
        built = reply_set_json(&reply, json) == 0;
    else
        cJSON_Delete(json);
    if (built) {
        reply_send(req, &reply);
        snprintf(outcome, outcome_len, "%d", status);
    } else {
        answer_internal_error(req, outcome, outcome_len);
    }
    reply_release(&reply);
}

static void answer_api_not_found(struct evhttp_request *req, char *outcome, size_t outcome_len)
{
    answer_json(req, HTTP_NOTFOUND,
                apigw_error_json("APIGW.0101", "The API does not exist or has not been published in the environment"),
                outcome, outcome_len);
}

/* ------------------------------------------------------------------------ */
/* Jobs                                                                     */
/* ------------------------------------------------------------------------ */

static int job_compare(const void *a, const void *b)
{
    const struct sim_job *left = a, *right = b;

    return strcmp(left->job_id, right->job_id);
}

/* tdestroy() callback: the index does not own the jobs, the list does. */
static void job_index_forget(void *job)
{
}

static struct sim_job *job_find(struct sim *sim, const char *job_id)
{
    struct sim_job key = {.job_id = (char *)job_id};
    void *node = tfind(&key, &sim->job_index, job_compare);

    return node != NULL ? *(struct sim_job **)node : NULL;
}

/* Start (or restart) the job's timeline now. */
static void job_restart(struct sim_job *job, const struct job_timeline *timeline)
{
    job->started_ms = monotonic_ms();
    job->started_at = time(NULL);
    job->timeline = *timeline;
}

/* The job with this id, created with the default timeline if new. */
static struct sim_job *job_find_or_create(struct sim *sim, const char *job_id)
{
    struct sim_job *job = job_find(sim, job_id);

    if (job != NULL)
        return job;
    if ((job = calloc(1, sizeof(*job))) == NULL)
        return NULL;
    if ((job->job_id = strdup(job_id)) == NULL || tsearch(job, &sim->job_index, job_compare) == NULL) {
        free(job->job_id);
        free(job);
        return NULL;
    }
    TAILQ_INSERT_TAIL(&sim->jobs, job, link);
    job_restart(job, &sim->default_timeline);
    return job;
}

static void jobs_clear(struct sim *sim)
{
    struct sim_job *job;

    tdestroy(sim->job_index, job_index_forget);
    sim->job_index = NULL;
    while ((job = TAILQ_FIRST(&sim->jobs)) != NULL) {
        TAILQ_REMOVE(&sim->jobs, job, link);
        free(job->job_id);
        free(job->project_id);
        free(job->client_token);
        free(job);
    }
    sim->total_job_requests = 0;
    cJSON_Delete(sim->posts);
    sim->posts = NULL;
    sim->creates = 0;
    sim->ntimes = 0;
}

/* What "api" calls "phase" for this job (its init state may be its own). */
static const char *job_state_name(const struct job_api *api, const struct sim_job *job, enum job_phase phase)
{
    if (phase == JOB_INIT && job->timeline.init_state[0] != '\0')
        return job->timeline.init_state;
    return api->phase_names[phase];
}

static void job_snapshot_take(const struct job_api *api, const struct sim_job *job, const char *project_id,
                              const char *shown_job_id, struct job_snapshot *snap)
{
    const struct job_timeline *timeline = &job->timeline;
    int64_t elapsed = monotonic_ms() - job->started_ms;
    int64_t final_at = timeline->init_ms + timeline->running_ms;

    memset(snap, 0, sizeof(*snap));
    if (elapsed < timeline->init_ms)
        snap->phase = snap->sub_phase = JOB_INIT;
    else if (elapsed < final_at)
        snap->phase = snap->sub_phase = JOB_RUNNING;
    else
        snap->phase = timeline->final_phase;
    if (elapsed >= final_at)
        snap->sub_phase = elapsed < final_at + timeline->sub_lag_ms ? JOB_RUNNING : timeline->final_phase;
    snap->api = api;
    snap->status_name = job_state_name(api, job, snap->phase);
    snap->sub_status_name = job_state_name(api, job, snap->sub_phase);
    snap->project_id = project_id;
    snap->job_id = shown_job_id;
    snap->begin_time = job->started_at;
    snap->end_time = job->started_at + (time_t)(final_at / 1000);
    snap->sub_end_time = job->started_at + (time_t)((final_at + timeline->sub_lag_ms) / 1000);
    snap->sub_jobs = timeline->sub_jobs;
}

static int job_phase_terminal(enum job_phase phase)
{
    return phase == JOB_SUCCESS || phase == JOB_FAIL;
}

/* Add "key": the time in the API's format, or "" if "known" is false. */
static void add_job_time(cJSON *object, const char *key, const struct job_snapshot *snap, time_t when, int known)
{
    struct tm tm;
    char text[64] = "";

    if (known) {
        gmtime_r(&when, &tm);
        /* Literal formats, so that the compiler can check them. */
        switch (snap->api->time_style) {
        case TIME_PLAIN: strftime(text, sizeof(text), "%Y-%m-%d %H:%M:%S", &tm); break;
        case TIME_ISO: strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%S", &tm); break;
        case TIME_ISO_MS: strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%S.000Z", &tm); break;
        case TIME_GO_UTC: strftime(text, sizeof(text), "%Y-%m-%d %H:%M:%S.000000 +0000 UTC", &tm); break;
        }
    }
    cJSON_AddStringToObject(object, key, text);
}

/* Add the error fields: the API's failure if "phase" is JOB_FAIL, else nulls. */
static void add_job_error(cJSON *object, const char *code_key, const char *reason_key, const struct job_snapshot *snap,
                          enum job_phase phase)
{
    if (phase == JOB_FAIL) {
        cJSON_AddStringToObject(object, code_key, snap->api->fail_code);
        cJSON_AddStringToObject(object, reason_key, snap->api->fail_reason);
    } else {
        cJSON_AddNullToObject(object, code_key);
        cJSON_AddNullToObject(object, reason_key);
    }
}

/*
 * The classic ELB job body, shaped like the documented one:
 * {"status","entities","job_id","job_type","begin_time","end_time",
 *  "error_code","fail_reason","sub_jobs"}; a createELB job's entities carry
 * the load balancer once it exists.
 */
static cJSON *elb_classic_job_body(const struct job_snapshot *snap)
{
    cJSON *body = cJSON_CreateObject();
    cJSON *entities;

    if (body == NULL)
        return NULL;
    if (snap->status_name != NULL)
        cJSON_AddStringToObject(body, "status", snap->status_name);
    entities = cJSON_AddObjectToObject(body, "entities");
    if (snap->phase == JOB_SUCCESS) {
        cJSON *elb = cJSON_AddObjectToObject(entities, "elb");
        char name[16];
        char id[37];

        derived_uuid(snap->job_id, 0x1e1b, id);
        cJSON_AddStringToObject(elb, "id", id);
        snprintf(name, sizeof(name), "elb-%.8s", snap->job_id);
        cJSON_AddStringToObject(elb, "name", name);
        cJSON_AddStringToObject(elb, "type", "External");
        cJSON_AddStringToObject(elb, "status", "ACTIVE");
        cJSON_AddNumberToObject(elb, "bandwidth", 10);
        cJSON_AddStringToObject(elb, "vip_address", "192.0.2.10");
        cJSON_AddStringToObject(elb, "tenant_id", snap->project_id);
        cJSON_AddNumberToObject(elb, "admin_state_up", 1);
        derived_uuid(snap->project_id, 0x5bc, id);
        cJSON_AddStringToObject(elb, "vpc_id", id);
    }
    cJSON_AddStringToObject(body, "job_id", snap->job_id);
    cJSON_AddStringToObject(body, "job_type", snap->api->job_type);
    add_job_time(body, "begin_time", snap, snap->begin_time, 1);
    add_job_time(body, "end_time", snap, snap->end_time, job_phase_terminal(snap->phase));
    add_job_error(body, "error_code", "fail_reason", snap, snap->phase);
    cJSON_AddArrayToObject(body, "sub_jobs");
    return body;
}

/*
 * The id of the resource that sub-job "index" of "job_id" creates: the same
 * in the create call's answer and on every poll.
 */
static void sub_job_resource_id(const char *job_id, int index, char out[37])
{
    derived_uuid(job_id, 0x5e0 + (uint64_t)index, out);
}

/*
 * The ECS-style v1 job body (ECS, EVS, VPC):
 * {"status","entities","job_id","job_type","begin_time","end_time",
 *  "error_code","fail_reason"}.  With a sub-job layout, entities is
 * {"sub_jobs_total":N,"sub_jobs":[...]}, each sub-job shaped like the parent
 * with the id of the resource it creates in its entities; else {}.
 */
static cJSON *v1_job_body(const struct job_snapshot *snap)
{
    const struct job_api *api = snap->api;
    cJSON *body = cJSON_CreateObject();
    cJSON *entities;
    int i;

    if (body == NULL)
        return NULL;
    if (snap->status_name != NULL)
        cJSON_AddStringToObject(body, "status", snap->status_name);
    entities = cJSON_AddObjectToObject(body, "entities");
    if (api->sub_jobs.job_type != NULL) {
        cJSON *sub_jobs;

        cJSON_AddNumberToObject(entities, "sub_jobs_total", snap->sub_jobs);
        sub_jobs = cJSON_AddArrayToObject(entities, "sub_jobs");
        for (i = 0; i < snap->sub_jobs; i++) {
            cJSON *sub = cJSON_CreateObject();
            cJSON *sub_entities;
            char id[37];

            cJSON_AddItemToArray(sub_jobs, sub);
            cJSON_AddStringToObject(sub, "status", snap->sub_status_name);
            sub_entities = cJSON_AddObjectToObject(sub, "entities");
            if (api->sub_jobs.entity_key != NULL) {
                sub_job_resource_id(snap->job_id, i, id);
                cJSON_AddStringToObject(sub_entities, api->sub_jobs.entity_key, id);
            }
            derived_hex_id(snap->job_id, 0x50b + (uint64_t)i, id);
            cJSON_AddStringToObject(sub, "job_id", id);
            cJSON_AddStringToObject(sub, "job_type", api->sub_jobs.job_type);
            add_job_time(sub, "begin_time", snap, snap->begin_time, 1);
            add_job_time(sub, "end_time", snap, snap->sub_end_time, job_phase_terminal(snap->sub_phase));
            add_job_error(sub, "error_code", "fail_reason", snap, snap->sub_phase);
        }
    }
    cJSON_AddStringToObject(body, "job_id", snap->job_id);
    cJSON_AddStringToObject(body, "job_type", api->job_type);
    add_job_time(body, "begin_time", snap, snap->begin_time, 1);
    add_job_time(body, "end_time", snap, snap->end_time, job_phase_terminal(snap->phase));
    add_job_error(body, "error_code", "fail_reason", snap, snap->phase);
    return body;
}

/*
 * The ELB v3 job body: {"job":{"status","job_id","job_type","begin_time",
 * "end_time","error_code","error_msg","resource_id","project_id",
 * "sub_jobs":[{"status","job_id","job_type","resource_id"}...]},
 * "request_id"}.
 */
static cJSON *elb_v3_job_body(const struct job_snapshot *snap)
{
    const struct job_api *api = snap->api;
    cJSON *body = cJSON_CreateObject();
    cJSON *job, *sub_jobs;
    char id[37];
    char request_id[33];
    int i;

    if (body == NULL)
        return NULL;
    job = cJSON_AddObjectToObject(body, "job");
    if (snap->status_name != NULL)
        cJSON_AddStringToObject(job, "status", snap->status_name);
    cJSON_AddStringToObject(job, "job_id", snap->job_id);
    cJSON_AddStringToObject(job, "job_type", api->job_type);
    add_job_time(job, "begin_time", snap, snap->begin_time, 1);
    add_job_time(job, "end_time", snap, snap->end_time, job_phase_terminal(snap->phase));
    add_job_error(job, "error_code", "error_msg", snap, snap->phase);
    derived_uuid(snap->job_id, 0x1e1b, id);
    cJSON_AddStringToObject(job, "resource_id", id);
    cJSON_AddStringToObject(job, "project_id", snap->project_id);
    sub_jobs = cJSON_AddArrayToObject(job, "sub_jobs");
    for (i = 0; i < snap->sub_jobs; i++) {
        cJSON *sub = cJSON_CreateObject();

        cJSON_AddItemToArray(sub_jobs, sub);
        cJSON_AddStringToObject(sub, "status", snap->sub_status_name);
        derived_uuid(snap->job_id, 0x50b + (uint64_t)i, id);
        cJSON_AddStringToObject(sub, "job_id", id);
        cJSON_AddStringToObject(sub, "job_type", api->sub_jobs.job_type);
        derived_uuid(snap->job_id, 0x5e0 + (uint64_t)i, id);
        cJSON_AddStringToObject(sub, "resource_id", id);
    }
    random_request_id(request_id);
    cJSON_AddStringToObject(body, "request_id", request_id);
    return body;
}

/*
 * The CCE job body, Kubernetes-style: {"kind":"Job","apiVersion":"v3",
 * "metadata":{"uid","creationTimestamp"},"spec":{"type","clusterUID",
 * "resourceName","subJobs":[{"kind","metadata":{"uid"},"spec":{"type"},
 * "status":{"phase"}}...]},"status":{"phase","reason"}}.
 */
static cJSON *cce_job_body(const struct job_snapshot *snap)
{
    const struct job_api *api = snap->api;
    cJSON *body = cJSON_CreateObject();
    cJSON *metadata, *spec, *status, *sub_jobs;
    char id[37];
    char name[24];
    int i;

    if (body == NULL)
        return NULL;
    cJSON_AddStringToObject(body, "kind", "Job");
    cJSON_AddStringToObject(body, "apiVersion", "v3");
    metadata = cJSON_AddObjectToObject(body, "metadata");
    cJSON_AddStringToObject(metadata, "uid", snap->job_id);
    add_job_time(metadata, "creationTimestamp", snap, snap->begin_time, 1);
    spec = cJSON_AddObjectToObject(body, "spec");
    cJSON_AddStringToObject(spec, "type", api->job_type);
    derived_uuid(snap->job_id, 0xcce, id);
    cJSON_AddStringToObject(spec, "clusterUID", id);
    snprintf(name, sizeof(name), "cluster-%.8s", snap->job_id);
    cJSON_AddStringToObject(spec, "resourceName", name);
    sub_jobs = cJSON_AddArrayToObject(spec, "subJobs");
    for (i = 0; i < snap->sub_jobs; i++) {
        cJSON *sub = cJSON_CreateObject();

        cJSON_AddItemToArray(sub_jobs, sub);
        cJSON_AddStringToObject(sub, "kind", "Job");
        derived_uuid(snap->job_id, 0x50b + (uint64_t)i, id);
        cJSON_AddStringToObject(cJSON_AddObjectToObject(sub, "metadata"), "uid", id);
        cJSON_AddStringToObject(cJSON_AddObjectToObject(sub, "spec"), "type", api->sub_jobs.job_type);
        cJSON_AddStringToObject(cJSON_AddObjectToObject(sub, "status"), "phase", snap->sub_status_name);
    }
    status = cJSON_AddObjectToObject(body, "status");
    if (snap->status_name != NULL)
        cJSON_AddStringToObject(status, "phase", snap->status_name);
    cJSON_AddStringToObject(status, "reason", snap->phase == JOB_FAIL ? api->fail_reason : "");
    return body;
}

/* A string member "key" of "object" that is not empty? */
static int json_has_text(const cJSON *object, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);

    return cJSON_IsString(item) && item->valuestring[0] != '\0';
}

/*
 * The "server" of ECS's CreateServers (v1.1) and CreatePostPaidServers (v1)
 * bodies: the members both require (imageRef, flavorRef, name, vpcid, nics
 * with a subnet_id each, root_volume with its volumetype) and "count" if
 * given.  Everything else is accepted as it is.
 */
static int ecs_server_check(const cJSON *server, char *err, size_t errlen)
{
    static const char *const required[] = {"imageRef", "flavorRef", "name", "vpcid"};
    const cJSON *nics = cJSON_GetObjectItemCaseSensitive(server, "nics");
    const cJSON *root_volume = cJSON_GetObjectItemCaseSensitive(server, "root_volume");
    const cJSON *count = cJSON_GetObjectItemCaseSensitive(server, "count");
    const cJSON *nic;
    size_t i;

    for (i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        if (!json_has_text(server, required[i])) {
            set_error(err, errlen, "server.%s is required", required[i]);
            return -1;
        }
    }
    if (!cJSON_IsArray(nics) || cJSON_GetArraySize(nics) == 0) {
        set_error(err, errlen, "server.nics must be a non-empty array");
        return -1;
    }
    cJSON_ArrayForEach(nic, nics)
    {
        if (!json_has_text(nic, "subnet_id")) {
            set_error(err, errlen, "server.nics[].subnet_id is required");
            return -1;
        }
    }
    if (!cJSON_IsObject(root_volume) || !json_has_text(root_volume, "volumetype")) {
        set_error(err, errlen, "server.root_volume.volumetype is required");
        return -1;
    }
    if (count != NULL && (!cJSON_IsNumber(count) || count->valuedouble != (double)(int)count->valuedouble ||
                          count->valueint < 1 || count->valueint > MAX_SUB_JOBS)) {
        set_error(err, errlen, "server.count must be an integer from 1 to %d", MAX_SUB_JOBS);
        return -1;
    }
    return 0;
}

/*
 * The job APIs, one row each; the first is the default.  Error codes and
 * resource types are plausible stand-ins, not copied from any real job.
 */
static const struct job_api job_apis[] = {
    {
        .name = "elb-v1",
        .pattern = "/v1.0/{project_id}/jobs/{job_id}",
        .phase_names = {"INIT", "RUNNING", "SUCCESS", "FAIL"},
        .time_style = TIME_PLAIN,
        .job_type = "createELB",
        .fail_code = "ELB.2003",
        .fail_reason = "quota exceeded",
        .sub_jobs = {0, NULL, NULL},
        .build_body = elb_classic_job_body,
    },
    {
        .name = "ecs",
        .pattern = "/v1/{project_id}/jobs/{job_id}",
        .phase_names = {"INIT", "RUNNING", "SUCCESS", "FAIL"},
        .time_style = TIME_ISO_MS,
        .job_type = "createServer",
        .fail_code = "Ecs.0000",
        .fail_reason = "insufficient resources",
        .sub_jobs = {2, "createSingleServer", "server_id"},
        .build_body = v1_job_body,
        .create = {{"/v1/{project_id}/cloudservers", "/v1.1/{project_id}/cloudservers"},
                   "server",
                   "serverIds",
                   "Ecs.0005",
                   ecs_server_check},
    },
    {
        .name = "evs",
        .pattern = "/v1/{project_id}/jobs/{job_id}",
        .phase_names = {"INIT", "RUNNING", "SUCCESS", "FAIL"},
        .time_style = TIME_ISO_MS,
        .job_type = "createVolume",
        .fail_code = "EVS.2024",
        .fail_reason = "insufficient capacity",
        .sub_jobs = {2, "createSingleVolume", "volume_id"},
        .build_body = v1_job_body,
    },
    {
        .name = "vpc",
        .pattern = "/v1/{project_id}/jobs/{job_id}",
        .phase_names = {"INIT", "RUNNING", "SUCCESS", "FAIL"},
        .time_style = TIME_ISO_MS,
        .job_type = "createPublicip",
        .fail_code = "VPC.0301",
        .fail_reason = "quota exceeded",
        .sub_jobs = {0, NULL, NULL},
        .build_body = v1_job_body,
    },
    {
        .name = "elb-v3",
        .pattern = "/v3/{project_id}/elb/jobs/{job_id}",
        .phase_names = {"INIT", "RUNNING", "SUCCESS", "FAIL"},
        .time_style = TIME_ISO,
        .job_type = "CreateLoadbalancer",
        .fail_code = "ELB.8902",
        .fail_reason = "quota exceeded",
        .sub_jobs = {2, "CreateListener", NULL},
        .build_body = elb_v3_job_body,
    },
    {
        .name = "cce",
        .pattern = "/api/v3/projects/{project_id}/jobs/{job_id}",
        .phase_names = {"Initializing", "Running", "Success", "Failed"},
        .time_style = TIME_GO_UTC,
        .job_type = "CreateCluster",
        .fail_code = "CCE.01500001",
        .fail_reason = "cluster creation failed",
        .sub_jobs = {2, "CreateMaster", NULL},
        .build_body = cce_job_body,
    },
};

#define JOB_API_COUNT (sizeof(job_apis) / sizeof(job_apis[0]))

static const struct job_api *job_api_lookup(const char *name)
{
    size_t i;

    for (i = 0; i < JOB_API_COUNT; i++) {
        if (strcmp(job_apis[i].name, name) == 0)
            return &job_apis[i];
    }
    return NULL;
}

/* "elb-v1 ecs ...": the names --api accepts. */
static void job_api_names(char *out, size_t outlen)
{
    size_t i, used = 0;

    out[0] = '\0';
    for (i = 0; i < JOB_API_COUNT && used < outlen; i++)
        used += (size_t)snprintf(out + used, outlen - used, "%s%s", i > 0 ? " " : "", job_apis[i].name);
}

static void job_route_clear(struct job_route *route)
{
    free(route->project_id);
    free(route->job_id);
    memset(route, 0, sizeof(*route));
}

/*
 * Match "path" against "pattern", segment by segment: literal segments must
 * be equal, placeholders take any non-empty segment.  Returns 0 and fills
 * "route" (to be cleared by the caller) on a match.
 */
static int route_match(const struct job_api *api, const char *pattern, const char *path, struct job_route *route)
{
    memset(route, 0, sizeof(*route));
    while (*pattern != '\0' || *path != '\0') {
        size_t pattern_len, segment_len;
        char **capture = NULL;

        if (*pattern != '/' || *path != '/')
            goto mismatch;
        pattern++;
        path++;
        pattern_len = strcspn(pattern, "/");
        segment_len = strcspn(path, "/");
        if (pattern_len == strlen("{job_id}") && strncmp(pattern, "{job_id}", pattern_len) == 0)
            capture = &route->job_id;
        else if (pattern_len == strlen("{project_id}") && strncmp(pattern, "{project_id}", pattern_len) == 0)
            capture = &route->project_id;

        if (capture != NULL) {
            if (segment_len == 0 || *capture != NULL)
                goto mismatch;
            if ((*capture = strndup(path, segment_len)) == NULL)
                goto mismatch;
        } else if (pattern_len != segment_len || strncmp(pattern, path, pattern_len) != 0) {
            goto mismatch;
        }
        pattern += pattern_len;
        path += segment_len;
    }
    route->api = api;
    return 0;

mismatch:
    job_route_clear(route);
    return -1;
}

/* Is "path" the API's job path?  As route_match(). */
static int job_route_match(const struct job_api *api, const char *path, struct job_route *route)
{
    if (route_match(api, api->pattern, path, route) != 0)
        return -1;
    if (route->job_id != NULL)
        return 0;
    job_route_clear(route);
    return -1;
}

/* Is "path" one of the API's create paths?  As route_match(); no job id. */
static int create_route_match(const struct job_api *api, const char *path, struct job_route *route)
{
    size_t i;

    for (i = 0; i < sizeof(api->create.patterns) / sizeof(api->create.patterns[0]); i++) {
        if (api->create.patterns[i] == NULL || route_match(api, api->create.patterns[i], path, route) != 0)
            continue;
        if (route->project_id != NULL && route->job_id == NULL)
            return 0;
        job_route_clear(route);
    }
    return -1;
}

/*
 * The job body for this route as of now; NULL when out of memory.  Sets
 * *status_name (if not NULL) to the job's state, for the log.
 */
static cJSON *job_body_now(const struct job_route *route, const struct sim_job *job, const char *shown_job_id,
                           int omit_status, const char **status_name)
{
    struct job_snapshot snap;

    job_snapshot_take(route->api, job, route->project_id ? route->project_id : "", shown_job_id, &snap);
    if (status_name != NULL)
        *status_name = snap.status_name;
    if (omit_status)
        snap.status_name = NULL;
    return route->api->build_body(&snap);
}

/*
 * The same id with its last character changed to another hex digit (for the
 * wrongid fault): close enough to look plausible, never equal.
 */
static char *job_id_altered(const char *job_id)
{
    static const char hex[] = "0123456789abcdef";
    char *other = strdup(job_id);
    char *last;
    const char *digit;

    if (other == NULL || other[0] == '\0')
        return other;
    last = &other[strlen(other) - 1];
    digit = strchr(hex, *last);
    *last = digit != NULL ? hex[(digit - hex + 1) % 16] : '0';
    return other;
}

/*
 * Pad a JSON object with a "padding" string so that it prints to exactly
 * "size" bytes (or stays as it is if already that big).
 */
static int json_pad_to_size(cJSON *object, size_t size)
{
    char *printed;
    size_t base_length;
    char *filler;
    cJSON *padding;

    if (cJSON_AddStringToObject(object, "padding", "") == NULL)
        return -1;
    if ((printed = cJSON_PrintUnformatted(object)) == NULL)
        return -1;
    base_length = strlen(printed);
    cJSON_free(printed);
    if (base_length >= size)
        return 0;
    /* 'x' needs no escaping, so each filler byte prints as one byte. */
    if ((filler = malloc(size - base_length + 1)) == NULL)
        return -1;
    memset(filler, 'x', size - base_length);
    filler[size - base_length] = '\0';
    padding = cJSON_CreateString(filler);
    free(filler);
    if (padding == NULL || !cJSON_ReplaceItemInObjectCaseSensitive(object, "padding", padding)) {
        cJSON_Delete(padding);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Faults                                                                   */
/* ------------------------------------------------------------------------ */

static void fault_free(struct fault *fault)
{
    if (fault == NULL)
        return;
    free(fault->job_id);
    free(fault->reason);
    free(fault->code);
    free(fault->message);
    free(fault->body);
    free(fault);
}

static void faults_clear(struct sim *sim)
{
    struct fault *fault;

    while ((fault = TAILQ_FIRST(&sim->faults)) != NULL) {
        TAILQ_REMOVE(&sim->faults, fault, link);
        fault_free(fault);
    }
}

/* The fault that applies to a request for "job_id": its own, else "*". */
static struct fault *fault_find_for(struct sim *sim, const char *job_id)
{
    struct fault *fault, *for_every_job = NULL;

    TAILQ_FOREACH (fault, &sim->faults, link) {
        if (fault->on_create)
            continue;
        if (fault->job_id == NULL)
            for_every_job = fault;
        else if (strcmp(fault->job_id, job_id) == 0)
            return fault;
    }
    return for_every_job;
}

/* The fault that applies to the create call ("on=create"), or NULL. */
static struct fault *fault_find_create(struct sim *sim)
{
    struct fault *fault;

    TAILQ_FOREACH (fault, &sim->faults, link) {
        if (fault->on_create)
            return fault;
    }
    return NULL;
}

/* Count one use of "fault"; a counted fault removes itself when spent. */
static void fault_consume(struct sim *sim, struct fault *fault)
{
    if (fault->remaining == 0)
        return;
    if (--fault->remaining == 0) {
        TAILQ_REMOVE(&sim->faults, fault, link);
        fault_free(fault);
    }
}

static const struct fault_kind_info *fault_kind_lookup(const char *name)
{
    size_t i;

    for (i = 0; name != NULL && i < sizeof(fault_kinds) / sizeof(fault_kinds[0]); i++) {
        if (strcmp(fault_kinds[i].name, name) == 0)
            return &fault_kinds[i];
    }
    return NULL;
}

/*
 * A reason phrase goes verbatim into the status line, so it must be short
 * printable text: a CR or LF would let a test inject headers by accident.
 */
static int reason_phrase_valid(const char *text)
{
    size_t length = strlen(text);
    size_t i;

    if (length == 0 || length > MAX_REASON_LENGTH)
        return 0;
    for (i = 0; i < length; i++) {
        unsigned char c = (unsigned char)text[i];

        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

static int fault_parse_status(const struct evkeyvalq *params, struct fault *fault, char *err, size_t errlen)
{
    const char *text;
    long long number = -1;
    size_t i;

    if (evhttp_find_header(params, "status") == NULL) {
        set_error(err, errlen, "kind=status needs status=NNN (100-599)");
        return -1;
    }
    if (param_integer(params, "status", 100, 599, &number, err, errlen) != 0)
        return -1;
    fault->status = (int)number;

    if ((text = evhttp_find_header(params, "reason")) != NULL && !reason_phrase_valid(text)) {
        set_error(err, errlen, "reason must be 1 to %d printable characters", MAX_REASON_LENGTH);
        return -1;
    }
    if (param_string(params, "reason", &fault->reason, err, errlen) != 0)
        return -1;

    fault->shape = SHAPE_ELB;
    if ((text = evhttp_find_header(params, "shape")) != NULL) {
        for (i = 0; i < sizeof(error_shape_names) / sizeof(error_shape_names[0]); i++) {
            if (strcmp(text, error_shape_names[i]) == 0)
                break;
        }
        if (i == sizeof(error_shape_names) / sizeof(error_shape_names[0])) {
            set_error(err, errlen, "shape must be one of: elb apigw text empty json");
            return -1;
        }
        fault->shape = (enum error_shape)i;
    }
    if (param_string(params, "code", &fault->code, err, errlen) != 0 ||
        param_string(params, "message", &fault->message, err, errlen) != 0)
        return -1;

    number = -1;
    if (param_integer(params, "retry_after", 0, MAX_RETRY_AFTER, &number, err, errlen) != 0)
        return -1;
    fault->retry_after = (int)number;
    return 0;
}

/* Build a fault from the query of POST /_sim/faults; NULL with "err" set. */
static struct fault *fault_from_params(const struct evkeyvalq *params, char *err, size_t errlen)
{
    const char *kind_name = evhttp_find_header(params, "kind");
    const char *job = evhttp_find_header(params, "job");
    const char *on = evhttp_find_header(params, "on");
    const struct fault_kind_info *kind = fault_kind_lookup(kind_name);
    struct fault *fault = NULL;

    if (kind == NULL) {
        set_error(err, errlen,
                  "kind must be one of: status delay hang "
                  "reset nonjson notobject wrongid nostatus oversized truncated rawbody");
        return NULL;
    }
    if (on != NULL && (strcmp(on, "create") != 0 || job != NULL)) {
        set_error(err, errlen, "on=create (the create call) goes without job=");
        return NULL;
    }
    if (on == NULL && (job == NULL || job[0] == '\0')) {
        set_error(err, errlen, "job is required: a job id, or * for every job (or on=create)");
        return NULL;
    }
    if (on != NULL && (kind->kind == FAULT_WRONGID || kind->kind == FAULT_NOSTATUS || kind->kind == FAULT_OVERSIZED)) {
        set_error(err, errlen, "kind=%s bends a job body: not for on=create", kind->name);
        return NULL;
    }
    if (params_check(params, "job on kind count", kind->params, err, errlen) != 0)
        return NULL;
    if ((fault = calloc(1, sizeof(*fault))) == NULL)
        goto out_of_memory;
    fault->kind = kind;
    fault->on_create = on != NULL;
    fault->retry_after = -1;
    fault->size = OVERSIZED_DEFAULT_SIZE;
    if (job != NULL && strcmp(job, "*") != 0 && (fault->job_id = strdup(job)) == NULL)
        goto out_of_memory;
    if (param_integer(params, "count", 0, MAX_FAULT_COUNT, &fault->remaining, err, errlen) != 0)
        goto fail;

    switch (kind->kind) {
    case FAULT_STATUS:
        if (fault_parse_status(params, fault, err, errlen) != 0)
            goto fail;
        if (fault->on_create && fault->shape == SHAPE_JSON) {
            set_error(err, errlen, "shape=json is a job body: not for on=create");
            goto fail;
        }
        break;
    case FAULT_DELAY:
        if (evhttp_find_header(params, "delay_ms") == NULL) {
            set_error(err, errlen, "kind=delay needs delay_ms=N");
            goto fail;
        }
        if (param_integer(params, "delay_ms", 0, MAX_DELAY_MS, &fault->delay_ms, err, errlen) != 0)
            goto fail;
        break;
    case FAULT_OVERSIZED:
        if (param_integer(params, "size", 0, OVERSIZED_MAX_SIZE, &fault->size, err, errlen) != 0)
            goto fail;
        break;
    case FAULT_RAWBODY:
        if (evhttp_find_header(params, "body") == NULL) {
            set_error(err, errlen, "kind=rawbody needs body=TEXT");
            goto fail;
        }
        if (param_string(params, "body", &fault->body, err, errlen) != 0)
            goto fail;
        break;
    default: break;
    }
    return fault;

out_of_memory:
    set_error(err, errlen, "out of memory");
fail:
    fault_free(fault);
    return NULL;
}

/* Install "fault" (taking ownership), replacing any for the same target. */
static void fault_install(struct sim *sim, struct fault *fault)
{
    struct fault *old;

    TAILQ_FOREACH (old, &sim->faults, link) {
        if (old->on_create != fault->on_create)
            continue;
        if ((old->job_id == NULL && fault->job_id == NULL) ||
            (old->job_id != NULL && fault->job_id != NULL && strcmp(old->job_id, fault->job_id) == 0)) {
            TAILQ_REMOVE(&sim->faults, old, link);
            fault_free(old);
            break;
        }
    }
    TAILQ_INSERT_TAIL(&sim->faults, fault, link);
}

/* ------------------------------------------------------------------------ */
/* Parked requests (delay, hang, reset)                                     */
/* ------------------------------------------------------------------------ */

static void park_release(struct parked_request *parked)
{
    TAILQ_REMOVE(&parked->sim->parked, parked, link);
    if (parked->timer != NULL)
        event_free(parked->timer);
    reply_release(&parked->reply);
    free(parked);
}

/*
 * Abort the connection so that the client sees a TCP reset.  SO_LINGER
 * {1, 0} turns close() into a reset, but evhttp_connection_free() calls
 * shutdown(SHUT_WR) before closing, which would send a FIN first and let the
 * client see a clean end of stream.  connect() to AF_UNSPEC dissolves the
 * association at once (see connect(2); on Linux it sends the RST), so the
 * later shutdown() and close() act on an unconnected socket.  Frees "evcon"
 * and the request on it.
 */
static void connection_reset_abruptly(struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    evutil_socket_t fd = bufferevent_getfd(bev);

    if (fd >= 0) {
        struct linger abort_on_close = {.l_onoff = 1, .l_linger = 0};
        struct sockaddr unspecified;

        memset(&unspecified, 0, sizeof(unspecified));
        unspecified.sa_family = AF_UNSPEC;
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof(abort_on_close));
        (void)connect(fd, &unspecified, sizeof(unspecified));
    }
    evhttp_connection_free(evcon);
}

/* Timer callback of a parked request: answer (or reset) now. */
static void park_on_timer(evutil_socket_t fd, short events, void *arg)
{
    struct parked_request *parked = arg;

    /* From here on the connection's fate is ours, not the close callback's. */
    evhttp_connection_set_closecb(parked->evcon, NULL, NULL);
    if (parked->action == PARK_SEND_LATER) {
        /*
         * Stop reading again, as evhttp expects while it writes (see
         * park_request()): a client half-closing now still gets its answer.
         */
        bufferevent_disable(evhttp_connection_get_bufferevent(parked->evcon), EV_READ);
        reply_send(parked->req, &parked->reply);
    } else if (parked->action == PARK_RESET)
        connection_reset_abruptly(parked->evcon);
    park_release(parked);
}

/*
 * evhttp close callback of a parked request's connection: the client left
 * (closed, reset, or shut down its sending side), or evhttp_free() is
 * closing everything at shutdown.  In the first case evhttp has detached the
 * unanswered request (its connection is NULL) and leaves it to us to free;
 * in the second the request is still attached and evhttp frees it right
 * after this returns.
 */
static void park_on_connection_closed(struct evhttp_connection *evcon, void *arg)
{
    struct parked_request *parked = arg;

    if (evhttp_request_get_connection(parked->req) == NULL) {
        sim_log(parked->sim, "client left before its answer");
        evhttp_request_free(parked->req);
    }
    park_release(parked);
}

/*
 * Hold "req" unanswered: until "delay_ms" passes for PARK_SEND_LATER and
 * PARK_RESET, forever for PARK_HANG.  On success the parked request takes
 * over "reply" (PARK_SEND_LATER; NULL otherwise), which the caller must then
 * leave alone.
 */
static int park_request(struct sim *sim, struct evhttp_request *req, enum park_action action, long long delay_ms,
                        struct sim_reply *reply)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct parked_request *parked;
    struct bufferevent *bev;
    bufferevent_data_cb write_cb;
    bufferevent_event_cb event_cb;
    void *cb_arg;

    if (evcon == NULL || (parked = calloc(1, sizeof(*parked))) == NULL)
        return -1;
    parked->sim = sim;
    parked->req = req;
    parked->evcon = evcon;
    parked->action = action;
    if (action != PARK_HANG) {
        struct timeval delay = {
            .tv_sec = (time_t)(delay_ms / 1000),
            .tv_usec = (suseconds_t)(delay_ms % 1000) * 1000,
        };

        parked->timer = evtimer_new(sim->base, park_on_timer, parked);
        if (parked->timer == NULL || evtimer_add(parked->timer, &delay) != 0) {
            if (parked->timer != NULL)
                event_free(parked->timer);
            free(parked);
            return -1;
        }
    }
    if (reply != NULL) {
        parked->reply = *reply;
        memset(reply, 0, sizeof(*reply));
    }

    /*
     * evhttp 2.1 stops reading a connection while its request awaits the
     * answer, so a client that gives up would go unnoticed (its socket and
     * request kept) until shutdown.  Turning reading back on is not enough:
     * evhttp's read callback exits the process ("evhttp_read_cb: illegal
     * connection state") if bytes arrive meanwhile, e.g. a pipelined
     * request.  So read with no read callback: those bytes wait in the input
     * buffer (evhttp parses them after the answer), while end of stream and
     * errors reach evhttp's event callback, which frees the connection and
     * calls park_on_connection_closed().
     */
    bev = evhttp_connection_get_bufferevent(evcon);
    bufferevent_getcb(bev, NULL, &write_cb, &event_cb, &cb_arg);
    bufferevent_setcb(bev, NULL, write_cb, event_cb, cb_arg);
    bufferevent_enable(bev, EV_READ);
    evhttp_connection_set_closecb(evcon, park_on_connection_closed, parked);
    TAILQ_INSERT_TAIL(&sim->parked, parked, link);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Upstream authentication                                                  */
/* ------------------------------------------------------------------------ */

/*
 * The checks the real API gateway makes before a job request reaches the
 * service, written here independently of jobgate's own signer
 * (proxy/aksk.c), so that the two must agree for a signed request to pass:
 * another decoder (evhttp's), another HMAC interface (EVP_DigestSign), and
 * the request as received rather than as meant.
 */

static void auth_tokens_forget(struct sim_auth *auth)
{
    struct issued_token *token;

    while ((token = TAILQ_FIRST(&auth->issued)) != NULL) {
        TAILQ_REMOVE(&auth->issued, token, link);
        OPENSSL_cleanse(token->value, strlen(token->value));
        free(token->value);
        free(token);
    }
    auth->issued_count = 0;
}

/* Forget the mode's settings and issued tokens (mode none); keep counters. */
static void auth_settings_clear(struct sim_auth *auth)
{
    auth_tokens_forget(auth);
    if (auth->sk != NULL)
        OPENSSL_cleanse(auth->sk, strlen(auth->sk));
    if (auth->password != NULL)
        OPENSSL_cleanse(auth->password, strlen(auth->password));
    free(auth->ak);
    free(auth->sk);
    free(auth->user);
    free(auth->password);
    free(auth->domain);
    cJSON_Delete(auth->tokens);
    auth->ak = auth->sk = auth->user = auth->password = auth->domain = NULL;
    auth->tokens = NULL;
    auth->mode = AUTH_NONE;
}

static void auth_counters_clear(struct sim_auth *auth)
{
    auth->iam_calls = auth->sig_ok = auth->sig_bad = auth->rejected = 0;
    auth->last_authorization_seen = 0;
    auth->last_rejection[0] = '\0';
}

/* Refuse any member of "object" not named in "accepted" (space-separated). */
static int json_members_check(const cJSON *object, const char *accepted, char *err, size_t errlen)
{
    const cJSON *member;

    cJSON_ArrayForEach(member, object)
    {
        if (!word_in_list(accepted, member->string)) {
            set_error(err, errlen, "unknown member '%s' (accepted: %s)", member->string, accepted);
            return -1;
        }
    }
    return 0;
}

/* Copy the required non-empty string member "key" of "object" into *out. */
static int json_required_string(const cJSON *object, const char *key, char **out, char *err, size_t errlen)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);

    if (!cJSON_IsString(item) || item->valuestring[0] == '\0') {
        set_error(err, errlen, "%s must be a non-empty string", key);
        return -1;
    }
    if ((*out = strdup(item->valuestring)) == NULL) {
        set_error(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

/* Read the optional integer member "key" into *out (left alone if absent). */
static int json_optional_integer(const cJSON *object, const char *key, long long min, long long max, long long *out,
                                 char *err, size_t errlen)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);

    if (item == NULL)
        return 0;
    if (!cJSON_IsNumber(item) || item->valuedouble < (double)min || item->valuedouble > (double)max ||
        item->valuedouble != (double)(long long)item->valuedouble) {
        set_error(err, errlen, "%s must be an integer from %lld to %lld", key, min, max);
        return -1;
    }
    *out = (long long)item->valuedouble;
    return 0;
}

/* tokens: {"TOKEN":["PROJECT" or "*", ...], ...}, every string non-empty. */
static int auth_tokens_valid(const cJSON *tokens, char *err, size_t errlen)
{
    const cJSON *token, *project;

    if (!cJSON_IsObject(tokens)) {
        set_error(err, errlen, "tokens must be an object {\"TOKEN\":[\"PROJECT\" or \"*\",...]}");
        return 0;
    }
    cJSON_ArrayForEach(token, tokens)
    {
        if (token->string[0] == '\0' || !cJSON_IsArray(token)) {
            set_error(err, errlen, "each token must be non-empty and map to an array of projects");
            return 0;
        }
        cJSON_ArrayForEach(project, token)
        {
            if (!cJSON_IsString(project) || project->valuestring[0] == '\0') {
                set_error(err, errlen, "the projects of a token must be non-empty strings");
                return 0;
            }
        }
    }
    return 1;
}

/*
 * POST /_sim/auth: read the JSON body into "next" (zeroed by the caller).
 * Returns 0, or -1 with "err" set and "next" partly filled (to be cleared).
 */
static int auth_settings_parse(const char *text, struct sim_auth *next, char *err, size_t errlen)
{
    cJSON *json = cJSON_Parse(text);
    const cJSON *mode = cJSON_GetObjectItemCaseSensitive(json, "mode");
    size_t i;
    int rc = -1;

    if (!cJSON_IsObject(json)) {
        set_error(err, errlen, "the body must be a JSON object with a mode");
        goto out;
    }
    for (i = 0; i < sizeof(auth_mode_names) / sizeof(auth_mode_names[0]); i++) {
        if (cJSON_IsString(mode) && strcmp(mode->valuestring, auth_mode_names[i]) == 0)
            break;
    }
    if (i == sizeof(auth_mode_names) / sizeof(auth_mode_names[0])) {
        set_error(err, errlen, "mode must be one of: none aksk iam tokens");
        goto out;
    }
    next->mode = (enum auth_mode)i;
    next->token_ttl_s = 86400;
    next->token_bytes = ISSUED_TOKEN_MIN;
    switch (next->mode) {
    case AUTH_NONE:
        if (json_members_check(json, "mode", err, errlen) != 0)
            goto out;
        break;
    case AUTH_AKSK:
        if (json_members_check(json, "mode ak sk", err, errlen) != 0 ||
            json_required_string(json, "ak", &next->ak, err, errlen) != 0 ||
            json_required_string(json, "sk", &next->sk, err, errlen) != 0)
            goto out;
        break;
    case AUTH_IAM:
        if (json_members_check(json, "mode user password domain token_ttl_s iam_delay_ms token_bytes", err, errlen) !=
                0 ||
            json_optional_integer(json, "token_bytes", ISSUED_TOKEN_MIN, ISSUED_TOKEN_MAX, &next->token_bytes, err,
                                  errlen) != 0 ||
            json_required_string(json, "user", &next->user, err, errlen) != 0 ||
            json_required_string(json, "password", &next->password, err, errlen) != 0 ||
            json_required_string(json, "domain", &next->domain, err, errlen) != 0 ||
            json_optional_integer(json, "token_ttl_s", 0, MAX_TOKEN_TTL_S, &next->token_ttl_s, err, errlen) != 0 ||
            json_optional_integer(json, "iam_delay_ms", 0, MAX_DELAY_MS, &next->iam_delay_ms, err, errlen) != 0)
            goto out;
        break;
    case AUTH_TOKENS:
        if (json_members_check(json, "mode tokens", err, errlen) != 0 ||
            !auth_tokens_valid(cJSON_GetObjectItemCaseSensitive(json, "tokens"), err, errlen))
            goto out;
        if ((next->tokens = cJSON_DetachItemFromObjectCaseSensitive(json, "tokens")) == NULL) {
            set_error(err, errlen, "out of memory");
            goto out;
        }
        break;
    }
    rc = 0;
out:
    cJSON_Delete(json);
    return rc;
}

/* Why a job request was refused: the API gateway's status and code. */
struct auth_refusal {
    int status;
    const char *code;
    char message[200];
};

static int auth_refuse(struct auth_refusal *refusal, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Fill "refusal"; returns -1 so that a check can end with it. */
static int auth_refuse(struct auth_refusal *refusal, int status, const char *code, const char *fmt, ...)
{
    va_list ap;

    refusal->status = status;
    refusal->code = code;
    va_start(ap, fmt);
    vsnprintf(refusal->message, sizeof(refusal->message), fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- AK/SK: the canonical request, rebuilt from what was received ---- */

/* Append "n" bytes, every one but A-Za-z0-9_-~. written %XX (uppercase). */
static void sig_append_encoded(struct evbuffer *out, const char *bytes, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)bytes[i];

        if (c < 0x80 && (isalnum(c) || c == '_' || c == '-' || c == '~' || c == '.'))
            evbuffer_add(out, &bytes[i], 1);
        else
            evbuffer_add_printf(out, "%%%02X", c);
    }
}

/* Append the "n" bytes at "text" percent-decoded (evhttp's decoder: a bad
 * escape stays as it is), then encoded again.  -1 when out of memory. */
static int sig_append_reencoded(struct evbuffer *out, const char *text, size_t n)
{
    char *raw = strndup(text, n);
    char *decoded = raw != NULL ? evhttp_uridecode(raw, 0, &n) : NULL;

    free(raw);
    if (decoded == NULL)
        return -1;
    sig_append_encoded(out, decoded, n);
    free(decoded);
    return 0;
}

/* The path, segment by segment, ending in '/'. */
static int sig_canonical_uri(struct evbuffer *out, const char *path)
{
    const char *segment = path;
    const char *slash;

    for (;;) {
        slash = strchr(segment, '/');
        if (sig_append_reencoded(out, segment, slash ? (size_t)(slash - segment) : strlen(segment)) != 0)
            return -1;
        if (slash == NULL)
            break;
        evbuffer_add(out, "/", 1);
        segment = slash + 1;
    }
    /* Only an empty last segment leaves the encoded path ending in '/'. */
    if (path[0] == '\0' || path[strlen(path) - 1] != '/')
        evbuffer_add(out, "/", 1);
    return 0;
}

/* A decoded query pair; both owned (free()). */
struct sig_pair {
    char *key, *value;
    size_t key_len, value_len;
};

static int sig_bytes_order(const char *a, size_t a_len, const char *b, size_t b_len)
{
    size_t common = a_len < b_len ? a_len : b_len;
    int order = common > 0 ? memcmp(a, b, common) : 0;

    if (order != 0)
        return order;
    return (a_len > b_len) - (a_len < b_len);
}

static int sig_pair_order(const void *a, const void *b)
{
    const struct sig_pair *x = a, *y = b;
    int order = sig_bytes_order(x->key, x->key_len, y->key, y->key_len);

    return order != 0 ? order : sig_bytes_order(x->value, x->value_len, y->value, y->value_len);
}

/* The query's pairs decoded, sorted by key then value, encoded again. */
static int sig_canonical_query(struct evbuffer *out, const char *query)
{
    struct sig_pair *pairs = NULL;
    size_t count = 0, i;
    char *copy = query != NULL ? strdup(query) : NULL;
    char *rest = copy, *pair;
    int rc = -1;

    if (query == NULL)
        return 0;
    if (copy == NULL)
        return -1;
    /* At most one pair per '&' and one more. */
    for (i = 1, pair = copy; *pair != '\0'; pair++)
        i += *pair == '&';
    if ((pairs = calloc(i, sizeof(*pairs))) == NULL)
        goto out;
    while ((pair = strsep(&rest, "&")) != NULL) {
        char *equals = strchr(pair, '=');
        const char *value = "";

        if (equals != NULL) {
            *equals = '\0';
            value = equals + 1;
        }
        if (pair[0] == '\0') /* no key: left out, as the SDKs do */
            continue;
        pairs[count].key = evhttp_uridecode(pair, 0, &pairs[count].key_len);
        pairs[count].value = evhttp_uridecode(value, 0, &pairs[count].value_len);
        count++;
        if (pairs[count - 1].key == NULL || pairs[count - 1].value == NULL)
            goto out;
    }
    if (count > 0)
        qsort(pairs, count, sizeof(*pairs), sig_pair_order);
    for (i = 0; i < count; i++) {
        if (i > 0)
            evbuffer_add(out, "&", 1);
        sig_append_encoded(out, pairs[i].key, pairs[i].key_len);
        evbuffer_add(out, "=", 1);
        sig_append_encoded(out, pairs[i].value, pairs[i].value_len);
    }
    rc = 0;
out:
    for (i = 0; pairs != NULL && i < count; i++) {
        free(pairs[i].key);
        free(pairs[i].value);
    }
    free(pairs);
    free(copy);
    return rc;
}

/* "value" without its leading and trailing blanks: *start and *length. */
static void sig_trim(const char *value, const char **start, size_t *length)
{
    size_t n = strlen(value);

    while (n > 0 && (*value == ' ' || *value == '\t')) {
        value++;
        n--;
    }
    while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t'))
        n--;
    *start = value;
    *length = n;
}

/* Lowercase hex of SHA-256 over the "n" bytes at "data". */
static int sig_sha256_hex(const void *data, size_t n, char out[65])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, n > 0 ? data : "", n) == 1 && EVP_DigestFinal_ex(ctx, digest, &digest_len) == 1 &&
             digest_len == 32;
    unsigned int i;

    EVP_MD_CTX_free(ctx);
    for (i = 0; ok && i < digest_len; i++)
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
    return ok ? 0 : -1;
}

/* Lowercase hex of HMAC-SHA256(key, message), through EVP_DigestSign. */
static int sig_hmac_sha256_hex(const char *key, const void *message, size_t n, char out[65])
{
    EVP_PKEY *pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_HMAC, NULL, (const unsigned char *)key, strlen(key));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t mac_len = sizeof(mac), i;
    int ok = pkey != NULL && ctx != NULL && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pkey) == 1 &&
             EVP_DigestSignUpdate(ctx, message, n) == 1 && EVP_DigestSignFinal(ctx, mac, &mac_len) == 1 &&
             mac_len == 32;

    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    for (i = 0; ok && i < mac_len; i++)
        snprintf(out + 2 * i, 3, "%02x", mac[i]);
    OPENSSL_cleanse(mac, sizeof(mac));
    return ok ? 0 : -1;
}

/* Is "text" an X-Sdk-Date (YYYYMMDDTHHMMSSZ, a real instant)?  Sets *when. */
static int sig_parse_date(const char *text, time_t *when)
{
    struct tm tm;
    char again[32];
    const char *end;

    memset(&tm, 0, sizeof(tm));
    if (text == NULL || strlen(text) != 16 || (end = strptime(text, "%Y%m%dT%H%M%SZ", &tm)) == NULL || *end != '\0')
        return -1;
    *when = timegm(&tm);
    /* strptime lets "20061399..." through to timegm, which would roll over. */
    if (strftime(again, sizeof(again), "%Y%m%dT%H%M%SZ", &tm) == 0 || strcmp(again, text) != 0)
        return -1;
    return 0;
}

/* The parts of "Authorization: SDK-HMAC-SHA256 Access=.., SignedHeaders=..,
 * Signature=..", pointing into "copy" (owned). */
struct sig_authorization {
    char *copy;
    const char *access, *signed_headers, *signature;
};

static int sig_authorization_parse(const char *value, struct sig_authorization *a)
{
    static const char scheme[] = "SDK-HMAC-SHA256 ";
    char *rest, *part;

    memset(a, 0, sizeof(*a));
    if (strncmp(value, scheme, strlen(scheme)) != 0 || (a->copy = strdup(value + strlen(scheme))) == NULL)
        return -1;
    rest = a->copy;
    while ((part = strsep(&rest, ",")) != NULL) {
        const char **slot = NULL;
        char *equals;

        part += strspn(part, " ");
        if ((equals = strchr(part, '=')) == NULL)
            return -1;
        *equals = '\0';
        if (strcmp(part, "Access") == 0)
            slot = &a->access;
        else if (strcmp(part, "SignedHeaders") == 0)
            slot = &a->signed_headers;
        else if (strcmp(part, "Signature") == 0)
            slot = &a->signature;
        if (slot == NULL || *slot != NULL)
            return -1;
        *slot = equals + 1;
    }
    return a->access != NULL && a->signed_headers != NULL && a->signature != NULL ? 0 : -1;
}

/*
 * Check the AK/SK signature of "req" (on the job path "route") the way the
 * API gateway does.  Returns 0, or -1 with "refusal" filled.
 */
static int auth_check_signature(const struct sim_auth *auth, struct evhttp_request *req, const struct job_route *route,
                                const char *path, const char *query, struct auth_refusal *refusal)
{
    struct evkeyvalq *headers = evhttp_request_get_input_headers(req);
    const char *authorization = evhttp_find_header(headers, "Authorization");
    const char *sdk_date = evhttp_find_header(headers, "X-Sdk-Date");
    const char *project_id = evhttp_find_header(headers, "X-Project-Id");
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    struct evbuffer *canonical = evbuffer_new();
    struct sig_authorization parsed = {0};
    char *names = NULL, *rest, *name;
    const char *previous = "";
    int has_host = 0, has_date = 0, unsigned_payload = 0;
    char body_hash[65], request_hash[65], expected[65];
    char *to_sign = NULL;
    time_t when;
    int rc = -1;

    if (canonical == NULL) {
        auth_refuse(refusal, HTTP_INTERNAL, "APIGW.0103", "The backend is out of memory");
        goto out;
    }
    if (authorization == NULL) {
        auth_refuse(refusal, 401, "APIGW.0301", "Incorrect app authentication information: no Authorization header");
        goto out;
    }
    if (sig_authorization_parse(authorization, &parsed) != 0) {
        auth_refuse(refusal, 401, "APIGW.0301",
                    "Incorrect app authentication information: Authorization is not "
                    "'SDK-HMAC-SHA256 Access=.., SignedHeaders=.., Signature=..'");
        goto out;
    }
    if (strcmp(parsed.access, auth->ak) != 0) {
        auth_refuse(refusal, 401, "APIGW.0301", "Incorrect app authentication information: unknown access key");
        goto out;
    }
    if (sig_parse_date(sdk_date, &when) != 0) {
        auth_refuse(refusal, 401, "APIGW.0301",
                    "Incorrect app authentication information: X-Sdk-Date missing or not YYYYMMDDTHHMMSSZ");
        goto out;
    }
    if (llabs((long long)(time(NULL) - when)) > SDK_DATE_MAX_SKEW_S) {
        auth_refuse(refusal, 401, "APIGW.0301",
                    "Incorrect app authentication information: X-Sdk-Date is more than 15 minutes from now");
        goto out;
    }
    if (project_id != NULL && (route->project_id == NULL || strcmp(project_id, route->project_id) != 0)) {
        auth_refuse(refusal, 401, "APIGW.0301",
                    "Incorrect app authentication information: X-Project-Id differs from the path's project");
        goto out;
    }

    /* METHOD, URI, QUERY */
    evbuffer_add_printf(canonical, "%s\n", method_name(evhttp_request_get_command(req)));
    if (sig_canonical_uri(canonical, path) != 0 || evbuffer_add(canonical, "\n", 1) != 0 ||
        sig_canonical_query(canonical, query) != 0 || evbuffer_add(canonical, "\n", 1) != 0) {
        auth_refuse(refusal, HTTP_INTERNAL, "APIGW.0103", "The backend is out of memory");
        goto out;
    }
    /* HEADERS, in the order SignedHeaders lists them: lowercase, sorted, each once. */
    if ((names = strdup(parsed.signed_headers)) == NULL) {
        auth_refuse(refusal, HTTP_INTERNAL, "APIGW.0103", "The backend is out of memory");
        goto out;
    }
    rest = names;
    while ((name = strsep(&rest, ";")) != NULL) {
        const char *value = evhttp_find_header(headers, name), *start, *c;
        size_t length;

        for (c = name; *c != '\0' && !isupper((unsigned char)*c); c++)
            ;
        if (name[0] == '\0' || *c != '\0' || strcmp(previous, name) >= 0) {
            auth_refuse(refusal, 401, "APIGW.0301",
                        "Incorrect app authentication information: SignedHeaders must be lowercase names, "
                        "sorted, each once");
            goto out;
        }
        if (value == NULL) {
            auth_refuse(refusal, 401, "APIGW.0301",
                        "Incorrect app authentication information: signed header %.64s is not in the request", name);
            goto out;
        }
        has_host |= strcmp(name, "host") == 0;
        has_date |= strcmp(name, "x-sdk-date") == 0;
        /* The SDKs' way to sign a body they do not hash (non-JSON uploads). */
        unsigned_payload |= strcmp(name, "x-sdk-content-sha256") == 0 && strcmp(value, "UNSIGNED-PAYLOAD") == 0;
        sig_trim(value, &start, &length);
        evbuffer_add_printf(canonical, "%s:%.*s\n", name, (int)length, start);
        previous = name;
    }
    if (!has_host || !has_date) {
        auth_refuse(refusal, 401, "APIGW.0301",
                    "Incorrect app authentication information: SignedHeaders must include host and x-sdk-date");
        goto out;
    }
    /* SIGNED_HEADERS, hex(sha256(body)) or the signed UNSIGNED-PAYLOAD */
    if (unsigned_payload)
        snprintf(body_hash, sizeof(body_hash), "UNSIGNED-PAYLOAD");
    else if (sig_sha256_hex(evbuffer_pullup(body, -1), evbuffer_get_length(body), body_hash) != 0) {
        auth_refuse(refusal, HTTP_INTERNAL, "APIGW.0103", "The backend could not hash");
        goto out;
    }
    evbuffer_add_printf(canonical, "\n%s\n%s", parsed.signed_headers, body_hash);

    if (sig_sha256_hex(evbuffer_pullup(canonical, -1), evbuffer_get_length(canonical), request_hash) != 0 ||
        asprintf(&to_sign, "SDK-HMAC-SHA256\n%s\n%s", sdk_date, request_hash) < 0 ||
        sig_hmac_sha256_hex(auth->sk, to_sign, strlen(to_sign), expected) != 0) {
        to_sign = NULL;
        auth_refuse(refusal, HTTP_INTERNAL, "APIGW.0103", "The backend could not sign");
        goto out;
    }
    if (strlen(parsed.signature) != 64 || CRYPTO_memcmp(parsed.signature, expected, 64) != 0) {
        auth_refuse(refusal, 401, "APIGW.0301", "Incorrect app authentication information: verify aksk signature fail");
        goto out;
    }
    rc = 0;
out:
    OPENSSL_cleanse(expected, sizeof(expected));
    if (canonical != NULL)
        evbuffer_free(canonical);
    free(parsed.copy);
    free(names);
    free(to_sign);
    return rc;
}

/* ---- IAM tokens and fixed tokens ---- */

static const struct issued_token *auth_issued_find(const struct sim_auth *auth, const char *value)
{
    const struct issued_token *token;

    TAILQ_FOREACH (token, &auth->issued, link) {
        if (strcmp(token->value, value) == 0)
            return token;
    }
    return NULL;
}

static int auth_check_iam_token(const struct sim_auth *auth, const char *token_value, struct auth_refusal *refusal)
{
    const struct issued_token *token = token_value != NULL ? auth_issued_find(auth, token_value) : NULL;

    if (token == NULL)
        return auth_refuse(refusal, 401, "APIGW.0301",
                           "Incorrect IAM authentication information: the token is missing or unknown");
    if (token->revoked || time(NULL) >= token->expires_at)
        return auth_refuse(refusal, 401, "APIGW.0307", "The token must be updated.");
    return 0;
}

static int auth_check_fixed_token(const struct sim_auth *auth, const char *token_value, const char *project_id,
                                  struct auth_refusal *refusal)
{
    const cJSON *projects = token_value != NULL ? cJSON_GetObjectItemCaseSensitive(auth->tokens, token_value) : NULL;
    const cJSON *project;

    if (projects == NULL)
        return auth_refuse(refusal, 401, "APIGW.0301",
                           "Incorrect IAM authentication information: the token is missing or unknown");
    cJSON_ArrayForEach(project, projects)
    {
        if (strcmp(project->valuestring, "*") == 0 ||
            (project_id != NULL && strcmp(project->valuestring, project_id) == 0))
            return 0;
    }
    return auth_refuse(refusal, 403, "APIGW.0302", "The IAM user is not authorized to access the API.");
}

/*
 * May this job request through?  Counts what it sees; returns 0, or -1 with
 * "refusal" filled (the caller answers with it).
 */
static int auth_check_job_request(struct sim *sim, struct evhttp_request *req, const struct job_route *route,
                                  const char *path, const char *query, struct auth_refusal *refusal)
{
    struct sim_auth *auth = &sim->auth;
    struct evkeyvalq *headers = evhttp_request_get_input_headers(req);
    const char *token = evhttp_find_header(headers, "X-Auth-Token");
    int rc = 0;

    auth->last_authorization_seen = evhttp_find_header(headers, "Authorization") != NULL;
    switch (auth->mode) {
    case AUTH_NONE: return 0;
    case AUTH_AKSK:
        rc = auth_check_signature(auth, req, route, path, query, refusal);
        if (rc == 0)
            auth->sig_ok++;
        else
            auth->sig_bad++;
        break;
    case AUTH_IAM: rc = auth_check_iam_token(auth, token, refusal); break;
    case AUTH_TOKENS: rc = auth_check_fixed_token(auth, token, route->project_id, refusal); break;
    }
    if (rc != 0) {
        auth->rejected++;
        snprintf(auth->last_rejection, sizeof(auth->last_rejection), "%s %s", refusal->code, refusal->message);
    }
    return rc;
}

/* Keystone's error shape, which IAM keeps: {"error":{"code","message","title"}}. */
static cJSON *iam_error_json(int status, const char *title, const char *message)
{
    cJSON *json = cJSON_CreateObject();
    cJSON *error = cJSON_AddObjectToObject(json, "error");

    cJSON_AddNumberToObject(error, "code", status);
    cJSON_AddStringToObject(error, "message", message);
    cJSON_AddStringToObject(error, "title", title);
    return json;
}

static void iam_time(time_t when, char out[40])
{
    struct tm tm;

    gmtime_r(&when, &tm);
    strftime(out, 40, "%Y-%m-%dT%H:%M:%S.000000Z", &tm);
}

/* The string at "path" (dot-separated member names) inside "json", or NULL. */
static const char *json_string_at(const cJSON *json, const char *path)
{
    char copy[128], *rest = copy, *name;
    const cJSON *item = json;

    snprintf(copy, sizeof(copy), "%s", path);
    while (item != NULL && (name = strsep(&rest, ".")) != NULL)
        item = cJSON_GetObjectItemCaseSensitive(item, name);
    return cJSON_IsString(item) ? item->valuestring : NULL;
}

/* Does the password body name the password method? */
static int iam_methods_include_password(const cJSON *body)
{
    const cJSON *methods = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(body, "auth"), "identity"), "methods");
    const cJSON *method;

    cJSON_ArrayForEach(method, methods)
    {
        if (cJSON_IsString(method) && strcmp(method->valuestring, "password") == 0)
            return 1;
    }
    return 0;
}

/* A new token for the IAM account, living token_ttl_s; NULL when out of memory. */
static struct issued_token *iam_token_issue(struct sim_auth *auth)
{
    static const char hex[] = "0123456789abcdef";
    struct issued_token *token = calloc(1, sizeof(*token));
    unsigned char bytes[32];
    size_t i;

    if (token == NULL || (token->value = malloc((size_t)auth->token_bytes + 1)) == NULL) {
        free(token);
        return NULL;
    }
    evutil_secure_rng_get_bytes(bytes, sizeof(bytes));
    memcpy(token->value, "sim-", 4);
    for (i = 0; i < sizeof(bytes); i++) {
        token->value[4 + 2 * i] = hex[bytes[i] >> 4];
        token->value[5 + 2 * i] = hex[bytes[i] & 0xf];
    }
    memset(token->value + 4 + 2 * sizeof(bytes), 'x', (size_t)auth->token_bytes - (4 + 2 * sizeof(bytes)));
    token->value[auth->token_bytes] = '\0';
    token->expires_at = time(NULL) + (time_t)auth->token_ttl_s;
    if (auth->issued_count == MAX_ISSUED_TOKENS) { /* the oldest goes */
        struct issued_token *oldest = TAILQ_FIRST(&auth->issued);

        TAILQ_REMOVE(&auth->issued, oldest, link);
        free(oldest->value);
        free(oldest);
        auth->issued_count--;
    }
    TAILQ_INSERT_TAIL(&auth->issued, token, link);
    auth->issued_count++;
    return token;
}

/*
 * Build IAM's answer to a password body into "reply": 201 with a new
 * token (its value added to "out_headers" as X-Subject-Token), 400 for a
 * body of the wrong shape, 401 for the wrong account.
 */
static int iam_reply(struct sim *sim, struct evhttp_request *req, struct sim_reply *reply)
{
    struct sim_auth *auth = &sim->auth;
    struct evbuffer *input = evhttp_request_get_input_buffer(req);
    size_t length = evbuffer_get_length(input);
    char *text = malloc(length + 1);
    cJSON *body = NULL, *answer = NULL, *token_json, *project;
    const char *user, *password, *domain, *project_name, *project_id;
    struct issued_token *token;
    char issued_at[40], expires_at[40];
    int rc = -1;

    if (text == NULL)
        return -1;
    evbuffer_copyout(input, text, length);
    text[length] = '\0';
    body = cJSON_Parse(text);
    free(text);
    user = json_string_at(body, "auth.identity.password.user.name");
    password = json_string_at(body, "auth.identity.password.user.password");
    domain = json_string_at(body, "auth.identity.password.user.domain.name");
    project_name = json_string_at(body, "auth.scope.project.name");
    project_id = json_string_at(body, "auth.scope.project.id");

    if (!iam_methods_include_password(body) || user == NULL || password == NULL || domain == NULL ||
        (project_name == NULL && project_id == NULL)) {
        reply->status = HTTP_BADREQUEST;
        answer = iam_error_json(400, "Bad Request",
                                "The request body must name the password method, the user's name, password and "
                                "domain, and a project scope");
    } else if (strcmp(user, auth->user) != 0 || strcmp(domain, auth->domain) != 0 ||
               strlen(password) != strlen(auth->password) ||
               CRYPTO_memcmp(password, auth->password, strlen(password)) != 0) {
        reply->status = 401;
        answer = iam_error_json(401, "Unauthorized", "The username or password is wrong.");
    } else if ((token = iam_token_issue(auth)) != NULL) {
        reply->status = 201;
        answer = cJSON_CreateObject();
        token_json = cJSON_AddObjectToObject(answer, "token");
        iam_time(time(NULL), issued_at);
        iam_time(token->expires_at, expires_at);
        cJSON_AddStringToObject(token_json, "expires_at", expires_at);
        cJSON_AddStringToObject(token_json, "issued_at", issued_at);
        cJSON_AddItemToObject(token_json, "methods", cJSON_CreateStringArray((const char *[]){"password"}, 1));
        project = cJSON_AddObjectToObject(token_json, "project");
        if (project_name != NULL)
            cJSON_AddStringToObject(project, "name", project_name);
        if (project_id != NULL)
            cJSON_AddStringToObject(project, "id", project_id);
        cJSON_AddStringToObject(cJSON_AddObjectToObject(cJSON_AddObjectToObject(token_json, "user"), "domain"), "name",
                                domain);
        cJSON_AddStringToObject(cJSON_GetObjectItemCaseSensitive(token_json, "user"), "name", user);
        evhttp_add_header(evhttp_request_get_output_headers(req), "X-Subject-Token", token->value);
    }
    if (answer != NULL)
        rc = reply_set_json(reply, answer); /* consumes answer */
    cJSON_Delete(body);
    return rc;
}

/*
 * POST /v3/auth/tokens: IAM, played in iam mode only (elsewhere the path
 * is unknown).  Answers at once, or iam_delay_ms later through a parked
 * request.
 */
static void iam_request_handle(struct sim *sim, struct evhttp_request *req, char *outcome, size_t outcome_len)
{
    struct sim_reply reply;

    if (sim->auth.mode != AUTH_IAM) {
        answer_api_not_found(req, outcome, outcome_len);
        return;
    }
    sim->auth.iam_calls++;
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
        answer_json(req, HTTP_BADMETHOD, iam_error_json(405, "Method Not Allowed", "Use POST."), outcome, outcome_len);
        return;
    }
    if (reply_init(&reply, HTTP_OK) != 0 || iam_reply(sim, req, &reply) != 0) {
        reply_release(&reply);
        answer_internal_error(req, outcome, outcome_len);
        return;
    }
    snprintf(outcome, outcome_len, "%d iam", reply.status);
    if (sim->auth.iam_delay_ms > 0) {
        snprintf(outcome + strlen(outcome), outcome_len - strlen(outcome), " after %lld ms", sim->auth.iam_delay_ms);
        if (park_request(sim, req, PARK_SEND_LATER, sim->auth.iam_delay_ms, &reply) != 0) {
            reply_release(&reply);
            answer_internal_error(req, outcome, outcome_len);
            return;
        }
    } else {
        reply_send(req, &reply);
    }
    reply_release(&reply);
}

/*
 * GET /v3/projects/{project_id}: IAM's project details, for the projects
 * POST /_sim/projects told (404 otherwise); counted per id.
 */
static void iam_project_handle(struct sim *sim, struct evhttp_request *req, const char *id, char *outcome,
                               size_t outcome_len)
{
    struct evkeyvalq *headers = evhttp_request_get_input_headers(req);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(sim->iam_projects, id);
    cJSON *count = cJSON_GetObjectItemCaseSensitive(sim->iam_project_calls, id);
    struct sim_reply reply;
    cJSON *answer, *project;
    char message[160];

    sim->iam_project_total++;
    if (count != NULL)
        cJSON_SetNumberValue(count, count->valuedouble + 1);
    else if (sim->iam_project_calls != NULL && strlen(id) <= 64)
        cJSON_AddNumberToObject(sim->iam_project_calls, id, 1);
    sim->iam_project_last_auth = evhttp_find_header(headers, "X-Auth-Token") != NULL    ? "token"
                                 : evhttp_find_header(headers, "Authorization") != NULL ? "aksk"
                                                                                        : "none";
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
        answer_json(req, HTTP_BADMETHOD, iam_error_json(405, "Method Not Allowed", "Use GET."), outcome, outcome_len);
        return;
    }
    if (cJSON_IsString(name)) {
        answer = cJSON_CreateObject();
        project = cJSON_AddObjectToObject(answer, "project");
        cJSON_AddStringToObject(project, "id", id);
        cJSON_AddStringToObject(project, "name", name->valuestring);
        cJSON_AddStringToObject(project, "domain_id", "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0");
        cJSON_AddBoolToObject(project, "is_domain", 0);
        cJSON_AddStringToObject(project, "parent_id", "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0");
        cJSON_AddBoolToObject(project, "enabled", 1);
        cJSON_AddStringToObject(project, "description", "");
        if (reply_init(&reply, HTTP_OK) != 0 || reply_set_json(&reply, answer) != 0) {
            reply_release(&reply);
            answer_internal_error(req, outcome, outcome_len);
            return;
        }
    } else {
        snprintf(message, sizeof(message), "Could not find project: %.64s.", id);
        if (reply_init(&reply, HTTP_NOTFOUND) != 0 ||
            reply_set_json(&reply, iam_error_json(404, "Not Found", message)) != 0) {
            reply_release(&reply);
            answer_internal_error(req, outcome, outcome_len);
            return;
        }
    }
    snprintf(outcome, outcome_len, "%d iam project", reply.status);
    if (sim->iam_project_delay_ms > 0) {
        snprintf(outcome + strlen(outcome), outcome_len - strlen(outcome), " after %lld ms", sim->iam_project_delay_ms);
        if (park_request(sim, req, PARK_SEND_LATER, sim->iam_project_delay_ms, &reply) != 0) {
            reply_release(&reply);
            answer_internal_error(req, outcome, outcome_len);
            return;
        }
    } else {
        reply_send(req, &reply);
    }
    reply_release(&reply);
}

/* ------------------------------------------------------------------------ */
/* Job API                                                                  */
/* ------------------------------------------------------------------------ */

/* Remember the request for GET /_sim/last. */
static void record_last_request(struct sim *sim, struct evhttp_request *req, const char *path, const char *query)
{
    cJSON *last = cJSON_CreateObject();
    cJSON *headers;
    const struct evkeyval *header;

    cJSON_AddStringToObject(last, "method", method_name(evhttp_request_get_command(req)));
    cJSON_AddStringToObject(last, "path", path);
    if (query != NULL)
        cJSON_AddStringToObject(last, "query", query);
    else
        cJSON_AddNullToObject(last, "query");
    {
        char *peer_addr = NULL;
        ev_uint16_t peer_port = 0;
        char peer[300];

        evhttp_connection_get_peer(evhttp_request_get_connection(req), &peer_addr, &peer_port);
        snprintf(peer, sizeof(peer), "%s:%u", peer_addr ? peer_addr : "?", (unsigned)peer_port);
        cJSON_AddStringToObject(last, "peer", peer);
    }
    headers = cJSON_AddObjectToObject(last, "headers");
    TAILQ_FOREACH (header, evhttp_request_get_input_headers(req), next) {
        cJSON *seen = cJSON_GetObjectItemCaseSensitive(headers, header->key);
        char *joined;

        if (!cJSON_IsString(seen)) {
            cJSON_AddStringToObject(headers, header->key, header->value);
            continue;
        }
        /* A repeated header reads as one, values joined as HTTP allows. */
        joined = malloc(strlen(seen->valuestring) + strlen(header->value) + 3);
        if (joined == NULL)
            continue;
        sprintf(joined, "%s, %s", seen->valuestring, header->value);
        cJSON_ReplaceItemInObjectCaseSensitive(headers, header->key, cJSON_CreateString(joined));
        free(joined);
    }
    {
        struct evbuffer *input = evhttp_request_get_input_buffer(req);
        size_t length = evbuffer_get_length(input);
        char *text = length > 0 ? malloc(length + 1) : NULL;

        if (text != NULL) {
            evbuffer_copyout(input, text, length);
            text[length] = '\0';
            cJSON_AddStringToObject(last, "body", text);
            free(text);
        }
    }
    cJSON_Delete(sim->last_request);
    sim->last_request = last;
}

/* Build the body of a status fault's answer into "reply". */
static int status_fault_body(const struct fault *fault, const struct job_route *route, const struct sim_job *job,
                             struct sim_reply *reply)
{
    switch (fault->shape) {
    case SHAPE_ELB:
        return reply_set_json(reply, elb_error_json(fault->code ? fault->code : "ELB.1002",
                                                    fault->message ? fault->message : "find lb failed"));
    case SHAPE_APIGW:
        return reply_set_json(reply, apigw_error_json(fault->code ? fault->code : "APIGW.0308",
                                                      fault->message ? fault->message : "The request is throttled."));
    case SHAPE_TEXT: return reply_set_text(reply, "text/plain", "upstream says no");
    case SHAPE_EMPTY: return 0;
    case SHAPE_JSON: return reply_set_json(reply, job_body_now(route, job, job->job_id, 0, NULL));
    }
    return -1;
}

/* The normal answer: 200 with the job body as of now. */
static int job_reply_normal(const struct job_route *route, const struct sim_job *job, struct sim_reply *reply,
                            char *outcome, size_t outcome_len)
{
    const char *status_name = NULL;
    cJSON *body = job_body_now(route, job, job->job_id, 0, &status_name);

    snprintf(outcome, outcome_len, "200 %s", status_name != NULL ? status_name : "");
    return reply_set_json(reply, body);
}

/*
 * The answer prescribed by a fault that answers at once (every kind but
 * delay, hang and reset).
 */
static int job_reply_faulty(const struct job_route *route, const struct sim_job *job, const struct fault *fault,
                            struct sim_reply *reply)
{
    cJSON *body = NULL;
    char *other_id = NULL;
    int rc = -1;

    switch (fault->kind->kind) {
    case FAULT_STATUS:
        reply->status = fault->status;
        reply->retry_after = fault->retry_after;
        reply->reason = strdup(fault->reason ? fault->reason : "Sim Status");
        if (reply->reason != NULL)
            rc = status_fault_body(fault, route, job, reply);
        break;
    case FAULT_NONJSON: rc = reply_set_text(reply, "text/html", "<html><body>gateway error</body></html>"); break;
    case FAULT_NOTOBJECT: rc = reply_set_json(reply, cJSON_Parse("[1,2,3]")); break;
    case FAULT_RAWBODY: rc = reply_set_text(reply, "application/json;charset=UTF-8", fault->body); break;
    case FAULT_WRONGID:
        if ((other_id = job_id_altered(job->job_id)) != NULL)
            rc = reply_set_json(reply, job_body_now(route, job, other_id, 0, NULL));
        break;
    case FAULT_NOSTATUS: rc = reply_set_json(reply, job_body_now(route, job, job->job_id, 1, NULL)); break;
    case FAULT_OVERSIZED:
        body = job_body_now(route, job, job->job_id, 0, NULL);
        if (body != NULL && json_pad_to_size(body, (size_t)fault->size) == 0) {
            rc = reply_set_json(reply, body);
            body = NULL; /* consumed */
        }
        break;
    case FAULT_TRUNCATED:
        /*
         * Announce the whole body, send its first half, then close: the
         * client sees the connection end with bytes still owed.
         */
        if (reply_set_json(reply, job_body_now(route, job, job->job_id, 0, NULL)) != 0)
            break;
        reply->announced_length = (long long)evbuffer_get_length(reply->body);
        reply->close_connection = 1;
        rc = reply_truncate_body(reply, (size_t)reply->announced_length / 2);
        break;
    case FAULT_DELAY:
    case FAULT_HANG:
    case FAULT_RESET: break;
    }
    cJSON_Delete(body);
    free(other_id);
    return rc;
}

/*
 * Answer a GET or HEAD job request the way "fault" says (NULL: normally),
 * now or, for delay, hang and reset, later through a parked request.
 * Returns -1 if the answer could not be built; "req" is then unanswered.
 */
static int job_answer(struct sim *sim, struct evhttp_request *req, const struct job_route *route,
                      const struct sim_job *job, const struct fault *fault, char *outcome, size_t outcome_len)
{
    enum fault_kind kind;
    struct sim_reply reply;
    int rc = -1;

    if (reply_init(&reply, HTTP_OK) != 0)
        goto done;
    if (fault == NULL) {
        if (job_reply_normal(route, job, &reply, outcome, outcome_len) != 0)
            goto done;
        reply_send(req, &reply);
        rc = 0;
        goto done;
    }

    kind = fault->kind->kind;
    if (kind == FAULT_HANG) {
        snprintf(outcome, outcome_len, "fault hang");
        rc = park_request(sim, req, PARK_HANG, 0, NULL);
    } else if (kind == FAULT_RESET) {
        /*
         * Parked for 0 ms rather than reset here: freeing the connection
         * inside evhttp's request callback would free it under evhttp.
         */
        snprintf(outcome, outcome_len, "fault reset");
        rc = park_request(sim, req, PARK_RESET, 0, NULL);
    } else if (kind == FAULT_DELAY) {
        if (job_reply_normal(route, job, &reply, outcome, outcome_len) != 0)
            goto done;
        snprintf(outcome + strlen(outcome), outcome_len - strlen(outcome), " after fault delay %lld ms",
                 fault->delay_ms);
        rc = park_request(sim, req, PARK_SEND_LATER, fault->delay_ms, &reply);
    } else {
        if (job_reply_faulty(route, job, fault, &reply) != 0)
            goto done;
        snprintf(outcome, outcome_len, "%d fault %s", reply.status, fault->kind->name);
        reply_send(req, &reply);
        rc = 0;
    }
done:
    reply_release(&reply);
    return rc;
}

/* A request on a job path: count it, remember it, answer it. */
static void job_request_handle(struct sim *sim, struct evhttp_request *req, const struct job_route *route,
                               const char *path, const char *query, char *outcome, size_t outcome_len)
{
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    struct sim_job *job = job_find_or_create(sim, route->job_id);
    struct fault *fault;

    struct auth_refusal refusal;

    sim->total_job_requests++;
    if (sim->ntimes < SIM_TIMES_MAX && (sim->times_ms || (sim->times_ms = malloc(SIM_TIMES_MAX * sizeof(int64_t)))))
        sim->times_ms[sim->ntimes++] = monotonic_ms();
    record_last_request(sim, req, path, query);
    if (job == NULL) {
        answer_internal_error(req, outcome, outcome_len);
        return;
    }
    job->requests++;

    /* The gateway authenticates before anything reaches the service. */
    if (auth_check_job_request(sim, req, route, path, query, &refusal) != 0) {
        answer_json(req, refusal.status, apigw_error_json(refusal.code, refusal.message), outcome, outcome_len);
        snprintf(outcome + strlen(outcome), outcome_len - strlen(outcome), " %s", refusal.code);
        return;
    }

    if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        answer_json(req, HTTP_BADMETHOD,
                    apigw_error_json("APIGW.0105", "The request method is not allowed for this API"), outcome,
                    outcome_len);
        return;
    }

    /* Faults only bend answers to GET and HEAD, what the gateway sends. */
    fault = fault_find_for(sim, route->job_id);
    if (job_answer(sim, req, route, job, fault, outcome, outcome_len) != 0)
        answer_internal_error(req, outcome, outcome_len);
    if (fault != NULL)
        fault_consume(sim, fault);
}

/* ---- The create call (POST /v1/{project_id}/cloudservers and the like) ---- */

/* One more POST received for "project_id" (GET /_sim/stats "posts"). */
static void posts_count(struct sim *sim, const char *project_id)
{
    cJSON *count;

    if (sim->posts == NULL && (sim->posts = cJSON_CreateObject()) == NULL)
        return;
    count = cJSON_GetObjectItemCaseSensitive(sim->posts, project_id);
    if (count != NULL)
        cJSON_SetNumberValue(count, count->valuedouble + 1);
    else
        cJSON_AddNumberToObject(sim->posts, project_id, 1);
}

/* The job an earlier POST of "project_id" made with this X-Client-Token. */
static struct sim_job *job_find_by_client_token(struct sim *sim, const char *project_id, const char *token)
{
    struct sim_job *job;

    TAILQ_FOREACH (job, &sim->jobs, link) {
        if (job->client_token != NULL && job->project_id != NULL && strcmp(job->client_token, token) == 0 &&
            strcmp(job->project_id, project_id) == 0)
            return job;
    }
    return NULL;
}

/*
 * Read and check the create call's body: a JSON object whose "body_key"
 * member passes the API's check.  Returns the number of resources asked for
 * ("count", default 1), or -1 with "err" set.
 */
static int create_body_parse(const struct job_api *api, struct evhttp_request *req, char *err, size_t errlen)
{
    struct evbuffer *input = evhttp_request_get_input_buffer(req);
    size_t length = evbuffer_get_length(input);
    cJSON *body = length > 0 ? cJSON_ParseWithLength((const char *)evbuffer_pullup(input, -1), length) : NULL;
    const cJSON *resource = cJSON_GetObjectItemCaseSensitive(body, api->create.body_key);
    const cJSON *count = cJSON_GetObjectItemCaseSensitive(resource, "count");
    int rc = -1;

    if (!cJSON_IsObject(body))
        set_error(err, errlen, "the request body is not a JSON object");
    else if (!cJSON_IsObject(resource))
        set_error(err, errlen, "%s is required", api->create.body_key);
    else if (api->create.check(resource, err, errlen) == 0)
        rc = count != NULL ? count->valueint : 1;
    cJSON_Delete(body);
    return rc;
}

/* Make a job of "count" sub-jobs for the create call: the command line's timeline. */
static struct sim_job *create_job(struct sim *sim, const char *project_id, const char *client_token, int count)
{
    struct job_timeline timeline = sim->default_timeline;
    struct sim_job *job;
    char job_id[33];

    do {
        random_request_id(job_id);
    } while (job_find(sim, job_id) != NULL);
    if ((job = job_find_or_create(sim, job_id)) == NULL)
        return NULL;
    if (sim->api->sub_jobs.job_type != NULL)
        timeline.sub_jobs = count;
    job_restart(job, &timeline);
    job->project_id = strdup(project_id);
    job->client_token = client_token != NULL ? strdup(client_token) : NULL;
    if (job->project_id == NULL || (client_token != NULL && job->client_token == NULL))
        return NULL; /* the job stays, harmless; the caller answers 500 */
    sim->creates++;
    return job;
}

/* {"job_id":..., "<ids_key>":[...]}: the create call's answer for "job". */
static cJSON *create_answer_json(const struct job_api *api, const struct sim_job *job)
{
    cJSON *json = cJSON_CreateObject();
    cJSON *ids;
    char id[37];
    int i;

    cJSON_AddStringToObject(json, "job_id", job->job_id);
    ids = cJSON_AddArrayToObject(json, api->create.ids_key);
    for (i = 0; i < job->timeline.sub_jobs; i++) {
        sub_job_resource_id(job->job_id, i, id);
        cJSON_AddItemToArray(ids, cJSON_CreateString(id));
    }
    return json;
}

/*
 * Answer a create call that made (or found) "job", the way "fault" says
 * (NULL: 200 with the normal answer).  Returns -1 if the answer could not be
 * built; "req" is then unanswered.
 */
static int create_answer(struct sim *sim, struct evhttp_request *req, const struct sim_job *job,
                         const struct fault *fault, char *outcome, size_t outcome_len)
{
    enum fault_kind kind = fault != NULL ? fault->kind->kind : FAULT_STATUS;
    struct sim_reply reply;
    int rc = -1;

    if (reply_init(&reply, HTTP_OK) != 0 || reply_set_json(&reply, create_answer_json(sim->api, job)) != 0)
        goto done;
    snprintf(outcome, outcome_len, "200 job %s", job->job_id);
    if (fault == NULL) {
        reply_send(req, &reply);
        rc = 0;
        goto done;
    }
    snprintf(outcome + strlen(outcome), outcome_len - strlen(outcome), " fault %s", fault->kind->name);
    switch (kind) {
    case FAULT_HANG: rc = park_request(sim, req, PARK_HANG, 0, NULL); break;
    case FAULT_RESET: rc = park_request(sim, req, PARK_RESET, 0, NULL); break;
    case FAULT_DELAY: rc = park_request(sim, req, PARK_SEND_LATER, fault->delay_ms, &reply); break;
    case FAULT_TRUNCATED:
        reply.announced_length = (long long)evbuffer_get_length(reply.body);
        reply.close_connection = 1;
        if (reply_truncate_body(&reply, (size_t)reply.announced_length / 2) != 0)
            break;
        reply_send(req, &reply);
        rc = 0;
        break;
    case FAULT_NONJSON:
    case FAULT_NOTOBJECT:
    case FAULT_RAWBODY:
        evbuffer_drain(reply.body, evbuffer_get_length(reply.body));
        if (job_reply_faulty(NULL, NULL, fault, &reply) != 0)
            break;
        reply_send(req, &reply);
        rc = 0;
        break;
    default: break; /* status faults answer before the job is made; the others are refused on install */
    }
done:
    reply_release(&reply);
    return rc;
}

/*
 * A request on the create path: count it, remember it, authenticate it,
 * then make a job and answer with its id.  A status fault refuses before
 * the job is made (the API gateway throttling); every other fault bends
 * the answer of a job that was made all the same (the work is done, the
 * client may never learn it).
 */
static void create_request_handle(struct sim *sim, struct evhttp_request *req, const struct job_route *route,
                                  const char *path, const char *query, char *outcome, size_t outcome_len)
{
    const struct job_api *api = sim->api;
    const char *client_token = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Client-Token");
    struct auth_refusal refusal;
    struct sim_job *job;
    struct fault *fault;
    char err[200];
    int count;

    record_last_request(sim, req, path, query);
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
        answer_json(req, HTTP_BADMETHOD,
                    apigw_error_json("APIGW.0105", "The request method is not allowed for this API"), outcome,
                    outcome_len);
        return;
    }
    posts_count(sim, route->project_id);

    if (auth_check_job_request(sim, req, route, path, query, &refusal) != 0) {
        answer_json(req, refusal.status, apigw_error_json(refusal.code, refusal.message), outcome, outcome_len);
        snprintf(outcome + strlen(outcome), outcome_len - strlen(outcome), " %s", refusal.code);
        return;
    }

    fault = fault_find_create(sim);
    if (fault != NULL && fault->kind->kind == FAULT_STATUS) {
        if (job_answer(sim, req, route, NULL, fault, outcome, outcome_len) != 0)
            answer_internal_error(req, outcome, outcome_len);
        fault_consume(sim, fault);
        return;
    }
    if ((count = create_body_parse(api, req, err, sizeof(err))) < 0) {
        answer_json(req, HTTP_BADREQUEST, elb_error_json(api->create.error_code, err), outcome, outcome_len);
        return;
    }
    /* X-Client-Token: the same token again gets the same job, made once. */
    job = client_token != NULL ? job_find_by_client_token(sim, route->project_id, client_token) : NULL;
    if (job == NULL && (job = create_job(sim, route->project_id, client_token, count)) == NULL) {
        answer_internal_error(req, outcome, outcome_len);
        return;
    }
    if (create_answer(sim, req, job, fault, outcome, outcome_len) != 0)
        answer_internal_error(req, outcome, outcome_len);
    if (fault != NULL)
        fault_consume(sim, fault);
}

/* ------------------------------------------------------------------------ */
/* Control API                                                              */
/* ------------------------------------------------------------------------ */

struct control_call {
    struct sim *sim;
    struct evhttp_request *req; /* for the handlers that read a body */
    const char *id;             /* the {job_id} of /_sim/jobs/{job_id} */
    struct evkeyvalq *params;   /* decoded query parameters */
    char error[256];            /* why the call failed, for the answer */
};

/*
 * A control handler returns the HTTP status to answer with: 200 with
 * *answer set, or an error status with call->error set.
 */
typedef int (*control_handler)(struct control_call *call, cJSON **answer);

static cJSON *control_ok_json(void)
{
    cJSON *json = cJSON_CreateObject();

    cJSON_AddBoolToObject(json, "ok", 1);
    return json;
}

/* Is "text" a state name jobsim can show: [A-Za-z_]{1,32}? */
static int init_state_valid(const char *text)
{
    size_t length = strlen(text);
    size_t i;

    if (length == 0 || length > MAX_INIT_STATE_LENGTH)
        return 0;
    for (i = 0; i < length; i++) {
        if (!isalpha((unsigned char)text[i]) && text[i] != '_')
            return 0;
    }
    return 1;
}

/*
 * final=SUCCESS|FAIL, in any case, or the API's own name for either (cce:
 * Success, Failed).  Returns -1 for anything else.
 */
static int final_phase_parse(const struct job_api *api, const char *text, enum job_phase *out)
{
    if (evutil_ascii_strcasecmp(text, "SUCCESS") == 0 ||
        evutil_ascii_strcasecmp(text, api->phase_names[JOB_SUCCESS]) == 0) {
        *out = JOB_SUCCESS;
        return 0;
    }
    if (evutil_ascii_strcasecmp(text, "FAIL") == 0 || evutil_ascii_strcasecmp(text, api->phase_names[JOB_FAIL]) == 0) {
        *out = JOB_FAIL;
        return 0;
    }
    return -1;
}

static int control_define_job(struct control_call *call, cJSON **answer)
{
    struct sim *sim = call->sim;
    const struct job_api *api = sim->api;
    struct job_timeline timeline = sim->default_timeline;
    long long init_ms = timeline.init_ms;
    long long running_ms = timeline.running_ms;
    long long sub_jobs = timeline.sub_jobs;
    long long sub_lag_ms = timeline.sub_lag_ms;
    const char *final_name = evhttp_find_header(call->params, "final");
    const char *init_state = evhttp_find_header(call->params, "init_state");
    char *err = call->error;
    size_t errlen = sizeof(call->error);
    struct sim_job *job;

    if (params_check(call->params, "init_ms running_ms final sub_jobs sub_lag_ms init_state", "", err, errlen) != 0 ||
        param_integer(call->params, "init_ms", 0, MAX_TIMELINE_MS, &init_ms, err, errlen) != 0 ||
        param_integer(call->params, "running_ms", 0, MAX_TIMELINE_MS, &running_ms, err, errlen) != 0 ||
        param_integer(call->params, "sub_jobs", 0, MAX_SUB_JOBS, &sub_jobs, err, errlen) != 0 ||
        param_integer(call->params, "sub_lag_ms", 0, MAX_TIMELINE_MS, &sub_lag_ms, err, errlen) != 0)
        return HTTP_BADREQUEST;
    if (final_name != NULL && final_phase_parse(api, final_name, &timeline.final_phase) != 0) {
        set_error(err, errlen, "final must be SUCCESS or FAIL");
        return HTTP_BADREQUEST;
    }
    if (sub_jobs > 0 && api->sub_jobs.job_type == NULL) {
        set_error(err, errlen, "the %s API has no sub-jobs: sub_jobs must be 0", api->name);
        return HTTP_BADREQUEST;
    }
    if (init_state != NULL) {
        if (!init_state_valid(init_state)) {
            set_error(err, errlen, "init_state must be 1 to %d letters or underscores", MAX_INIT_STATE_LENGTH);
            return HTTP_BADREQUEST;
        }
        snprintf(timeline.init_state, sizeof(timeline.init_state), "%s", init_state);
    }
    timeline.init_ms = init_ms;
    timeline.running_ms = running_ms;
    timeline.sub_jobs = (int)sub_jobs;
    timeline.sub_lag_ms = sub_lag_ms;

    if ((job = job_find_or_create(sim, call->id)) == NULL) {
        set_error(err, errlen, "out of memory");
        return HTTP_INTERNAL;
    }
    job_restart(job, &timeline);
    *answer = control_ok_json();
    return HTTP_OK;
}

static int control_install_fault(struct control_call *call, cJSON **answer)
{
    struct fault *fault = fault_from_params(call->params, call->error, sizeof(call->error));

    if (fault == NULL)
        return HTTP_BADREQUEST;
    fault_install(call->sim, fault);
    *answer = control_ok_json();
    return HTTP_OK;
}

static int control_clear_faults(struct control_call *call, cJSON **answer)
{
    faults_clear(call->sim);
    *answer = control_ok_json();
    return HTTP_OK;
}

static int control_stats(struct control_call *call, cJSON **answer)
{
    const struct sim_job *job;
    cJSON *jobs;

    *answer = cJSON_CreateObject();
    cJSON_AddNumberToObject(*answer, "total", (double)call->sim->total_job_requests);
    jobs = cJSON_AddObjectToObject(*answer, "jobs");
    TAILQ_FOREACH (job, &call->sim->jobs, link) {
        /* Jobs only defined through the control API were never asked for. */
        if (job->requests > 0)
            cJSON_AddNumberToObject(jobs, job->job_id, (double)job->requests);
    }
    cJSON_AddItemToObject(*answer, "posts",
                          call->sim->posts != NULL ? cJSON_Duplicate(call->sim->posts, 1) : cJSON_CreateObject());
    cJSON_AddNumberToObject(*answer, "creates", (double)call->sim->creates);
    return HTTP_OK;
}

static int control_times(struct control_call *call, cJSON **answer)
{
    cJSON *list;

    *answer = cJSON_CreateObject();
    list = cJSON_AddArrayToObject(*answer, "ms");
    for (size_t i = 0; list != NULL && i < call->sim->ntimes; i++)
        cJSON_AddItemToArray(list, cJSON_CreateNumber((double)call->sim->times_ms[i]));
    return HTTP_OK;
}

static int control_last(struct control_call *call, cJSON **answer)
{
    if (call->sim->last_request == NULL) {
        set_error(call->error, sizeof(call->error), "no job request received yet");
        return HTTP_NOTFOUND;
    }
    *answer = cJSON_Duplicate(call->sim->last_request, 1);
    return HTTP_OK;
}

static int control_reset(struct control_call *call, cJSON **answer)
{
    struct sim *sim = call->sim;

    jobs_clear(sim);
    faults_clear(sim);
    cJSON_Delete(sim->last_request);
    sim->last_request = NULL;
    auth_settings_clear(&sim->auth);
    auth_counters_clear(&sim->auth);
    cJSON_Delete(sim->iam_projects);
    cJSON_Delete(sim->iam_project_calls);
    sim->iam_projects = sim->iam_project_calls = NULL;
    sim->iam_project_total = 0;
    sim->iam_project_delay_ms = 0;
    *answer = control_ok_json();
    return HTTP_OK;
}

/*
 * POST /_sim/auth: a JSON body sets the mode and its settings, replacing
 * the previous ones (issued tokens are forgotten) and zeroing the counters.
 */
static int control_auth_set(struct control_call *call, cJSON **answer)
{
    struct sim_auth *auth = &call->sim->auth;
    struct evbuffer *input = evhttp_request_get_input_buffer(call->req);
    size_t length = evbuffer_get_length(input);
    struct sim_auth next;
    char *text;

    memset(&next, 0, sizeof(next));
    TAILQ_INIT(&next.issued);
    if (params_check(call->params, "", "", call->error, sizeof(call->error)) != 0)
        return HTTP_BADREQUEST;
    if ((text = malloc(length + 1)) == NULL) {
        set_error(call->error, sizeof(call->error), "out of memory");
        return HTTP_INTERNAL;
    }
    evbuffer_copyout(input, text, length);
    text[length] = '\0';
    if (auth_settings_parse(text, &next, call->error, sizeof(call->error)) != 0) {
        OPENSSL_cleanse(text, length);
        free(text);
        auth_settings_clear(&next);
        return HTTP_BADREQUEST;
    }
    OPENSSL_cleanse(text, length); /* it held the SK or the password */
    free(text);
    auth_settings_clear(auth);
    *auth = next;
    TAILQ_INIT(&auth->issued); /* "next" had none; its head pointed into itself */
    auth_counters_clear(auth);
    *answer = control_ok_json();
    return HTTP_OK;
}

/* GET /_sim/auth: the mode and what the checks saw (never a secret). */
static int control_auth_get(struct control_call *call, cJSON **answer)
{
    const struct sim_auth *auth = &call->sim->auth;

    *answer = cJSON_CreateObject();
    cJSON_AddStringToObject(*answer, "mode", auth_mode_names[auth->mode]);
    cJSON_AddNumberToObject(*answer, "iam_calls", (double)auth->iam_calls);
    cJSON_AddNumberToObject(*answer, "sig_ok", (double)auth->sig_ok);
    cJSON_AddNumberToObject(*answer, "sig_bad", (double)auth->sig_bad);
    cJSON_AddNumberToObject(*answer, "rejected", (double)auth->rejected);
    cJSON_AddBoolToObject(*answer, "last_authorization_seen", auth->last_authorization_seen);
    cJSON_AddNumberToObject(*answer, "issued_tokens", (double)auth->issued_count);
    cJSON_AddStringToObject(*answer, "last_rejection", auth->last_rejection);
    return HTTP_OK;
}

/* POST /_sim/auth/expire: every token issued so far expires now. */
static int control_auth_expire(struct control_call *call, cJSON **answer)
{
    struct issued_token *token;

    TAILQ_FOREACH (token, &call->sim->auth.issued, link) {
        token->revoked = 1;
    }
    *answer = control_ok_json();
    cJSON_AddNumberToObject(*answer, "expired", (double)call->sim->auth.issued_count);
    return HTTP_OK;
}

/* POST /_sim/projects: the projects IAM knows, and how late it answers. */
static int control_projects_set(struct control_call *call, cJSON **answer)
{
    struct sim *sim = call->sim;
    struct evbuffer *input = evhttp_request_get_input_buffer(call->req);
    size_t length = evbuffer_get_length(input);
    const cJSON *projects, *item;
    long long delay_ms = 0;
    cJSON *json = NULL;
    char *text;
    int status = HTTP_BADREQUEST;

    if (params_check(call->params, "", "", call->error, sizeof(call->error)) != 0)
        return HTTP_BADREQUEST;
    if ((text = malloc(length + 1)) == NULL) {
        set_error(call->error, sizeof(call->error), "out of memory");
        return HTTP_INTERNAL;
    }
    evbuffer_copyout(input, text, length);
    text[length] = '\0';
    json = cJSON_Parse(text);
    free(text);
    projects = cJSON_GetObjectItemCaseSensitive(json, "projects");
    if (!cJSON_IsObject(json) || !cJSON_IsObject(projects)) {
        set_error(call->error, sizeof(call->error), "the body must be {\"projects\":{\"ID\":\"NAME\",...}}");
        goto out;
    }
    if (json_members_check(json, "projects delay_ms", call->error, sizeof(call->error)) != 0 ||
        json_optional_integer(json, "delay_ms", 0, MAX_DELAY_MS, &delay_ms, call->error, sizeof(call->error)) != 0)
        goto out;
    cJSON_ArrayForEach(item, projects)
    {
        if (!cJSON_IsString(item) || item->valuestring[0] == '\0') {
            set_error(call->error, sizeof(call->error), "each project maps to its name, a non-empty string");
            goto out;
        }
    }
    cJSON_Delete(sim->iam_projects);
    cJSON_Delete(sim->iam_project_calls);
    sim->iam_projects = cJSON_Duplicate(projects, 1);
    sim->iam_project_calls = cJSON_CreateObject();
    sim->iam_project_total = 0;
    sim->iam_project_delay_ms = delay_ms;
    sim->iam_project_last_auth = "none";
    *answer = control_ok_json();
    status = HTTP_OK;
out:
    cJSON_Delete(json);
    return status;
}

/* GET /_sim/projects: the calls IAM's project details got. */
static int control_projects_get(struct control_call *call, cJSON **answer)
{
    struct sim *sim = call->sim;

    *answer = cJSON_CreateObject();
    cJSON_AddNumberToObject(*answer, "total", (double)sim->iam_project_total);
    cJSON_AddItemToObject(*answer, "calls",
                          sim->iam_project_calls ? cJSON_Duplicate(sim->iam_project_calls, 1) : cJSON_CreateObject());
    cJSON_AddStringToObject(*answer, "last_auth", sim->iam_project_last_auth ? sim->iam_project_last_auth : "none");
    return HTTP_OK;
}

struct control_route {
    enum evhttp_cmd_type method;
    const char *path; /* exact path, or prefix of one more segment if takes_id */
    int takes_id;
    control_handler handle;
};

static const struct control_route control_routes[] = {
    {EVHTTP_REQ_POST, "/_sim/jobs/", 1, control_define_job},
    {EVHTTP_REQ_POST, "/_sim/faults", 0, control_install_fault},
    {EVHTTP_REQ_DELETE, "/_sim/faults", 0, control_clear_faults},
    {EVHTTP_REQ_GET, "/_sim/stats", 0, control_stats},
    {EVHTTP_REQ_GET, "/_sim/times", 0, control_times},
    {EVHTTP_REQ_GET, "/_sim/last", 0, control_last},
    {EVHTTP_REQ_POST, "/_sim/reset", 0, control_reset},
    {EVHTTP_REQ_POST, "/_sim/auth", 0, control_auth_set},
    {EVHTTP_REQ_GET, "/_sim/auth", 0, control_auth_get},
    {EVHTTP_REQ_POST, "/_sim/auth/expire", 0, control_auth_expire},
    {EVHTTP_REQ_POST, "/_sim/projects", 0, control_projects_set},
    {EVHTTP_REQ_GET, "/_sim/projects", 0, control_projects_get},
};

/* Does "path" name this route's resource?  Sets *id for takes_id routes. */
static int control_route_matches(const struct control_route *route, const char *path, const char **id)
{
    size_t prefix_len = strlen(route->path);

    if (!route->takes_id)
        return strcmp(path, route->path) == 0;
    if (strncmp(path, route->path, prefix_len) != 0 || path[prefix_len] == '\0' ||
        strchr(path + prefix_len, '/') != NULL)
        return 0;
    *id = path + prefix_len;
    return 1;
}

static void control_request_handle(struct sim *sim, struct evhttp_request *req, const char *path, const char *query,
                                   char *outcome, size_t outcome_len)
{
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    const struct control_route *route = NULL;
    struct evkeyvalq params;
    struct control_call call;
    char allowed[64] = "";
    cJSON *answer = NULL;
    int status;
    size_t i;

    memset(&call, 0, sizeof(call));
    call.sim = sim;
    call.req = req;
    call.params = &params;
    TAILQ_INIT(&params);
    for (i = 0; i < sizeof(control_routes) / sizeof(control_routes[0]); i++) {
        if (!control_route_matches(&control_routes[i], path, &call.id))
            continue;
        if (control_routes[i].method == method) {
            route = &control_routes[i];
            break;
        }
        snprintf(allowed + strlen(allowed), sizeof(allowed) - strlen(allowed), "%s%s", allowed[0] ? ", " : "",
                 method_name(control_routes[i].method));
    }

    if (route == NULL && allowed[0] != '\0') {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allowed);
        status = HTTP_BADMETHOD;
        set_error(call.error, sizeof(call.error), "method not allowed");
    } else if (route == NULL) {
        status = HTTP_NOTFOUND;
        set_error(call.error, sizeof(call.error), "unknown control path");
    } else if (evhttp_parse_query_str(query ? query : "", &params) != 0) {
        status = HTTP_BADREQUEST;
        set_error(call.error, sizeof(call.error), "malformed query string");
    } else {
        status = route->handle(&call, &answer);
    }
    evhttp_clear_headers(&params);

    if (status != HTTP_OK) {
        cJSON_Delete(answer);
        answer = cJSON_CreateObject();
        cJSON_AddBoolToObject(answer, "ok", 0);
        cJSON_AddStringToObject(answer, "error", call.error);
    }
    answer_json(req, status, answer, outcome, outcome_len);
    if (status != HTTP_OK) /* a log note: the start of the reason will do */
        snprintf(outcome + strlen(outcome), outcome_len - strlen(outcome), " (%.100s)", call.error);
}

/* ------------------------------------------------------------------------ */
/* Server                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * The single evhttp callback: route to the control API, a job path, or 404.
 * Every request is answered (or parked) before this returns.
 */
static void sim_on_request(struct evhttp_request *req, void *arg)
{
    struct sim *sim = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
    const char *raw_uri = evhttp_request_get_uri(req);
    struct job_route route;
    char request_line[256];
    char outcome[160] = "";

    /* Copied now: once answered, "req" may be freed at any time. */
    snprintf(request_line, sizeof(request_line), "%s %s", method_name(evhttp_request_get_command(req)),
             raw_uri != NULL ? raw_uri : "?");
    if (path == NULL || path[0] == '\0')
        path = "/";

    if (strncmp(path, CONTROL_PREFIX, strlen(CONTROL_PREFIX)) == 0) {
        control_request_handle(sim, req, path, query, outcome, sizeof(outcome));
    } else if (stream_route_matches(path)) { /* stream.h: large bodies, both ways */
        stream_request_handle(sim->base, req, path, query, outcome, sizeof(outcome));
    } else if (strcmp(path, IAM_TOKENS_PATH) == 0) {
        iam_request_handle(sim, req, outcome, sizeof(outcome));
    } else if (strncmp(path, IAM_PROJECTS_PATH, strlen(IAM_PROJECTS_PATH)) == 0 &&
               path[strlen(IAM_PROJECTS_PATH)] != '\0' && strchr(path + strlen(IAM_PROJECTS_PATH), '/') == NULL) {
        iam_project_handle(sim, req, path + strlen(IAM_PROJECTS_PATH), outcome, sizeof(outcome));
    } else if (job_route_match(sim->api, path, &route) == 0) {
        job_request_handle(sim, req, &route, path, query, outcome, sizeof(outcome));
        job_route_clear(&route);
    } else if (create_route_match(sim->api, path, &route) == 0) {
        create_request_handle(sim, req, &route, path, query, outcome, sizeof(outcome));
        job_route_clear(&route);
    } else {
        answer_api_not_found(req, outcome, sizeof(outcome));
    }
    sim_log(sim, "%s -> %s", request_line, outcome);
}

/* evhttp bufferevent factory for HTTPS: one TLS server session per client. */
static struct bufferevent *tls_bufferevent_new(struct event_base *base, void *arg)
{
    SSL *ssl = SSL_new(arg);

    if (ssl == NULL)
        return NULL;
    /* CLOSE_ON_FREE: freeing the bufferevent frees the SSL and the socket. */
    return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
}

static SSL_CTX *tls_context_new(const char *cert_file, const char *key_file)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (ctx == NULL || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        fprintf(stderr, "jobsim: cannot set up TLS with %s and %s:\n", cert_file, key_file);
        ERR_print_errors_fp(stderr);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static void sim_on_signal(evutil_socket_t signum, short events, void *arg)
{
    struct sim *sim = arg;

    sim_log(sim, "signal %d, shutting down", (int)signum);
    event_base_loopexit(sim->base, NULL);
}

/* Free everything the simulator owns; safe on a partly set-up sim. */
static void sim_free(struct sim *sim)
{
    struct parked_request *parked;

    /*
     * evhttp_free() closes every connection; the close callbacks release
     * the parked requests, and evhttp frees the requests still attached.
     */
    if (sim->http != NULL)
        evhttp_free(sim->http);
    /* Nothing should be left; if something is, its request is evhttp's. */
    while ((parked = TAILQ_FIRST(&sim->parked)) != NULL)
        park_release(parked);
    jobs_clear(sim);
    faults_clear(sim);
    cJSON_Delete(sim->last_request);
    cJSON_Delete(sim->iam_projects);
    cJSON_Delete(sim->iam_project_calls);
    free(sim->times_ms);
    auth_settings_clear(&sim->auth);
    if (sim->tls != NULL)
        SSL_CTX_free(sim->tls);
    if (sim->base != NULL)
        event_base_free(sim->base);
    memset(sim, 0, sizeof(*sim));
}

/* ------------------------------------------------------------------------ */
/* Command line                                                             */
/* ------------------------------------------------------------------------ */

struct sim_options {
    char listen_host[256];
    uint16_t listen_port;
    const char *tls_cert;
    const char *tls_key;
    const struct job_api *api;
    long long init_ms;
    long long running_ms;
    int quiet;
};

static void usage(FILE *out)
{
    char names[128];

    job_api_names(names, sizeof(names));
    fprintf(out,
            "usage: jobsim [--listen HOST:PORT] [--tls-cert FILE --tls-key FILE]\n"
            "              [--api NAME] [--init-ms N] [--running-ms N] [--quiet]\n"
            "  --listen HOST:PORT  address to serve (default " DEFAULT_LISTEN "; port 0: any free port)\n"
            "  --tls-cert FILE     PEM certificate chain: serve HTTPS only\n"
            "  --tls-key FILE      PEM private key for --tls-cert\n"
            "  --api NAME          the job API to play: %s (default " DEFAULT_API ")\n"
            "  --init-ms N         how long a new job stays in its init state (default %d)\n"
            "  --running-ms N      then how long it runs (default %d)\n"
            "  --quiet             do not log each request on stderr\n",
            names, DEFAULT_INIT_MS, DEFAULT_RUNNING_MS);
}

/* "HOST:PORT" or "[IPV6]:PORT". */
static int parse_listen(const char *text, struct sim_options *opts)
{
    const char *colon = strrchr(text, ':');
    const char *host = text;
    size_t host_len;
    long long port;

    if (colon == NULL || parse_integer(colon + 1, 0, 65535, &port) != 0)
        return -1;
    host_len = (size_t)(colon - text);
    if (host_len >= 2 && host[0] == '[' && host[host_len - 1] == ']') {
        host++;
        host_len -= 2;
    }
    if (host_len == 0 || host_len >= sizeof(opts->listen_host))
        return -1;
    memcpy(opts->listen_host, host, host_len);
    opts->listen_host[host_len] = '\0';
    opts->listen_port = (uint16_t)port;
    return 0;
}

static int parse_options(int argc, char **argv, struct sim_options *opts)
{
    static const struct option long_options[] = {
        {"listen", required_argument, NULL, 'l'},
        {"tls-cert", required_argument, NULL, 'c'},
        {"tls-key", required_argument, NULL, 'k'},
        {"api", required_argument, NULL, 'a'},
        {"init-ms", required_argument, NULL, 'i'},
        {"running-ms", required_argument, NULL, 'r'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int option;

    memset(opts, 0, sizeof(*opts));
    opts->init_ms = DEFAULT_INIT_MS;
    opts->running_ms = DEFAULT_RUNNING_MS;
    opts->api = job_api_lookup(DEFAULT_API);
    parse_listen(DEFAULT_LISTEN, opts);

    while ((option = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (option) {
        case 'l':
            if (parse_listen(optarg, opts) != 0) {
                fprintf(stderr, "jobsim: --listen wants HOST:PORT, got '%s'\n", optarg);
                return -1;
            }
            break;
        case 'c': opts->tls_cert = optarg; break;
        case 'k': opts->tls_key = optarg; break;
        case 'a':
            if ((opts->api = job_api_lookup(optarg)) == NULL) {
                char names[128];

                job_api_names(names, sizeof(names));
                fprintf(stderr, "jobsim: --api wants one of: %s; got '%s'\n", names, optarg);
                return -1;
            }
            break;
        case 'i':
        case 'r':
            if (parse_integer(optarg, 0, MAX_TIMELINE_MS, option == 'i' ? &opts->init_ms : &opts->running_ms) != 0) {
                fprintf(stderr, "jobsim: --%s wants milliseconds, got '%s'\n", option == 'i' ? "init-ms" : "running-ms",
                        optarg);
                return -1;
            }
            break;
        case 'q': opts->quiet = 1; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "jobsim: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if ((opts->tls_cert == NULL) != (opts->tls_key == NULL)) {
        fprintf(stderr, "jobsim: --tls-cert and --tls-key go together\n");
        return -1;
    }
    return 0;
}

/* The port actually bound (differs from the requested one for port 0). */
static unsigned bound_port(struct evhttp_bound_socket *bound)
{
    struct sockaddr_storage address;
    socklen_t length = sizeof(address);
    evutil_socket_t fd = evhttp_bound_socket_get_fd(bound);

    if (getsockname(fd, (struct sockaddr *)&address, &length) != 0)
        return 0;
    if (address.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&address)->sin_port);
    if (address.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&address)->sin6_port);
    return 0;
}

int main(int argc, char **argv)
{
    struct sim_options opts;
    struct sim sim;
    struct evhttp_bound_socket *bound;
    struct event *on_sigterm = NULL, *on_sigint = NULL;
    int is_ipv6;
    int rc = 1;

    if (parse_options(argc, argv, &opts) != 0)
        return 2;

    /*
     * A client that vanishes while we write to it must cost an EPIPE, not
     * the process.
     */
    signal(SIGPIPE, SIG_IGN);

    memset(&sim, 0, sizeof(sim));
    TAILQ_INIT(&sim.jobs);
    TAILQ_INIT(&sim.faults);
    TAILQ_INIT(&sim.parked);
    TAILQ_INIT(&sim.auth.issued);
    sim.quiet = opts.quiet;
    sim.api = opts.api;
    sim.default_timeline.init_ms = opts.init_ms;
    sim.default_timeline.running_ms = opts.running_ms;
    sim.default_timeline.final_phase = JOB_SUCCESS;
    sim.default_timeline.sub_jobs = opts.api->sub_jobs.default_count;

    if ((sim.base = event_base_new()) == NULL) {
        fprintf(stderr, "jobsim: cannot create the event loop\n");
        goto out;
    }
    if (opts.tls_cert != NULL && (sim.tls = tls_context_new(opts.tls_cert, opts.tls_key)) == NULL)
        goto out;
    if ((sim.http = evhttp_new(sim.base)) == NULL) {
        fprintf(stderr, "jobsim: cannot create the HTTP server\n");
        goto out;
    }
    if (sim.tls != NULL)
        evhttp_set_bevcb(sim.http, tls_bufferevent_new, sim.tls);
    evhttp_set_gencb(sim.http, sim_on_request, &sim);
    /* Let every method reach us, so that the job API can answer 405 itself. */
    evhttp_set_allowed_methods(sim.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
                                             EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                             EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    /* Every body sets its own type; an empty one should carry none. */
    evhttp_set_default_content_type(sim.http, NULL);
    evhttp_set_max_headers_size(sim.http, MAX_HEADERS_SIZE);
    evhttp_set_max_body_size(sim.http, MAX_BODY_SIZE);

    bound = evhttp_bind_socket_with_handle(sim.http, opts.listen_host, opts.listen_port);
    if (bound == NULL) {
        fprintf(stderr, "jobsim: cannot listen on %s port %u: %s\n", opts.listen_host, (unsigned)opts.listen_port,
                strerror(errno));
        goto out;
    }

    on_sigterm = evsignal_new(sim.base, SIGTERM, sim_on_signal, &sim);
    on_sigint = evsignal_new(sim.base, SIGINT, sim_on_signal, &sim);
    if (on_sigterm == NULL || on_sigint == NULL || evsignal_add(on_sigterm, NULL) != 0 ||
        evsignal_add(on_sigint, NULL) != 0) {
        fprintf(stderr, "jobsim: cannot watch for signals\n");
        goto out;
    }

    is_ipv6 = strchr(opts.listen_host, ':') != NULL;
    printf("jobsim listening on %s://%s%s%s:%u\n", sim.tls ? "https" : "http", is_ipv6 ? "[" : "", opts.listen_host,
           is_ipv6 ? "]" : "", bound_port(bound));
    fflush(stdout);
    sim_log(&sim, "playing the %s job API: GET %s", sim.api->name, sim.api->pattern);
    for (size_t i = 0; i < sizeof(sim.api->create.patterns) / sizeof(sim.api->create.patterns[0]); i++) {
        if (sim.api->create.patterns[i] != NULL)
            sim_log(&sim, "and its create call: POST %s", sim.api->create.patterns[i]);
    }

    if (event_base_dispatch(sim.base) == 0)
        rc = 0;

out:
    if (on_sigterm != NULL)
        event_free(on_sigterm);
    if (on_sigint != NULL)
        event_free(on_sigint);
    sim_free(&sim);
    libevent_global_shutdown();
    return rc;
}
