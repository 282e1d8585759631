// Reliability: a target with many threads (argv[1], default 5000), each blocked on a condition
// variable that is never signalled. Prints `ready` once all are created.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never = PTHREAD_COND_INITIALIZER;

static void *idle_worker(void *arg) {
    (void)arg;
    pthread_mutex_lock(&m);
    for (;;) pthread_cond_wait(&never, &m);
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 5000;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (int i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, idle_worker, NULL) != 0) {
            fprintf(stderr, "pthread_create failed at %d\n", i);
            return 1;
        }
        char name[16];
        snprintf(name, sizeof name, "idle-%d", i);
        pthread_setname_np(t, name);
    }
    printf("threads=%d\nready\n", n);
    fflush(stdout);
    pthread_mutex_lock(&m);
    for (;;) pthread_cond_wait(&never, &m);
}
