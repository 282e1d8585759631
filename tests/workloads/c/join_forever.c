// join_forever — failure 4, joining a thread that never ends.
//
// The "worker" thread waits for a job to finish by polling a flag once a second (usleep: a
// clock_nanosleep, outside the probed calls); it never looks at the stop flag, and the job
// never finishes. The main thread, renamed "main", has a SIGTERM handler that sets
// `got_sigterm`; it pause()s until then, sets `stop_worker` and joins the worker: forever.
// SIGTERM is blocked in the worker, so the handler runs on main.
//
// Expected after SIGTERM + grace: stalled; flagged exactly "main" (blocked in futex in
// pthread_join, at stop_and_join) and "worker" (asleep in clock_nanosleep at
// wait_for_job).
//
// `--ready`: print `ready` on stdout once the worker is polling. Without it, nothing is printed
// on stdout.
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t got_sigterm;
static volatile int stop_worker; // the worker never looks at it
static volatile int job_finished; // nothing ever sets it

static void on_sigterm(int sig) {
    (void)sig;
    got_sigterm = 1;
}

__attribute__((noipa)) long wait_for_job(void) {
    long polls = 0;
    while (!job_finished) {
        usleep(1000 * 1000);
        polls++;
    }
    return polls;
}

static void *worker(void *arg) {
    (void)arg;
    long polls = wait_for_job();
    fprintf(stderr, "join_forever: job done after %ld polls\n", polls);
    return NULL;
}

__attribute__((noipa)) int stop_and_join(pthread_t t) {
    stop_worker = 1;
    int r = pthread_join(t, NULL); // the worker never ends
    fprintf(stderr, "join_forever: worker joined\n");
    return r;
}

int main(int argc, char **argv) {
    int ready_mode = argc > 1 && strcmp(argv[1], "--ready") == 0;
    pthread_setname_np(pthread_self(), "main");
    struct sigaction sa = {.sa_handler = on_sigterm, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);

    sigset_t term, old;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, &old); // the worker inherits this: SIGTERM goes to main
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_setname_np(t, "worker");
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (ready_mode) {
        usleep(50 * 1000);
        printf("ready\n");
        fflush(stdout);
    }
    while (!got_sigterm) pause();
    fprintf(stderr, "join_forever: SIGTERM: stopping the worker\n");
    return stop_and_join(t) == 0 ? 0 : 1;
}
