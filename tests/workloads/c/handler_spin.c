// handler_spin — failure 1, spin variant: a handler busy-waits on a condition that never
// becomes true.
//
// A single-threaded event loop (the main thread, renamed "event-loop") runs tasks one at a time.
// The third task waits for a job to finish by polling `job->done` in a busy loop; nothing ever
// sets it. The SIGTERM handler only sets `stop_requested`, which the loop checks between tasks,
// so the loop never sees it: the thread stays on a CPU.
//
// Expected after SIGTERM + grace: stalled; flagged exactly "event-loop", state running, reason
// "spinning: ..." at spin_until_done (its user stack samples name spin_until_done and
// run_task).
//
// `--ready`: print `ready` on stdout once the loop is about to spin. Without it, nothing is
// printed on stdout.
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static volatile sig_atomic_t stop_requested;
static int ready_mode;

static void on_sigterm(int sig) {
    (void)sig;
    stop_requested = 1;
}

struct job {
    volatile int done; // set by a completion callback that never comes
    volatile unsigned long polls;
};

__attribute__((noipa)) unsigned long spin_until_done(struct job *job) {
    if (ready_mode) {
        printf("ready\n");
        fflush(stdout);
        ready_mode = 0;
    }
    while (!job->done) job->polls++; // the exit condition never becomes true
    return job->polls;
}

__attribute__((noipa)) int run_task(int id) {
    static struct job pending;
    if (id % 3 != 2) return 0; // cheap tasks
    unsigned long polls = spin_until_done(&pending);
    return polls > 0 ? 0 : -1;
}

__attribute__((noipa)) int event_loop(void) {
    int done = 0;
    while (!stop_requested) { // checked between tasks only
        if (run_task(done) < 0) fprintf(stderr, "handler_spin: task %d failed\n", done);
        done++;
    }
    return done;
}

int main(int argc, char **argv) {
    ready_mode = argc > 1 && strcmp(argv[1], "--ready") == 0;
    pthread_setname_np(pthread_self(), "event-loop");
    struct sigaction sa = {.sa_handler = on_sigterm, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    int n = event_loop();
    fprintf(stderr, "handler_spin: stopped after %d tasks\n", n);
    return 0;
}
