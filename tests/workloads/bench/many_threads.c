/*
 * many_threads: N threads (default 1000) that mostly sleep: even-numbered ones in a futex wait
 * with a timeout, odd-numbered ones in poll(), each waking every 100-300 ms. Every thread makes
 * probed calls (futex) or sleeps outside them (poll), so a watcher has per-thread state for half
 * of them and sees all of them in its snapshots. Used to measure stallprobe's memory at scale.
 * Prints `ready pid=N threads=N` once every thread runs; exits when stdin closes.
 *
 * Usage: many_threads [N]
 */
#include "bench.h"

#include <poll.h>
#include <pthread.h>

static _Atomic uint32_t never; /* nobody ever wakes this futex */
static _Atomic int started;

static void *sleeper(void *arg)
{
    long i = (long)arg;
    long ms = 100 + (i * 37) % 200;
    atomic_fetch_add(&started, 1);
    for (;;) {
        if (i % 2 == 0) {
            struct timespec ts = {.tv_sec = 0, .tv_nsec = ms * 1000000};
            futex(&never, FUTEX_WAIT_PRIVATE, 0, &ts);
        } else {
            poll(NULL, 0, (int)ms);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (long i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, sleeper, (void *)i))
            die("pthread_create");
    }
    while (atomic_load(&started) < n)
        sleep_ns(1000000);
    printf("ready pid=%d threads=%d\n", getpid(), n);
    fflush(stdout);
    linger();
}
