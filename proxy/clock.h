/*
 * clock: the two times jobgate reads. Wall time (ms since the epoch) is what
 * goes into stored entries, because an entry outlives the process and an `Age`
 * must survive a restart; monotonic time measures durations and deadlines.
 */
#ifndef JOBGATE_CLOCK_H
#define JOBGATE_CLOCK_H

#include <stdint.h>

int64_t clock_wall_ms(void);
int64_t clock_mono_us(void);

#endif
