/*
 * workers: run the daemon on every core as N worker processes under one
 * supervising parent.
 *
 * Processes rather than threads: each worker is the whole single-threaded
 * daemon (its own event loop, libcurl multi handle, hiredis connection and
 * in-process cache), so the hit path takes no lock and shares no cache line;
 * a worker that crashes takes none of the others with it and is restarted.
 * Each worker binds its own listening socket with SO_REUSEPORT, so the kernel
 * spreads connections evenly over them (a shared accept queue lets one busy
 * worker take most keep-alive connections). What workers must agree on, the
 * cache and who calls upstream for a key, lives in the shared Redis tier
 * (cache.h: the lease), as it does between jobgate instances.
 *
 * The parent does no request work: it forwards SIGHUP (reload) and SIGUSR1
 * (reopen logs) to the workers, on SIGTERM/SIGINT asks them to drain and
 * waits for them, and restarts a worker that dies (at most once a second
 * per slot, so a worker that cannot start does not spin).
 */
#ifndef JOBGATE_WORKERS_H
#define JOBGATE_WORKERS_H

/* The body of one worker: runs the daemon, returns its exit code. `index`
 * is 0..n-1. Called in the child after fork. */
typedef int (*worker_main_fn)(int index, void *arg);

/* Number of online CPUs (at least 1). */
int workers_default_count(void);

/* Fork `n` workers running `fn` and supervise them until they have all
 * exited after SIGTERM/SIGINT. Returns the exit code for the parent: 0 after
 * a clean stop, 1 if the workers could not start (every worker of the first
 * generation exited with an error before serving). */
int workers_run(int n, worker_main_fn fn, void *arg);

#endif
