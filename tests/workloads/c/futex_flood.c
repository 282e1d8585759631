// Reliability: an event flood. Two threads pass a token through futexes as fast as they can;
// with `--threshold 0` every one of their calls is a "slow call" event, far more than the ring
// buffer holds. stallprobe must keep running and count what it dropped.
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

static atomic_int turn;

static void wait_turn(int me) {
    while (atomic_load(&turn) != me) syscall(SYS_futex, &turn, FUTEX_WAIT_PRIVATE, !me, NULL, NULL, 0);
}

static void *player(void *arg) {
    int me = (int)(long)arg;
    for (;;) {
        wait_turn(me);
        atomic_store(&turn, !me);
        syscall(SYS_futex, &turn, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    }
    return NULL;
}

int main(void) {
    pthread_t a, b;
    pthread_create(&a, NULL, player, (void *)0L);
    pthread_setname_np(a, "ping");
    pthread_create(&b, NULL, player, (void *)1L);
    pthread_setname_np(b, "pong");
    printf("ready\n");
    fflush(stdout);
    pthread_join(a, NULL);
    return 0;
}
