// What the scheduler hook (`--hook sched`) counts, against the syscall hooks: threads whose
// probed calls sleep, never sleep, are interrupted and restarted, or are slow. Built with
// `gcc -O2` (no frame pointers).
//
//   ticked      read() on a pipe the main thread writes a byte to every 20 ms: every call sleeps
//   never-sleeps read() of /dev/zero in a loop: probed calls that return at once
//   restarted   (after 1.5 s) one FUTEX_WAIT that never ends; the main thread sends it SIGUSR1
//               every 100 ms (an SA_RESTART handler): the kernel restarts the wait each time
//   slow-recv   recvfrom() with a 700 ms timeout on a socket nobody sends to: each call is slow
//
// Prints `ready` once the threads run.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int tick_pipe[2], udp_fd;
static _Atomic unsigned forever_word;
static _Atomic int handled;

static void on_usr1(int sig) {
    (void)sig;
    atomic_fetch_add(&handled, 1);
}

__attribute__((noinline)) static void wait_for_tick(void) {
    char b;
    if (read(tick_pipe[0], &b, 1) != 1) _exit(3);
}

static void *ticked(void *arg) {
    (void)arg;
    for (;;) wait_for_tick();
    return NULL;
}

static void *never_sleeps(void *arg) {
    (void)arg;
    int fd = open("/dev/zero", O_RDONLY);
    char buf[64];
    for (;;)
        if (read(fd, buf, sizeof buf) != sizeof buf) _exit(4);
    return NULL;
}

__attribute__((noinline)) static void wait_forever(void) {
    while (atomic_load(&forever_word) == 0)
        syscall(SYS_futex, &forever_word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
}

static void *restarted(void *arg) {
    (void)arg;
    struct timespec ts = {.tv_sec = 1, .tv_nsec = 500000000};
    while (nanosleep(&ts, &ts) != 0) {
    }
    wait_forever();
    return NULL;
}

__attribute__((noinline)) static void wait_for_datagram(void) {
    char buf[64];
    recv(udp_fd, buf, sizeof buf, 0);
}

static void *slow_recv(void *arg) {
    (void)arg;
    for (;;) wait_for_datagram();
    return NULL;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    if (pipe(tick_pipe) != 0) return 1;
    udp_fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(udp_fd, (struct sockaddr *)&addr, sizeof addr);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 700000};
    setsockopt(udp_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

    pthread_t t[4];
    pthread_create(&t[0], NULL, ticked, NULL);
    pthread_setname_np(t[0], "ticked");
    pthread_create(&t[1], NULL, never_sleeps, NULL);
    pthread_setname_np(t[1], "never-sleeps");
    pthread_create(&t[2], NULL, restarted, NULL);
    pthread_setname_np(t[2], "restarted");
    pthread_create(&t[3], NULL, slow_recv, NULL);
    pthread_setname_np(t[3], "slow-recv");
    printf("ready\n");
    fflush(stdout);

    struct timespec tick = {.tv_sec = 0, .tv_nsec = 20000000};
    for (unsigned i = 1;; i++) {
        nanosleep(&tick, NULL);
        if (write(tick_pipe[1], "t", 1) != 1) return 2;
        if (i >= 75 && i % 5 == 0) pthread_kill(t[2], SIGUSR1); // from 1.5 s, every 100 ms
    }
}
