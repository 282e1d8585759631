/*
 * udp_send: load generator for udp_recv.c (not a probed target). After the go byte on stdin,
 * sends 64-byte datagrams to 127.0.0.1:PORT as fast as it can, from THREADS threads (default
 * 1). Runs until killed.
 *
 * Usage: udp_send PORT [THREADS]
 */
#include "bench.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

static struct sockaddr_in to;

static void *blast(void *arg)
{
    (void)arg;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        die("socket");
    char msg[64];
    memset(msg, 'x', sizeof(msg));
    go_wait();
    for (;;)
        sendto(fd, msg, sizeof(msg), 0, (struct sockaddr *)&to, sizeof(to));
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [THREADS]\n", argv[0]);
        return 2;
    }
    to.sin_family = AF_INET;
    to.sin_port = htons((uint16_t)atoi(argv[1]));
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    for (int i = 0; i < threads; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, blast, NULL))
            die("pthread_create");
    }
    printf("ready pid=%d threads=%d\n", getpid(), threads);
    fflush(stdout);
    wait_start();
    go_release();
    for (;;)
        pause();
}
