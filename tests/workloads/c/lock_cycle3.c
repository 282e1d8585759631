// Diagnosis: a three-thread lock-order cycle. cycle-1 holds m1 and wants m2, cycle-2 holds m2
// and wants m3, cycle-3 holds m3 and wants m1. A bystander waits for m1 too but is not part of
// the cycle. Prints the mutex addresses, then `ready` (with --ready).
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t m[3] = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
                               PTHREAD_MUTEX_INITIALIZER};
static pthread_barrier_t all_hold_one;

__attribute__((noinline)) static void want_next(int i) {
    pthread_mutex_lock(&m[(i + 1) % 3]);
}

static void *cycle(void *arg) {
    int i = (int)(long)arg;
    pthread_mutex_lock(&m[i]);
    pthread_barrier_wait(&all_hold_one);
    want_next(i);
    return NULL;
}

static void *bystander(void *arg) {
    (void)arg;
    usleep(200000);
    pthread_mutex_lock(&m[0]);
    return NULL;
}

int main(int argc, char **argv) {
    pthread_barrier_init(&all_hold_one, NULL, 3);
    pthread_t t[4];
    char name[16];
    for (int i = 0; i < 3; i++) {
        pthread_create(&t[i], NULL, cycle, (void *)(long)i);
        snprintf(name, sizeof name, "cycle-%d", i + 1);
        pthread_setname_np(t[i], name);
    }
    pthread_create(&t[3], NULL, bystander, NULL);
    pthread_setname_np(t[3], "bystander");
    usleep(400000);
    if (argc > 1 && strcmp(argv[1], "--ready") == 0) {
        printf("m1=%p\nm2=%p\nm3=%p\nready\n", (void *)&m[0], (void *)&m[1], (void *)&m[2]);
        fflush(stdout);
    }
    pthread_join(t[0], NULL);
    return 0;
}
