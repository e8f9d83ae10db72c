#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "workers.h"

/* A worker that exits this soon after it started failed to start (bad port,
 * no memory): restarting it at once would only spin. */
#define START_GRACE_MS 1000

struct worker_slot {
    pid_t pid;           /* 0: not running */
    int64_t started_ms;  /* monotonic */
    int64_t restart_ms;  /* when to start it again, 0: not scheduled */
    int failed_at_start; /* exited with an error within START_GRACE_MS */
};

int workers_default_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static pid_t spawn(struct worker_slot *slot, int index, worker_main_fn fn, void *arg, const sigset_t *child_mask)
{
    pid_t pid = fork();
    if (pid < 0) {
        log_error("cannot start worker %d: %s", index, strerror(errno));
        return -1;
    }
    if (pid == 0) {
        /* A worker outlives no parent: its supervisor gone, it drains and exits. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        sigprocmask(SIG_SETMASK, child_mask, NULL);
        exit(fn(index, arg)); /* exit, not _exit: LeakSanitizer checks at exit */
    }
    slot->pid = pid;
    slot->started_ms = clock_mono_us() / 1000;
    slot->restart_ms = 0;
    return pid;
}

static void signal_all(struct worker_slot *slots, int n, int sig)
{
    for (int i = 0; i < n; i++)
        if (slots[i].pid > 0)
            kill(slots[i].pid, sig);
}

static int alive(const struct worker_slot *slots, int n)
{
    int count = 0;
    for (int i = 0; i < n; i++)
        count += slots[i].pid > 0;
    return count;
}

/* Reap every exited worker; schedule restarts unless stopping. */
static void reap(struct worker_slot *slots, int n, int stopping)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < n; i++) {
            if (slots[i].pid != pid)
                continue;
            struct worker_slot *s = &slots[i];
            int64_t now = clock_mono_us() / 1000;
            int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
            s->pid = 0;
            s->failed_at_start = !clean && now - s->started_ms < START_GRACE_MS;
            if (stopping)
                break;
            if (WIFSIGNALED(status))
                log_error("worker %d (pid %d) killed by signal %d; restarting it", i, (int)pid, WTERMSIG(status));
            else
                log_error("worker %d (pid %d) exited with %d; restarting it", i, (int)pid, WEXITSTATUS(status));
            s->restart_ms = s->failed_at_start ? now + START_GRACE_MS : now;
            break;
        }
    }
}

int workers_run(int n, worker_main_fn fn, void *arg)
{
    struct worker_slot *slots = calloc((size_t)n, sizeof(*slots));
    if (!slots)
        return 1;
    /* The parent takes its signals synchronously (sigtimedwait): no handler
     * runs between a fork and the bookkeeping of its pid. */
    sigset_t watched, child_mask;
    sigemptyset(&watched);
    sigaddset(&watched, SIGTERM);
    sigaddset(&watched, SIGINT);
    sigaddset(&watched, SIGHUP);
    sigaddset(&watched, SIGUSR1);
    sigaddset(&watched, SIGCHLD);
    sigprocmask(SIG_BLOCK, &watched, &child_mask);

    int stopping = 0, exit_code = 0;
    for (int i = 0; i < n; i++)
        spawn(&slots[i], i, fn, arg, &child_mask);
    log_info("supervising %d worker processes", n);

    int first_generation = 1;
    while (alive(slots, n) > 0 || !stopping) {
        struct timespec tick = {0, 200 * 1000 * 1000};
        siginfo_t info;
        int sig = sigtimedwait(&watched, &info, &tick);
        switch (sig) {
        case SIGTERM:
        case SIGINT:
            if (stopping)
                log_warn("second signal: workers stop now");
            else
                log_info("signal %d: stopping %d worker(s)", sig, alive(slots, n));
            stopping = 1;
            signal_all(slots, n, sig); /* a worker stops at once on the second */
            break;
        case SIGHUP:
        case SIGUSR1: signal_all(slots, n, sig); break;
        case SIGCHLD: reap(slots, n, stopping); break;
        default: break; /* the tick, or EINTR */
        }
        if (stopping)
            continue;
        if (first_generation) {
            int failed = 0, settled = 1;
            int64_t now = clock_mono_us() / 1000;
            for (int i = 0; i < n; i++) {
                failed += slots[i].pid == 0 && slots[i].failed_at_start;
                settled &= slots[i].pid == 0 || now - slots[i].started_ms >= START_GRACE_MS;
            }
            if (failed == n) {
                log_error("no worker could start; giving up");
                exit_code = 1;
                stopping = 1;
                continue;
            }
            if (settled)
                first_generation = 0;
        }
        int64_t now = clock_mono_us() / 1000;
        for (int i = 0; i < n; i++)
            if (slots[i].pid == 0 && slots[i].restart_ms && now >= slots[i].restart_ms)
                spawn(&slots[i], i, fn, arg, &child_mask);
    }
    sigprocmask(SIG_SETMASK, &child_mask, NULL);
    free(slots);
    return exit_code;
}
