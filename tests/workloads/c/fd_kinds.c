// fd_kinds — one of each kind of fd, for the `waits` integration test (stallprobe::waits,
// "what is this fd"). It sets them up, prints `key=value` facts and `ready`, then sleeps until
// killed; its helper processes die with it (PR_SET_PDEATHSIG).
//
//   tcp_fd          connected to 127.0.0.1:tcp_server_port; the helper "tcp_server"
//                   (tcp_server_pid) accepted it as tcp_server_fd and never answers
//   pending_fd      connected to 127.0.0.1:pending_port, where "tcp_server" listens
//                   (pending_listen_fd) but never accepts
//   dead_pipe_fd    read end of a pipe whose only writer ("gone_writer") wrote 3 bytes and exited
//   live_pipe_fd    read end of a pipe whose write end is held by "producer" (producer_pid,
//                   producer_fd)
//   unix_fd         one end of a unix stream socketpair; the other end is held by "unix_peer"
//                   (unix_peer_pid, unix_peer_fd)
//   fifo_fd         read end of the FIFO given as argv[2], written by "fifo_writer"
//                   (fifo_writer_pid)
//   epoll_fd        epoll on eventfd_fd (count 0), timerfd_fd (every 20 ms) and listen_fd (TCP
//                   0.0.0.0:listen_port, LISTEN)
//   stale_epoll_fd  epoll on stale_fd, an fd closed since (the eventfd stays open as kept_fd)
//   file_fd         the file argv[1] (100 bytes written), at offset 42
//   signalfd_fd     signalfd for SIGUSR1 and SIGUSR2
//
// Usage: fd_kinds FILE FIFO
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

// In a child: take a name, die with the parent.
static void child_setup(const char *name, pid_t parent) {
    prctl(PR_SET_NAME, name);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
}

// In a child: close every inherited fd above stderr but `keep1` and `keep2`, so that each
// helper holds only what it is described as holding.
static void close_others(int keep1, int keep2) {
    for (int fd = 3; fd < 1024; fd++)
        if (fd != keep1 && fd != keep2) close(fd);
}

static int listener(const char *addr, int *port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) die("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    inet_pton(AF_INET, addr, &a.sin_addr);
    if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) die("bind");
    if (listen(s, 16) != 0) die("listen");
    socklen_t len = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    return s;
}

static int connect_to(int port) {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0) die("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(c, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
    return c;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: fd_kinds FILE FIFO\n");
        return 2;
    }
    pid_t self = getpid();
    prctl(PR_SET_NAME, "fd_kinds");

    // TCP: a server that accepts and never answers, and one that never accepts.
    int srv_port, pend_port;
    int srv = listener("127.0.0.1", &srv_port);
    int pend = listener("127.0.0.1", &pend_port);
    int sync[2];
    if (pipe(sync) != 0) die("pipe");
    pid_t tcp_server = fork();
    if (tcp_server == 0) {
        child_setup("tcp_server", self);
        close(sync[0]);
        int conn = accept(srv, NULL, NULL);
        if (conn < 0) _exit(1);
        int msg[2] = {conn, pend};
        if (write(sync[1], msg, sizeof msg) != sizeof msg) _exit(1);
        close_others(conn, pend);
        for (;;) pause();
    }
    close(sync[1]);
    close(srv);
    close(pend);
    int tcp = connect_to(srv_port);
    int pending = connect_to(pend_port);
    int server_fds[2];
    if (read(sync[0], server_fds, sizeof server_fds) != sizeof server_fds) die("sync");
    close(sync[0]);
    struct sockaddr_in me;
    socklen_t len = sizeof me;
    getsockname(tcp, (struct sockaddr *)&me, &len);
    printf("tcp_fd=%d\ntcp_server_pid=%d\ntcp_server_fd=%d\ntcp_server_port=%d\ntcp_client_port=%d\n",
           tcp, tcp_server, server_fds[0], srv_port, ntohs(me.sin_port));
    printf("pending_fd=%d\npending_port=%d\npending_listen_fd=%d\n", pending, pend_port,
           server_fds[1]);

    // A pipe whose only writer exited.
    int dead[2];
    if (pipe(dead) != 0) die("pipe");
    pid_t gone = fork();
    if (gone == 0) {
        child_setup("gone_writer", self);
        close_others(dead[1], -1);
        if (write(dead[1], "bye", 3) != 3) _exit(1);
        _exit(0);
    }
    close(dead[1]);
    waitpid(gone, NULL, 0);
    printf("dead_pipe_fd=%d\ngone_writer_pid=%d\n", dead[0], gone);

    // A pipe with a live writer.
    int live[2];
    if (pipe(live) != 0) die("pipe");
    pid_t producer = fork();
    if (producer == 0) {
        child_setup("producer", self);
        close_others(live[1], -1);
        for (;;) pause();
    }
    close(live[1]);
    printf("live_pipe_fd=%d\nproducer_pid=%d\nproducer_fd=%d\n", live[0], producer, live[1]);

    // A unix socketpair across two processes.
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) die("socketpair");
    pid_t peer = fork();
    if (peer == 0) {
        child_setup("unix_peer", self);
        close_others(sv[1], -1);
        for (;;) pause();
    }
    close(sv[1]);
    printf("unix_fd=%d\nunix_peer_pid=%d\nunix_peer_fd=%d\n", sv[0], peer, sv[1]);

    // A FIFO: we read, a helper writes.
    unlink(argv[2]);
    if (mkfifo(argv[2], 0600) != 0) die("mkfifo");
    int fifo = open(argv[2], O_RDONLY | O_NONBLOCK);
    if (fifo < 0) die("open fifo");
    pid_t fifo_writer = fork();
    if (fifo_writer == 0) {
        child_setup("fifo_writer", self);
        close_others(-1, -1);
        int w = open(argv[2], O_WRONLY);
        if (w < 0) _exit(1);
        if (write(w, "0123456789", 10) != 10) _exit(1);
        for (;;) pause();
    }
    // Wait for the writer's bytes (then it has opened its end).
    for (int i = 0, n = 0; i < 500 && n < 10; i++) {
        if (ioctl(fifo, FIONREAD, &n) != 0) die("FIONREAD");
        if (n < 10) usleep(10000);
    }
    printf("fifo_fd=%d\nfifo_writer_pid=%d\n", fifo, fifo_writer);

    // epoll on an eventfd, a 20 ms timerfd and a listening socket.
    int efd = eventfd(0, 0);
    int tfd = timerfd_create(CLOCK_MONOTONIC, 0);
    int lport;
    int lsock = listener("0.0.0.0", &lport);
    struct itimerspec its = {.it_interval = {0, 20000000}, .it_value = {0, 20000000}};
    if (efd < 0 || tfd < 0 || timerfd_settime(tfd, 0, &its, NULL) != 0) die("eventfd/timerfd");
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.fd = efd;
    epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
    ev.data.fd = tfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
    ev.data.fd = lsock;
    epoll_ctl(ep, EPOLL_CTL_ADD, lsock, &ev);
    printf("epoll_fd=%d\neventfd_fd=%d\ntimerfd_fd=%d\nlisten_fd=%d\nlisten_port=%d\n", ep, efd,
           tfd, lsock, lport);

    // An epoll whose registered fd was closed while the file stays open under another fd
    // (the item stays registered, under the old number).
    int kept = eventfd(0, 0);
    int dupd = dup(kept);
    int stale_ep = epoll_create1(0);
    ev.events = EPOLLIN;
    ev.data.fd = dupd;
    epoll_ctl(stale_ep, EPOLL_CTL_ADD, dupd, &ev);
    close(dupd);
    printf("stale_epoll_fd=%d\nstale_fd=%d\nkept_fd=%d\n", stale_ep, dupd, kept);

    // A regular file at offset 42.
    int file = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (file < 0) die("open file");
    char buf[100];
    memset(buf, 'x', sizeof buf);
    if (write(file, buf, sizeof buf) != sizeof buf) die("write file");
    lseek(file, 42, SEEK_SET);
    printf("file_fd=%d\n", file);

    // A signalfd for SIGUSR1 and SIGUSR2.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, 0);
    if (sfd < 0) die("signalfd");
    printf("signalfd_fd=%d\n", sfd);

    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
