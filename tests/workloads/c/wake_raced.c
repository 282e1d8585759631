// wake_raced — failure 2, "wake-up raced by other work".
//
// A server thread (the main thread, renamed "server") waits in epoll_wait on two fds: a stop
// eventfd, written by the SIGTERM handler, and a timerfd that fires every 20 ms (the work). Each
// wake serves work first. The stop event only switches the server to "draining": it means to
// exit once a wait finds nothing to do for QUIET_MS (100 ms). The timer fires more often than
// that, so the server is never quiet: after SIGTERM it wakes up again and again, serves a tick,
// and goes back to waiting, forever.
//
// Expected after SIGTERM + grace: stalled; flagged exactly "server", blocked in epoll_wait,
// woke_after_signal > 0, reason "woke N times after SIGTERM ...", stack serve_events.
//
// `--ready`: print `epoll_fd=N`, `stop_fd=N` and `ready` on stdout once the server has served a
// few ticks. Without it, nothing is printed on stdout.
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define TICK_MS 20
#define QUIET_MS 100

static int stop_fd = -1;
static int ready_mode;

static void on_sigterm(int sig) {
    (void)sig;
    uint64_t one = 1;
    ssize_t r = write(stop_fd, &one, sizeof one); // wake the server
    (void)r;
}

static unsigned long ticks;

__attribute__((noipa)) void serve_tick(int tfd) {
    uint64_t expirations;
    if (read(tfd, &expirations, sizeof expirations) == sizeof expirations) ticks += expirations;
}

__attribute__((noipa)) unsigned long serve_events(int ep, int tfd) {
    int draining = 0;
    for (;;) {
        struct epoll_event evs[4];
        int n = epoll_wait(ep, evs, 4, draining ? QUIET_MS : -1);
        if (n == 0 && draining) break; // quiet for QUIET_MS: drained, stop
        if (n < 0) continue;           // EINTR (the handler ran on this thread)
        // Work first.
        for (int i = 0; i < n; i++)
            if (evs[i].data.fd == tfd) serve_tick(tfd);
        for (int i = 0; i < n; i++)
            if (evs[i].data.fd == stop_fd) {
                uint64_t v;
                if (read(stop_fd, &v, sizeof v) == sizeof v && !draining) {
                    draining = 1; // stop once idle... which never happens
                    fprintf(stderr, "wake_raced: stop requested, draining\n");
                }
            }
        if (ready_mode && ticks >= 5) {
            printf("epoll_fd=%d\nstop_fd=%d\nready\n", ep, stop_fd);
            fflush(stdout);
            ready_mode = 0;
        }
    }
    return ticks;
}

int main(int argc, char **argv) {
    ready_mode = argc > 1 && strcmp(argv[1], "--ready") == 0;
    pthread_setname_np(pthread_self(), "server");
    stop_fd = eventfd(0, EFD_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    struct itimerspec its = {.it_interval = {0, TICK_MS * 1000000L}, .it_value = {0, TICK_MS * 1000000L}};
    timerfd_settime(tfd, 0, &its, NULL);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = stop_fd};
    epoll_ctl(ep, EPOLL_CTL_ADD, stop_fd, &ev);
    ev.data.fd = tfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);

    struct sigaction sa = {.sa_handler = on_sigterm, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);

    unsigned long n = serve_events(ep, tfd);
    fprintf(stderr, "wake_raced: stopped after %lu ticks\n", n);
    return 0;
}
