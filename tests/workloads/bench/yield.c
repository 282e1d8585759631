/*
 * yield: two threads pinned to the same CPU (CPU 0), each calling sched_yield(2) in a loop, in
 * a process no tool watches: every call switches to the other thread. What a context switch
 * costs every other process while a tool is attached to something else: a hook on the
 * scheduler (`--hook sched`, offcputime) runs here at every switch, and a hook on every syscall
 * (raw or syscall tracepoints) at every call. One op = one sched_yield call (both threads).
 *
 * Usage: yield SECS   (protocol: bench.h)
 */
#include "bench.h"

#include <pthread.h>
#include <sched.h>

static struct counter calls[2];

static void *yielder(void *arg)
{
    struct counter *mine = arg;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0)
        die("sched_setaffinity");
    go_wait();
    for (;;) {
        for (int i = 0; i < 16; i++)
            sched_yield();
        count_add(mine, 16);
    }
    return NULL;
}

static uint64_t total(void) { return atomic_load(&calls[0].v) + atomic_load(&calls[1].v); }

int main(int argc, char **argv)
{
    double secs = arg_secs(argc, argv);
    pthread_t a, b;
    if (pthread_create(&a, NULL, yielder, &calls[0]) ||
        pthread_create(&b, NULL, yielder, &calls[1]))
        die("pthread_create");
    printf("ready pid=%d\n", getpid());
    fflush(stdout);
    wait_start();
    go_release();
    double s;
    uint64_t ops = measure(secs, total, &s);
    printf("ops=%llu secs=%.6f ops_per_sec=%.1f\n", (unsigned long long)ops, s, ops / s);
    fflush(stdout);
    linger();
}
