// Diagnosis: a priority-inheritance mutex (FUTEX_LOCK_PI). `holder` takes it and sleeps
// forever; `waiter` blocks locking it. A PI futex word carries its owner's tid, so stallprobe
// can say who holds it. Prints holder_tid=N and mutex=0x..., then `ready` (with --ready).
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_mutex_t pi;
static pthread_barrier_t held;
static volatile pid_t holder_tid;

static void *holder(void *arg) {
    (void)arg;
    pthread_mutex_lock(&pi);
    holder_tid = (pid_t)syscall(SYS_gettid);
    pthread_barrier_wait(&held);
    for (;;) pause();
    return NULL;
}

__attribute__((noinline)) static void lock_pi_mutex(void) {
    pthread_mutex_lock(&pi); // blocks: FUTEX_LOCK_PI
    pthread_mutex_unlock(&pi);
}

static void *waiter(void *arg) {
    (void)arg;
    lock_pi_mutex();
    return NULL;
}

int main(int argc, char **argv) {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_INHERIT);
    pthread_mutex_init(&pi, &a);
    pthread_barrier_init(&held, NULL, 2);
    pthread_t h, w;
    pthread_create(&h, NULL, holder, NULL);
    pthread_setname_np(h, "holder");
    pthread_barrier_wait(&held);
    pthread_create(&w, NULL, waiter, NULL);
    pthread_setname_np(w, "waiter");
    if (argc > 1 && strcmp(argv[1], "--ready") == 0) {
        printf("holder_tid=%d\nmutex=%p\nready\n", (int)holder_tid, (void *)&pi);
        fflush(stdout);
    }
    pthread_join(w, NULL);
    return 0;
}
