// epoll_woken — control: threads asleep in epoll_wait for a long time, woken by the shutdown
// signal through a self-pipe, exit.
//
// "poller-0" and "poller-1" wait in epoll_wait (no timeout) on an epoll set holding an idle UDP
// socket and the read end of a self-pipe. The SIGTERM handler writes one byte to the pipe: both
// pollers wake, see the stop byte (they never read it, so it stays readable for both) and
// return. The main thread, renamed "main", joins them and returns 0.
//
// Expected: exits within the grace period; verdict clean, exit code 0, nothing flagged,
// process_exited true, exit_code 0.
//
// `--ready`: print `epoll_fd=N` and `ready` on stdout once both pollers are waiting. Without
// it, nothing is printed on stdout.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static int self_pipe[2];
static int epoll_fd, udp_fd;

static void on_sigterm(int sig) {
    (void)sig;
    char b = 'q';
    ssize_t r = write(self_pipe[1], &b, 1); // async-signal-safe wake-up
    (void)r;
}

__attribute__((noipa)) int poll_until_stopped(void) {
    int served = 0;
    for (;;) {
        struct epoll_event ev[4];
        int n = epoll_wait(epoll_fd, ev, 4, -1);
        for (int i = 0; i < n; i++) {
            if (ev[i].data.fd == self_pipe[0]) return served; // stop requested
            char buf[512];
            if (recv(udp_fd, buf, sizeof buf, MSG_DONTWAIT) >= 0) served++;
        }
    }
}

static void *poller(void *arg) {
    (void)arg;
    int served = poll_until_stopped();
    fprintf(stderr, "epoll_woken: poller stopping (%d datagrams served)\n", served);
    return NULL;
}

int main(int argc, char **argv) {
    int ready_mode = argc > 1 && strcmp(argv[1], "--ready") == 0;
    pthread_setname_np(pthread_self(), "main");
    if (pipe(self_pipe) != 0) return 1;
    udp_fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(udp_fd, (struct sockaddr *)&addr, sizeof addr);
    epoll_fd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = self_pipe[0]};
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, self_pipe[0], &ev);
    ev.data.fd = udp_fd;
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, udp_fd, &ev);

    struct sigaction sa = {.sa_handler = on_sigterm, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);

    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        char name[16];
        snprintf(name, sizeof name, "poller-%d", i);
        pthread_create(&t[i], NULL, poller, NULL);
        pthread_setname_np(t[i], name);
    }
    if (ready_mode) {
        usleep(50 * 1000);
        printf("epoll_fd=%d\nready\n", epoll_fd);
        fflush(stdout);
    }
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    fprintf(stderr, "epoll_woken: pollers joined\n");
    return 0;
}
