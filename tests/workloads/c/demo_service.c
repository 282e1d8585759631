// The demo for `cargo xtask demo`: a small service that does not shut down.
//
// main      runs the event loop; on SIGTERM it tells the workers to stop and joins them
// worker-1  takes jobs from a queue; stops when asked
// worker-2  its current job reads a reply from an upstream peer that never answers (no
//           timeout), so it never sees the stop request: the service hangs on shutdown
// worker-3  like worker-1
// metrics   publishes counters every 100 ms; stops when asked
//
// Expected verdict after SIGTERM: stalled; flagged: worker-2 (blocked in read on the upstream
// socket, since before SIGTERM) and main (blocked joining worker-2).
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static atomic_int stopping;
static int wake_pipe[2];
static int upstream[2]; // [0]: our end; nobody ever writes to [1]

static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cond = PTHREAD_COND_INITIALIZER;
static int queued_jobs[4]; // per worker (1..3)

static void on_sigterm(int sig) {
    (void)sig;
    atomic_store(&stopping, 1);
    if (write(wake_pipe[1], "x", 1) < 0) { /* nothing to do in a handler */ }
}

__attribute__((noinline)) static int fetch_from_upstream(void) {
    char reply[256];
    // No timeout: if the upstream never answers, this never returns.
    return (int)read(upstream[0], reply, sizeof reply);
}

__attribute__((noinline)) static void handle_job(int worker) {
    if (worker == 2) fetch_from_upstream();
    usleep(1000);
}

static void *worker(void *arg) {
    int id = (int)(long)arg;
    for (;;) {
        pthread_mutex_lock(&queue_lock);
        while (queued_jobs[id] == 0 && !atomic_load(&stopping)) pthread_cond_wait(&queue_cond, &queue_lock);
        if (atomic_load(&stopping)) {
            pthread_mutex_unlock(&queue_lock);
            return NULL;
        }
        queued_jobs[id]--;
        pthread_mutex_unlock(&queue_lock);
        handle_job(id);
    }
}

static void *metrics(void *arg) {
    (void)arg;
    while (!atomic_load(&stopping)) usleep(100000);
    return NULL;
}

__attribute__((noinline)) static void shut_down(pthread_t *workers, int n, pthread_t m) {
    pthread_mutex_lock(&queue_lock);
    pthread_cond_broadcast(&queue_cond);
    pthread_mutex_unlock(&queue_lock);
    pthread_join(m, NULL);
    for (int i = 0; i < n; i++) pthread_join(workers[i], NULL); // hangs on worker-2
}

int main(int argc, char **argv) {
    if (pipe(wake_pipe) != 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, upstream) != 0) return 1;
    signal(SIGTERM, on_sigterm);

    pthread_t workers[3], m;
    char name[16];
    for (int i = 0; i < 3; i++) {
        pthread_create(&workers[i], NULL, worker, (void *)(long)(i + 1));
        snprintf(name, sizeof name, "worker-%d", i + 1);
        pthread_setname_np(workers[i], name);
    }
    pthread_create(&m, NULL, metrics, NULL);
    pthread_setname_np(m, "metrics");

    // One job per worker; worker-2's goes upstream.
    pthread_mutex_lock(&queue_lock);
    for (int i = 1; i <= 3; i++) queued_jobs[i] = 1;
    pthread_cond_broadcast(&queue_cond);
    pthread_mutex_unlock(&queue_lock);

    if (argc > 1 && strcmp(argv[1], "--ready") == 0) {
        puts("ready");
        fflush(stdout);
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = wake_pipe[0]};
    epoll_ctl(ep, EPOLL_CTL_ADD, wake_pipe[0], &ev);
    while (!atomic_load(&stopping)) epoll_wait(ep, &ev, 1, -1);

    shut_down(workers, 3, m);
    return 0;
}
