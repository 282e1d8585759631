// hostile_names — a process that names itself and its files to break the tools that watch it:
// a process name that is not UTF-8, a thread name with a terminal escape, one with a newline
// followed by a GitHub workflow command, one whose 15 bytes cut a multi-byte character, and a
// FIFO whose path holds an escape and a newline. Every thread blocks; on SIGTERM main joins
// them: forever (the process stalls).
//
// Expected: stallprobe keeps the process "alive" (its name is not a reason to think it exited),
// flags the blocked threads, and no output carries a raw ESC or a line starting with `::`.
//
// Prints `fifo=PATH` (escaped as C would print it: %s of the raw bytes is not used) and
// `ready` on stdout once everything is blocked.
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char fifo_path[256];

static void *esc_thread(void *arg) {
    (void)arg;
    pthread_setname_np(pthread_self(), "\x1b[31mred\x1b[0m");
    pthread_mutex_lock(&lock); // held by main: blocks forever
    return NULL;
}

static void *inject_thread(void *arg) {
    (void)arg;
    pthread_setname_np(pthread_self(), "\n::error::pwn");
    int fd = open(fifo_path, O_RDWR); // O_RDWR: opens without a writer, read blocks
    char b;
    if (fd >= 0) read(fd, &b, 1);
    return NULL;
}

static void *cut_thread(void *arg) {
    int *p = arg;
    // 15 bytes: seven two-byte characters and the first byte of an eighth.
    const char *name = "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3";
    pthread_setname_np(pthread_self(), name);
    char b;
    read(p[0], &b, 1); // nobody writes
    return NULL;
}

static void on_term(int sig) { (void)sig; }

int main(void) {
    snprintf(fifo_path, sizeof fifo_path, "/tmp/stallprobe-hostile-%d-\x1b[2J\n::error::fifo",
             getpid());
    unlink(fifo_path);
    if (mkfifo(fifo_path, 0600) != 0) {
        perror("mkfifo");
        return 1;
    }
    prctl(PR_SET_NAME, "\xff\xfe" "bad-utf8");
    pthread_mutex_lock(&lock);
    static int pipefd[2];
    if (pipe(pipefd) != 0) return 1;
    pthread_t t[3];
    pthread_create(&t[0], NULL, esc_thread, NULL);
    pthread_create(&t[1], NULL, inject_thread, NULL);
    pthread_create(&t[2], NULL, cut_thread, pipefd);
    signal(SIGTERM, on_term);
    usleep(300000);
    printf("pid=%d\nready\n", getpid());
    fflush(stdout);
    pause(); // until SIGTERM
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL); // never returns
    unlink(fifo_path);
    return 0;
}
