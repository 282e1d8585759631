// pipe_producer — failure 3, "producer left alone", on a pipe (a call stallprobe does not probe).
//
// The main thread, renamed "producer", writes 512-byte records into a pipe. The "consumer"
// thread reads 10 records and then returns (a bug), leaving the read end open: the pipe fills
// up (64 KiB) and the producer blocks in write() forever. The SIGTERM handler (SA_RESTART, run
// on the producer) only sets `stop_requested`, looked at between records; the kernel restarts
// the write after it.
//
// Expected after SIGTERM + grace: stalled; flagged exactly "producer", state sleeping (write is
// outside the probed calls), syscall write on the pipe, reason "asleep in write ...", stack
// write_record <- produce_records. "consumer" has exited and is not flagged.
//
// `--ready`: print `pipe_write_fd=N` and `ready` on stdout when the consumer is gone and the
// producer is about to fill the pipe. Without it, nothing is printed on stdout.
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define RECORD 512

static volatile sig_atomic_t stop_requested;
static int pipefd[2];

static void on_sigterm(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void *consumer(void *arg) {
    (void)arg;
    char rec[RECORD];
    for (int i = 0; i < 10; i++) {
        size_t got = 0;
        while (got < RECORD) {
            ssize_t n = read(pipefd[0], rec + got, RECORD - got);
            if (n <= 0) return NULL;
            got += n;
        }
    }
    fprintf(stderr, "pipe_producer: consumer: done after 10 records\n");
    return NULL; // the bug: stops reading but the pipe stays open
}

__attribute__((noipa)) int write_record(int fd, const char *rec) {
    size_t put = 0;
    while (put < RECORD) {
        ssize_t n = write(fd, rec + put, RECORD - put); // the pipe is full: blocks forever
        if (n < 0) return -1;
        put += n;
    }
    return 0;
}

__attribute__((noipa)) long produce_records(void) {
    char rec[RECORD];
    long count = 0;
    while (!stop_requested) { // checked between records only
        snprintf(rec, sizeof rec, "record %ld\n", count);
        if (write_record(pipefd[1], rec) < 0) break;
        count++;
    }
    return count;
}

int main(int argc, char **argv) {
    int ready_mode = argc > 1 && strcmp(argv[1], "--ready") == 0;
    pthread_setname_np(pthread_self(), "producer");
    if (pipe(pipefd) != 0) return 1;
    struct sigaction sa = {.sa_handler = on_sigterm, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);

    pthread_t t;
    pthread_create(&t, NULL, consumer, NULL);
    pthread_setname_np(t, "consumer");
    if (ready_mode) {
        // Let the consumer take its 10 records and leave before announcing.
        char rec[RECORD] = "warm-up\n";
        for (int i = 0; i < 10; i++) write_record(pipefd[1], rec);
        pthread_join(t, NULL);
        printf("pipe_write_fd=%d\nready\n", pipefd[1]);
        fflush(stdout);
    }
    long n = produce_records();
    fprintf(stderr, "pipe_producer: wrote %ld records\n", n);
    return 0;
}
