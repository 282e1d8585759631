// deadlock — failure 4, lock-order deadlock.
//
// "locker-a" takes mutex_a then mutex_b; "locker-b" takes mutex_b then mutex_a; a barrier makes
// sure each holds its first lock before asking for the second, so they deadlock at once. The
// main thread, renamed "main", blocks SIGTERM everywhere, waits for it with sigwait(), then asks
// the workers to stop and joins locker-a: which never ends.
//
// Expected after SIGTERM + grace: stalled; flagged exactly locker-a, locker-b and main, all
// blocked in futex: the lockers at take_second_lock <- locker_a / locker_b (each waiting on the
// mutex the other holds), main in pthread_join at shutdown_and_join.
//
// `--ready`: print `mutex_a=0x...`, `mutex_b=0x...` and `ready` on stdout once both lockers hold
// their first lock. Without it, nothing is printed on stdout.
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static pthread_mutex_t mutex_a = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t mutex_b = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t both_hold_one;
static volatile int stop_requested; // the lockers would look at it after each transfer

__attribute__((noipa)) void take_second_lock(pthread_mutex_t *m) {
    pthread_mutex_lock(m); // the other thread holds it and waits for ours
    pthread_mutex_unlock(m);
}

__attribute__((noipa)) void *locker_a(void *arg) {
    (void)arg;
    while (!stop_requested) {
        pthread_mutex_lock(&mutex_a);
        pthread_barrier_wait(&both_hold_one);
        take_second_lock(&mutex_b);
        pthread_mutex_unlock(&mutex_a);
    }
    return NULL;
}

__attribute__((noipa)) void *locker_b(void *arg) {
    (void)arg;
    while (!stop_requested) {
        pthread_mutex_lock(&mutex_b);
        pthread_barrier_wait(&both_hold_one);
        take_second_lock(&mutex_a);
        pthread_mutex_unlock(&mutex_b);
    }
    return NULL;
}

__attribute__((noipa)) int shutdown_and_join(pthread_t a, pthread_t b) {
    stop_requested = 1;
    int r = pthread_join(a, NULL); // locker-a never ends
    r |= pthread_join(b, NULL);
    return r;
}

int main(int argc, char **argv) {
    int ready_mode = argc > 1 && strcmp(argv[1], "--ready") == 0;
    pthread_setname_np(pthread_self(), "main");
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, NULL); // inherited by the lockers

    pthread_barrier_init(&both_hold_one, NULL, 3);
    pthread_t a, b;
    pthread_create(&a, NULL, locker_a, NULL);
    pthread_setname_np(a, "locker-a");
    pthread_create(&b, NULL, locker_b, NULL);
    pthread_setname_np(b, "locker-b");
    pthread_barrier_wait(&both_hold_one); // both hold their first lock now
    if (ready_mode) {
        printf("mutex_a=%p\nmutex_b=%p\nready\n", (void *)&mutex_a, (void *)&mutex_b);
        fflush(stdout);
    }
    int sig;
    sigwait(&term, &sig);
    fprintf(stderr, "deadlock: SIGTERM: stopping the workers\n");
    int r = shutdown_and_join(a, b);
    fprintf(stderr, "deadlock: joined (%d)\n", r);
    return 0;
}
