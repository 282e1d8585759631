/*
 * epoll_client: load generator for epoll_server.c (not a probed target). Opens CONNS
 * connections to 127.0.0.1:PORT, prints `ready`, and after the go byte on stdin keeps one
 * 64-byte request in flight per connection: each echo that comes back triggers the next
 * request (request/response ping-pong). Runs until killed or the server goes away.
 *
 * Usage: epoll_client PORT [CONNS]
 */
#include "bench.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#define MSG 64

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [CONNS]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    int conns = argc > 2 ? atoi(argv[2]) : 8;
    int ep = epoll_create1(0);
    int *fds = calloc((size_t)conns, sizeof(int));
    for (int i = 0; i < conns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)))
            die("connect");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
            die("epoll_ctl");
        fds[i] = fd;
    }
    printf("ready pid=%d conns=%d\n", getpid(), conns);
    fflush(stdout);
    wait_start();
    char req[MSG], buf[4096];
    memset(req, 'x', sizeof(req));
    for (int i = 0; i < conns; i++)
        if (write(fds[i], req, MSG) != MSG)
            die("write");
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(ep, evs, 64, -1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            ssize_t r = read(fd, buf, sizeof(buf));
            if (r <= 0)
                exit(0); /* the server is gone */
            if (write(fd, req, MSG) != MSG)
                exit(0);
        }
    }
}
