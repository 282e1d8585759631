// handler_blocked — failure 1, "blocked inside a handler".
//
// A single-threaded event loop (the main thread, renamed "event-loop") takes tasks one at a
// time. Every third task is a "fetch": it sends a request to a peer (the other end of a
// socketpair, which nobody ever reads or answers) and read()s the reply with no timeout, so the
// handler never returns. The SIGTERM handler (SA_RESTART) only sets `stop_requested`, which the
// loop checks between tasks: the handler runs on this very thread, the kernel restarts the
// read() after it, and the loop never gets to look at the flag.
//
// Expected after SIGTERM + grace: stalled; flagged exactly "event-loop", blocked in read on the
// socket (it never returned to the program: the restart is not a wake-up), stack
// fetch_reply <- run_task <- event_loop.
//
// `--ready`: print `peer_fd=N` and `ready` on stdout once the loop is about to block.
// Without it, nothing is printed on stdout.
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested;
static int ready_mode;
static int conn[2]; // conn[0]: ours; conn[1]: the peer's end, never read or written

static void on_sigterm(int sig) {
    (void)sig;
    stop_requested = 1; // the loop looks at this between tasks
}

enum task_kind { TASK_TICK, TASK_FETCH };

struct task {
    enum task_kind kind;
    int id;
};

static unsigned long ticks;

__attribute__((noipa)) ssize_t fetch_reply(int fd, char *buf, size_t len) {
    static const char req[] = "GET /status\n";
    if (write(fd, req, sizeof req - 1) < 0) return -1;
    if (ready_mode) {
        printf("peer_fd=%d\nready\n", fd);
        fflush(stdout);
        ready_mode = 0;
    }
    ssize_t n = read(fd, buf, len - 1); // the peer never answers: blocks forever
    if (n >= 0) buf[n] = 0;
    return n;
}

__attribute__((noipa)) int run_task(const struct task *t) {
    char reply[256];
    switch (t->kind) {
    case TASK_TICK:
        ticks++;
        return 0;
    case TASK_FETCH: {
        ssize_t n = fetch_reply(conn[0], reply, sizeof reply);
        if (n <= 0) return -1;
        return reply[0] == 'O' ? 0 : -1;
    }
    }
    return -1;
}

__attribute__((noipa)) int event_loop(void) {
    int done = 0;
    while (!stop_requested) { // the only place the stop request is looked at
        struct task t = {done % 3 == 2 ? TASK_FETCH : TASK_TICK, done};
        if (run_task(&t) < 0) fprintf(stderr, "handler_blocked: task %d failed\n", t.id);
        done++;
    }
    return done;
}

int main(int argc, char **argv) {
    ready_mode = argc > 1 && strcmp(argv[1], "--ready") == 0;
    pthread_setname_np(pthread_self(), "event-loop");
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, conn) != 0) return 1;
    struct sigaction sa = {.sa_handler = on_sigterm, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    int n = event_loop();
    fprintf(stderr, "handler_blocked: stopped after %d tasks\n", n);
    return 0;
}
