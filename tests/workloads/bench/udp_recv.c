/*
 * udp_recv: one thread receiving datagrams on 127.0.0.1 with a plain recvfrom() loop. The
 * datagrams come from a separate process, udp_send.c, so only the receiver is the probed
 * target. One op = one datagram received. `ready` carries the port to send to.
 *
 * Usage: udp_recv SECS   (protocol: bench.h)
 */
#include "bench.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

static struct counter received;
static int fd;

static void *receive(void *arg)
{
    (void)arg;
    char buf[2048];
    struct sockaddr_in from;
    for (;;) {
        socklen_t flen = sizeof(from);
        if (recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &flen) > 0)
            count_add(&received, 1);
    }
    return NULL;
}

static uint64_t total(void) { return atomic_load_explicit(&received.v, memory_order_relaxed); }

int main(int argc, char **argv)
{
    double secs = arg_secs(argc, argv);
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    int rcvbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
        getsockname(fd, (struct sockaddr *)&a, &alen))
        die("bind");
    pthread_t t;
    if (pthread_create(&t, NULL, receive, NULL))
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
