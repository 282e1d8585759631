// Foundation workload: threads that block on purpose, built with `gcc -O2` (no frame pointers).
//
//   locker-a, locker-b  lock-order deadlock on two pthread mutexes (forever)
//   udp-recv            recvfrom() on a UDP socket nobody sends to (forever)
//   epoll-wait          epoll_wait() on an epoll set with an idle pipe (forever)
//   short-waits         many short futex waits (condvar timed waits of 1 ms), never blocked long
//
// With the argument `late`, the deadlock forms 1 s after start (so a stallprobe attached before
// sees the calls begin) and recvfrom has a 700 ms timeout (so each call is a slow call).
//
// Prints one `key=value` line per wait object, then `ready`, so tests can check what stallprobe
// reports against the truth.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t mutex_a = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t mutex_b = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t both_hold_one;
static int udp_fd, epoll_fd;
static int late;

__attribute__((noinline)) static void take_second_lock(pthread_mutex_t *m) {
    pthread_mutex_lock(m); // deadlock: the other thread holds it and waits for ours
    pthread_mutex_unlock(m);
}

__attribute__((noinline)) static void *locker_a(void *arg) {
    (void)arg;
    if (late) usleep(1000000);
    pthread_mutex_lock(&mutex_a);
    pthread_barrier_wait(&both_hold_one);
    take_second_lock(&mutex_b);
    return NULL;
}

__attribute__((noinline)) static void *locker_b(void *arg) {
    (void)arg;
    if (late) usleep(1000000);
    pthread_mutex_lock(&mutex_b);
    pthread_barrier_wait(&both_hold_one);
    take_second_lock(&mutex_a);
    return NULL;
}

__attribute__((noinline)) static void wait_for_datagram(int fd) {
    char buf[512];
    struct sockaddr_in from;
    socklen_t len = sizeof from;
    recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
}

__attribute__((noinline)) static void *udp_receiver(void *arg) {
    (void)arg;
    for (;;) wait_for_datagram(udp_fd);
    return NULL;
}

__attribute__((noinline)) static void wait_for_events(int ep) {
    struct epoll_event ev[8];
    epoll_wait(ep, ev, 8, -1);
}

__attribute__((noinline)) static void *epoll_waiter(void *arg) {
    (void)arg;
    for (;;) wait_for_events(epoll_fd);
    return NULL;
}

static pthread_mutex_t tick_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tick_cond = PTHREAD_COND_INITIALIZER;

__attribute__((noinline)) static void short_wait(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&tick_mutex);
    pthread_cond_timedwait(&tick_cond, &tick_mutex, &ts);
    pthread_mutex_unlock(&tick_mutex);
}

__attribute__((noinline)) static void *short_waiter(void *arg) {
    (void)arg;
    for (;;) short_wait();
    return NULL;
}

int main(int argc, char **argv) {
    late = argc > 1 && strcmp(argv[1], "late") == 0;
    pthread_barrier_init(&both_hold_one, NULL, 2);

    udp_fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(udp_fd, (struct sockaddr *)&addr, sizeof addr);
    if (late) {
        struct timeval tv = {.tv_sec = 0, .tv_usec = 700000};
        setsockopt(udp_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }

    int pipefd[2];
    if (pipe(pipefd) != 0) return 1;
    epoll_fd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = pipefd[0]};
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, pipefd[0], &ev);

    pthread_t t[5];
    pthread_create(&t[0], NULL, locker_a, NULL);
    pthread_setname_np(t[0], "locker-a");
    pthread_create(&t[1], NULL, locker_b, NULL);
    pthread_setname_np(t[1], "locker-b");
    pthread_create(&t[2], NULL, udp_receiver, NULL);
    pthread_setname_np(t[2], "udp-recv");
    pthread_create(&t[3], NULL, epoll_waiter, NULL);
    pthread_setname_np(t[3], "epoll-wait");
    pthread_create(&t[4], NULL, short_waiter, NULL);
    pthread_setname_np(t[4], "short-waits");

    printf("mutex_a=%p\nmutex_b=%p\nudp_fd=%d\nepoll_fd=%d\nready\n", (void *)&mutex_a,
           (void *)&mutex_b, udp_fd, epoll_fd);
    fflush(stdout);
    for (int i = 0; i < 5; i++) pthread_join(t[i], NULL);
    return 0;
}
