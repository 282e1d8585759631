/*
 * ignore_term: N threads (default 200) blocked forever on a condition variable, and a process
 * that does not exit on SIGTERM: the main thread catches it, writes
 * `sigterm_ns=<CLOCK_MONOTONIC ns>` on stdout (so the bench knows exactly when the grace period
 * began) and carries on. Used to time `stallprobe run --stop-after ... --grace ...` from grace
 * expiry to the report.
 *
 * Usage: ignore_term [N]
 */
#include "bench.h"

#include <pthread.h>
#include <signal.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never = PTHREAD_COND_INITIALIZER;

static void *stuck(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&lock);
    for (;;)
        pthread_cond_wait(&never, &lock);
    return NULL;
}

/* Async-signal-safe: clock_gettime and write only. */
static void on_term(int sig)
{
    (void)sig;
    char buf[48] = "sigterm_ns=";
    char digits[24];
    int len = 11, d = 0;
    uint64_t ns = now_ns();
    do {
        digits[d++] = (char)('0' + ns % 10);
        ns /= 10;
    } while (ns);
    while (d)
        buf[len++] = digits[--d];
    buf[len++] = '\n';
    if (write(1, buf, (size_t)len) < 0) {
    }
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 200;
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    /* Workers inherit a blocked SIGTERM: only the main thread takes it. */
    pthread_sigmask(SIG_BLOCK, &term, NULL);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (int i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, stuck, NULL))
            die("pthread_create");
    }
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    pthread_sigmask(SIG_UNBLOCK, &term, NULL);
    printf("ready pid=%d threads=%d\n", getpid(), n);
    fflush(stdout);
    for (;;)
        pause();
}
