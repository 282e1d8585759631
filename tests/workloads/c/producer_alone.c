// producer_alone — failure 3, "producer left alone" (worker-pool variant).
//
// The main thread, renamed "dispatcher", submits jobs into a bounded queue (capacity 4, a mutex
// and two condition variables). Two workers, "worker-0" and "worker-1", each take one job and
// then give up (they return: a bug), so nobody drains the queue. The dispatcher fills it and
// blocks in queue_submit() waiting for room, forever. SIGTERM is blocked in every thread; a
// "sig-watch" thread takes it with sigwait(), sets `stop_requested` (looked at by the dispatcher
// between jobs only) and exits.
//
// Expected after SIGTERM + grace: stalled; flagged exactly "dispatcher", blocked in futex
// (pthread_cond_wait), stack queue_submit <- dispatch_jobs. worker-0, worker-1 and sig-watch
// have exited and are not flagged.
//
// `--ready`: print `queue_cap=4` and `ready` on stdout when the dispatcher is about to wait on a
// full queue with both workers gone. Without it, nothing is printed on stdout.
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#define CAP 4

static volatile int stop_requested;
static int ready_mode;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t not_full, not_empty;
    int items[CAP];
    int head, len;
} queue = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER};

static pthread_barrier_t workers_gone;

__attribute__((noipa)) void queue_submit(int job) {
    pthread_mutex_lock(&queue.lock);
    while (queue.len == CAP) {
        if (ready_mode) {
            pthread_mutex_unlock(&queue.lock);
            pthread_barrier_wait(&workers_gone); // both workers have returned
            printf("queue_cap=%d\nready\n", CAP);
            fflush(stdout);
            ready_mode = 0;
            pthread_mutex_lock(&queue.lock);
            continue;
        }
        pthread_cond_wait(&queue.not_full, &queue.lock); // nobody takes a job: forever
    }
    queue.items[(queue.head + queue.len) % CAP] = job;
    queue.len++;
    pthread_cond_signal(&queue.not_empty);
    pthread_mutex_unlock(&queue.lock);
}

__attribute__((noipa)) int queue_take(void) {
    pthread_mutex_lock(&queue.lock);
    while (queue.len == 0) pthread_cond_wait(&queue.not_empty, &queue.lock);
    int job = queue.items[queue.head];
    queue.head = (queue.head + 1) % CAP;
    queue.len--;
    pthread_cond_signal(&queue.not_full);
    pthread_mutex_unlock(&queue.lock);
    return job;
}

static void *worker(void *arg) {
    int job = queue_take();
    fprintf(stderr, "producer_alone: worker %ld: cannot handle job %d, giving up\n", (long)arg, job);
    if (ready_mode) pthread_barrier_wait(&workers_gone);
    return NULL; // the bug: the worker leaves the pool
}

static void *sig_watch(void *arg) {
    sigset_t *set = arg;
    int sig;
    sigwait(set, &sig);
    stop_requested = 1; // the dispatcher looks at it between jobs
    fprintf(stderr, "producer_alone: SIGTERM: stop requested\n");
    return NULL;
}

__attribute__((noipa)) int dispatch_jobs(void) {
    int submitted = 0;
    while (!stop_requested) {
        queue_submit(submitted);
        submitted++;
    }
    return submitted;
}

int main(int argc, char **argv) {
    ready_mode = argc > 1 && strcmp(argv[1], "--ready") == 0;
    pthread_setname_np(pthread_self(), "dispatcher");
    pthread_barrier_init(&workers_gone, NULL, 3);
    static sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &term, NULL); // inherited by every thread

    pthread_t t;
    pthread_create(&t, NULL, sig_watch, &term);
    pthread_setname_np(t, "sig-watch");
    pthread_detach(t);
    for (long i = 0; i < 2; i++) {
        char name[16];
        snprintf(name, sizeof name, "worker-%ld", i);
        pthread_create(&t, NULL, worker, (void *)i);
        pthread_setname_np(t, name);
        pthread_detach(t);
    }
    int n = dispatch_jobs();
    fprintf(stderr, "producer_alone: dispatched %d jobs\n", n);
    return 0;
}
