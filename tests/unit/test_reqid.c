/*
 * proxy/reqid.c: request ids are 128 random bits in hex, never repeated,
 * unpredictable from the previous one, and not shared with a forked worker.
 */
#include <search.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "reqid.h"
#include "unit_support.h"

#define IDS 5000 /* many pool refills (256 ids each) */

static int compare(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_ids_are_unique_hex(void **state)
{
    (void)state;
    static char ids[IDS][33];
    for (int i = 0; i < IDS; i++) {
        reqid_new(ids[i], sizeof(ids[i]));
        assert_int_equal(strlen(ids[i]), 32);
        assert_int_equal(strspn(ids[i], "0123456789abcdef"), 32);
        assert_true(reqid_acceptable(ids[i]));
    }
    qsort(ids, IDS, sizeof(ids[0]), compare);
    for (int i = 1; i < IDS; i++)
        assert_string_not_equal(ids[i - 1], ids[i]);
}

/* A counter XORed into a seed (the old scheme) changes only the last digits
 * from one id to the next; random ids share about 2 of 32 digits by chance. */
static void test_consecutive_ids_differ_throughout(void **state)
{
    (void)state;
    char prev[33], cur[33];
    reqid_new(prev, sizeof(prev));
    int same = 0;
    for (int i = 0; i < 1000; i++) {
        reqid_new(cur, sizeof(cur));
        for (int j = 0; j < 32; j++)
            same += cur[j] == prev[j];
        memcpy(prev, cur, sizeof(cur));
    }
    /* Expected 1000 * 32 / 16 = 2000 equal positions; a counter scheme gives ~30,000. */
    assert_in_range(same, 1500, 2600);
}

static void test_forked_worker_draws_its_own(void **state)
{
    (void)state;
    char parent[33];
    reqid_new(parent, sizeof(parent)); /* the pool is filled now */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char child[33];
        reqid_new(child, sizeof(child));
        ssize_t n = write(fds[1], child, 33);
        _exit(n == 33 ? 0 : 1);
    }
    char child[33];
    assert_int_equal(read(fds[0], child, 33), 33);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char next[33];
    reqid_new(next, sizeof(next));
    assert_string_not_equal(child, next); /* without the fork reset, the child would draw the parent's next id */
    close(fds[0]);
    close(fds[1]);
}

static void test_short_buffer(void **state)
{
    (void)state;
    char small[32];
    memset(small, 'x', sizeof(small));
    reqid_new(small, sizeof(small));
    assert_string_equal(small, "");
}

static void test_client_ids(void **state)
{
    (void)state;
    assert_true(reqid_acceptable("abc-123_x.y:z"));
    assert_false(reqid_acceptable(""));
    assert_false(reqid_acceptable("a b"));
    assert_false(reqid_acceptable("a\r\nX-Evil: 1"));
    char longest[REQID_MAX + 2];
    memset(longest, 'a', sizeof(longest));
    longest[REQID_MAX] = '\0';
    assert_true(reqid_acceptable(longest));
    longest[REQID_MAX] = 'a';
    longest[REQID_MAX + 1] = '\0';
    assert_false(reqid_acceptable(longest));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids_are_unique_hex),
        cmocka_unit_test(test_consecutive_ids_differ_throughout),
        cmocka_unit_test(test_forked_worker_draws_its_own),
        cmocka_unit_test(test_short_buffer),
        cmocka_unit_test(test_client_ids),
    };
    return cmocka_run_group_tests_name("reqid", tests, NULL, NULL);
}
