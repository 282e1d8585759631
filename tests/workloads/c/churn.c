// Reliability: thread churn. Creates and joins short-lived threads as fast as it can (about
// 10,000/s here, so tids wrap around pid_max and get reused within seconds), while one steady
// thread stays blocked reading a pipe nobody writes to.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static int pipefd[2];

__attribute__((noinline)) static void *steady_reader(void *arg) {
    (void)arg;
    char c;
    for (;;) {
        if (read(pipefd[0], &c, 1) <= 0) break;
    }
    return NULL;
}

static void *short_lived(void *arg) { return arg; }

int main(void) {
    if (pipe(pipefd) != 0) return 1;
    pthread_t steady;
    pthread_create(&steady, NULL, steady_reader, NULL);
    pthread_setname_np(steady, "steady");
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        pthread_t t;
        if (pthread_create(&t, NULL, short_lived, NULL) == 0) pthread_join(t, NULL);
    }
}
