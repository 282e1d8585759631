/*
 * getppid: one thread calling getppid(2) in a loop, in a process no tool watches. What a
 * syscall costs every other process on the host while a tool is attached to something else:
 * a hook on every syscall (raw or syscall tracepoints) adds its cost here, a hook on the
 * scheduler or on the probed calls only (fentry) does not. One op = one call; the result line
 * also gives the time per call (`ns_per_call`).
 *
 * Usage: getppid SECS   (protocol: bench.h)
 */
#include "bench.h"

#include <pthread.h>

static struct counter calls;

static void *caller(void *arg)
{
    (void)arg;
    go_wait();
    for (;;) {
        for (int i = 0; i < 64; i++)
            syscall(SYS_getppid);
        count_add(&calls, 64);
    }
    return NULL;
}

static uint64_t total(void) { return atomic_load(&calls.v); }

int main(int argc, char **argv)
{
    double secs = arg_secs(argc, argv);
    pthread_t t;
    if (pthread_create(&t, NULL, caller, NULL))
        die("pthread_create");
    printf("ready pid=%d\n", getpid());
    fflush(stdout);
    wait_start();
    go_release();
    double s;
    uint64_t ops = measure(secs, total, &s);
    printf("ops=%llu secs=%.6f ops_per_sec=%.1f ns_per_call=%.1f\n", (unsigned long long)ops, s,
           ops / s, ops ? s * 1e9 / ops : 0.0);
    fflush(stdout);
    linger();
}
