// clean_shutdown — control: a program that shuts down cleanly on SIGTERM.
//
// Three workers ("worker-0".."worker-2") wait for jobs on a condition variable (futex, no
// timeout); a "ticker" thread wakes every 50 ms (clock_nanosleep). The main thread, renamed
// "main", blocks SIGTERM everywhere and waits for it with sigwait(); then it sets `stopping`,
// wakes the workers, joins everyone and returns 0.
//
// Expected: exits within the grace period; verdict clean, exit code 0, nothing flagged,
// process_exited true, exit_code 0.
//
// `--ready`: print `ready` on stdout once every thread is waiting. Without it, nothing is
// printed on stdout.
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define WORKERS 3

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work = PTHREAD_COND_INITIALIZER;
static int stopping, jobs, waiting;

__attribute__((noipa)) int wait_for_work(void) {
    pthread_mutex_lock(&lock);
    waiting++;
    while (!stopping && jobs == 0) pthread_cond_wait(&work, &lock);
    waiting--;
    int got = jobs > 0;
    if (got) jobs--;
    pthread_mutex_unlock(&lock);
    return got;
}

static void *worker(void *arg) {
    (void)arg;
    while (wait_for_work()) {
    }
    return NULL;
}

static void *ticker(void *arg) {
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&lock);
        int stop = stopping;
        pthread_mutex_unlock(&lock);
        if (stop) return NULL;
        usleep(50 * 1000);
    }
}

int main(int argc, char **argv) {
    int ready_mode = argc > 1 && strcmp(argv[1], "--ready") == 0;
    pthread_setname_np(pthread_self(), "main");
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, NULL);

    pthread_t t[WORKERS + 1];
    for (int i = 0; i < WORKERS; i++) {
        char name[16];
        snprintf(name, sizeof name, "worker-%d", i);
        pthread_create(&t[i], NULL, worker, NULL);
        pthread_setname_np(t[i], name);
    }
    pthread_create(&t[WORKERS], NULL, ticker, NULL);
    pthread_setname_np(t[WORKERS], "ticker");
    if (ready_mode) {
        for (;;) {
            pthread_mutex_lock(&lock);
            int w = waiting;
            pthread_mutex_unlock(&lock);
            if (w == WORKERS) break;
            usleep(1000);
        }
        printf("ready\n");
        fflush(stdout);
    }
    int sig;
    sigwait(&term, &sig);
    pthread_mutex_lock(&lock);
    stopping = 1;
    pthread_cond_broadcast(&work);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i <= WORKERS; i++) pthread_join(t[i], NULL);
    fprintf(stderr, "clean_shutdown: all threads joined\n");
    return 0;
}
