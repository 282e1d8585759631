// Diagnosis: what an fd is, end to end through stallprobe.
//   tcp-client   reads from a TCP connection whose server (a helper process, "silent-server")
//                accepted it and never answers
//   pipe-reader  reads from a pipe whose writer thread exited without closing its end: the only
//                write end left is a leaked fd of this very process
// Prints server_pid, server_port, client_port, pipe_write_fd, then `ready` (with --ready).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

static int tcp_fd, pipe_fds[2];

__attribute__((noinline)) static void *tcp_client(void *arg) {
    (void)arg;
    char buf[64];
    recv(tcp_fd, buf, sizeof buf, 0); // the server never answers
    return NULL;
}

static void *pipe_writer(void *arg) {
    (void)arg;
    return NULL; // "forgets" to write, and to close pipe_fds[1]
}

__attribute__((noinline)) static void *pipe_reader(void *arg) {
    (void)arg;
    char c;
    if (read(pipe_fds[0], &c, 1) < 0) perror("read");
    return NULL;
}

int main(int argc, char **argv) {
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4) || getsockname(ls, (struct sockaddr *)&a, &len)) return 1;
    pid_t server = fork();
    if (server == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        prctl(PR_SET_NAME, "silent-server");
        int c = accept(ls, NULL, NULL);
        (void)c;
        for (;;) pause();
    }
    close(ls);
    tcp_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(tcp_fd, (struct sockaddr *)&a, sizeof a)) return 1;
    struct sockaddr_in me;
    len = sizeof me;
    getsockname(tcp_fd, (struct sockaddr *)&me, &len);
    if (pipe(pipe_fds)) return 1;

    pthread_t t[3];
    pthread_create(&t[0], NULL, tcp_client, NULL);
    pthread_setname_np(t[0], "tcp-client");
    pthread_create(&t[1], NULL, pipe_writer, NULL);
    pthread_join(t[1], NULL);
    pthread_create(&t[2], NULL, pipe_reader, NULL);
    pthread_setname_np(t[2], "pipe-reader");
    usleep(200000);
    if (argc > 1 && strcmp(argv[1], "--ready") == 0) {
        printf("server_pid=%d\nserver_port=%d\nclient_port=%d\npipe_write_fd=%d\nready\n", server,
               ntohs(a.sin_port), ntohs(me.sin_port), pipe_fds[1]);
        fflush(stdout);
    }
    pthread_join(t[0], NULL);
    return 0;
}
