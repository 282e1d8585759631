/*
 * epoll_server: a TCP echo server on 127.0.0.1 with one server thread doing
 * epoll_wait + read + write (level-triggered, one read and one write per request). The load
 * comes from a separate process, epoll_client.c, so only the server is the probed target.
 * One op = one request echoed. `ready` carries the port the client must connect to.
 *
 * Usage: epoll_server SECS   (protocol: bench.h)
 */
#include "bench.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/socket.h>

static struct counter echoed;
static int lfd, ep;

static void *serve(void *arg)
{
    (void)arg;
    struct epoll_event evs[64];
    char buf[4096];
    for (;;) {
        int n = epoll_wait(ep, evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        uint64_t ops = 0;
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int c = accept(lfd, NULL, NULL);
                if (c < 0)
                    continue;
                int one = 1;
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                struct epoll_event ev = {.events = EPOLLIN, .data.fd = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
                continue;
            }
            ssize_t r = read(fd, buf, sizeof(buf));
            if (r <= 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
                continue;
            }
            if (write(fd, buf, (size_t)r) == r)
                ops++;
        }
        if (ops)
            count_add(&echoed, ops);
    }
    return NULL;
}

static uint64_t total(void) { return atomic_load_explicit(&echoed.v, memory_order_relaxed); }

int main(int argc, char **argv)
{
    double secs = arg_secs(argc, argv);
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 128) ||
        getsockname(lfd, (struct sockaddr *)&a, &alen))
        die("listen");
    ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev))
        die("epoll");
    pthread_t t;
    if (pthread_create(&t, NULL, serve, NULL))
        die("pthread_create");
    printf("ready pid=%d port=%d\n", getpid(), ntohs(a.sin_port));
    fflush(stdout);
    wait_start();
    double s;
    uint64_t ops = measure(secs, total, &s);
    printf("ops=%llu secs=%.6f ops_per_sec=%.1f\n", (unsigned long long)ops, s, ops / s);
    fflush(stdout);
    linger();
}
