/*
 * Shared protocol of the bench workloads (driven by `cargo xtask bench`, xtask/src/bench/):
 *
 *   1. set up (threads, sockets), then print `ready pid=N [key=value ...]` on stdout;
 *   2. wait for one byte on stdin: the go signal (probes are attached by then);
 *   3. release the workers, skip a short warm-up, count operations for `secs` seconds;
 *   4. print `ops=N secs=S ops_per_sec=X [key=value ...]` on stdout;
 *   5. keep running until stdin closes (or a signal), so a tool can detach from a live process.
 *
 * Workers count into their own cache line; only the control thread reads the counters.
 */
#ifndef BENCH_H
#define BENCH_H

#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define WARMUP_NS 100000000ull /* 100 ms between the go signal and the measured window */

struct counter {
    _Alignas(64) _Atomic uint64_t v;
};

static inline void count_add(struct counter *c, uint64_t n)
{
    /* Single writer per counter: a relaxed load + store, no locked instruction. */
    atomic_store_explicit(&c->v, atomic_load_explicit(&c->v, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void sleep_ns(uint64_t ns)
{
    struct timespec ts = {.tv_sec = ns / 1000000000ull, .tv_nsec = ns % 1000000000ull};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static inline long futex(_Atomic uint32_t *addr, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, addr, op, val, ts, NULL, 0);
}

static inline void die(const char *what)
{
    perror(what);
    exit(2);
}

static inline double arg_secs(int argc, char **argv)
{
    double s = argc > 1 ? atof(argv[1]) : 3.0;
    if (s <= 0) {
        fprintf(stderr, "usage: %s SECS\n", argv[0]);
        exit(2);
    }
    return s;
}

/* Step 2: block until the driver writes a byte (EOF: the driver is gone). */
static inline void wait_start(void)
{
    char b;
    ssize_t n;
    do {
        n = read(0, &b, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1)
        exit(3);
}

/* Workers block here until go_release(). */
static _Atomic uint32_t go_word;

static inline void go_wait(void)
{
    while (atomic_load(&go_word) == 0)
        futex(&go_word, FUTEX_WAIT_PRIVATE, 0, NULL);
}

static inline void go_release(void)
{
    atomic_store(&go_word, 1);
    futex(&go_word, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL);
}

/* Step 3: warm-up, then the measured window. Returns the operations counted in it and sets
 * *secs_out to its exact length. `total` sums the workers' counters. */
static inline uint64_t measure(double secs, uint64_t (*total)(void), double *secs_out)
{
    sleep_ns(WARMUP_NS);
    uint64_t c0 = total(), t0 = now_ns();
    sleep_ns((uint64_t)(secs * 1e9));
    uint64_t c1 = total(), t1 = now_ns();
    *secs_out = (double)(t1 - t0) / 1e9;
    return c1 - c0;
}

/* Step 5: stay alive until stdin closes, then leave without running anyone's destructors. */
static inline void linger(void)
{
    char b;
    ssize_t n;
    do {
        n = read(0, &b, 1);
    } while (n > 0 || (n < 0 && errno == EINTR));
    _exit(0);
}

#endif
