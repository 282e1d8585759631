/*
 * pingpong: two threads pinned to the same CPU (CPU 0) pass a token through two futexes.
 *
 *   ping: f1 = 1; FUTEX_WAKE(f1); while (f2 == 0) FUTEX_WAIT(f2, 0); f2 = 0;   (one op)
 *   pong: while (f1 == 0) FUTEX_WAIT(f1, 0); f1 = 0; f2 = 1; FUTEX_WAKE(f2);
 *
 * On one CPU every hand-off is a context switch, so a round trip is normally four futex calls
 * (two waits, two wakes) and two switches: the worst case for a per-syscall probe. The result
 * line also says how many futex calls a round trip really took (`futex_per_op`).
 *
 * Usage: pingpong SECS   (protocol: bench.h)
 */
#include "bench.h"

#include <pthread.h>
#include <sched.h>

static _Atomic uint32_t f1, f2;
static struct counter trips, calls[2];

static void pin_cpu0(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0)
        die("sched_setaffinity");
}

static void *ping(void *arg)
{
    (void)arg;
    pin_cpu0();
    go_wait();
    for (;;) {
        uint64_t n = 1;
        atomic_store(&f1, 1);
        futex(&f1, FUTEX_WAKE_PRIVATE, 1, NULL);
        while (atomic_load(&f2) == 0) {
            futex(&f2, FUTEX_WAIT_PRIVATE, 0, NULL);
            n++;
        }
        atomic_store(&f2, 0);
        count_add(&calls[0], n);
        count_add(&trips, 1);
    }
    return NULL;
}

static void *pong(void *arg)
{
    (void)arg;
    pin_cpu0();
    go_wait();
    for (;;) {
        uint64_t n = 1;
        while (atomic_load(&f1) == 0) {
            futex(&f1, FUTEX_WAIT_PRIVATE, 0, NULL);
            n++;
        }
        atomic_store(&f1, 0);
        atomic_store(&f2, 1);
        futex(&f2, FUTEX_WAKE_PRIVATE, 1, NULL);
        count_add(&calls[1], n);
    }
    return NULL;
}

static uint64_t total(void) { return atomic_load(&trips.v); }

int main(int argc, char **argv)
{
    double secs = arg_secs(argc, argv);
    pthread_t a, b;
    if (pthread_create(&a, NULL, ping, NULL) || pthread_create(&b, NULL, pong, NULL))
        die("pthread_create");
    printf("ready pid=%d\n", getpid());
    fflush(stdout);
    wait_start();
    go_release();
    sleep_ns(WARMUP_NS);
    uint64_t c0 = total(), k0 = atomic_load(&calls[0].v) + atomic_load(&calls[1].v);
    uint64_t t0 = now_ns();
    sleep_ns((uint64_t)(secs * 1e9));
    uint64_t c1 = total(), k1 = atomic_load(&calls[0].v) + atomic_load(&calls[1].v);
    double s = (double)(now_ns() - t0) / 1e9;
    uint64_t ops = c1 - c0;
    printf("ops=%llu secs=%.6f ops_per_sec=%.1f futex_per_op=%.3f\n", (unsigned long long)ops, s,
           ops / s, ops ? (double)(k1 - k0) / ops : 0.0);
    fflush(stdout);
    linger();
}
