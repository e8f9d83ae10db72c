/*
 * log: the error log. One line per event on stderr (systemd's journal or the
 * operator's redirection takes it from there), with a UTC timestamp and a level.
 *
 * Contract: never log a secret (token, key, signature). Callers pass only
 * values that are safe to show; request ids are sanitised before they get here.
 */
#ifndef JOBGATE_LOG_H
#define JOBGATE_LOG_H

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Tag every later line with "wINDEX " (in a worker process). */
void log_set_worker(int index);

/* Parse "error", "warn", "info" or "debug". Returns 0, or -1 if unknown. */
int log_level_parse(const char *name, enum log_level *out);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...)                             \
    do {                                           \
        if (log_get_level() >= LOG_LEVEL_DEBUG)    \
            log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__); \
    } while (0)

#endif
