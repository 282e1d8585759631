/*
 * mutex: a work queue protected by one pthread mutex and one condition variable, with 8 worker
 * threads contending for it. Each worker takes an item (waiting on the condvar while the queue
 * is empty), does a little work on it outside the lock, and queues a follow-up item. Only 4
 * items circulate among the 8 workers, so at any time some sleep on the condvar and the mutex
 * is contended: pthread's futex waits and wakes on both, as in a real thread-pool queue
 * (about 0.3 futex calls per item here). One op = one item processed. WORKERS, ITEMS and WORK
 * can be changed with -D for experiments.
 *
 * The queue has two modes (docs/design.md, "Measurements"): in the fast one the threads on the
 * CPUs pass items without sleeping; in the slow one (a lock convoy) most hand-offs put a thread
 * to sleep on the mutex or the condvar and wake another. The result line says which, without
 * perturbing the run: the process's voluntary and involuntary context switches per 1,000 items
 * in the window (`vcsw_per_kop`, `ivcsw_per_kop`, from getrusage), the mutex acquisitions that
 * found it held (`contended_per_kop`: a trylock first, which is the lock's own fast path) and
 * the condvar waits (`condwait_per_kop`).
 *
 * Usage: mutex SECS   (protocol: bench.h)
 */
#include "bench.h"

#include <pthread.h>
#include <sys/resource.h>

#ifndef WORKERS
#define WORKERS 8
#endif
#ifndef ITEMS
#define ITEMS 4
#endif
#define QCAP 64
/* Work per item outside the lock, in multiply-add steps (~0.4 us at 256). With much less,
 * throughput swings 2x from run to run with how the 8 threads happen to share the 2 CPUs. */
#ifndef WORK
#define WORK 256
#endif

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t nonempty = PTHREAD_COND_INITIALIZER;
static uint64_t queue[QCAP];
static unsigned head, len;
static struct counter done[WORKERS], contended[WORKERS], condwaits[WORKERS];

/* pthread_mutex_lock, counting the acquisitions that find the mutex held. */
static void lock_counted(struct counter *c)
{
    if (pthread_mutex_trylock(&lock) != 0) {
        count_add(c, 1);
        pthread_mutex_lock(&lock);
    }
}

/* The work on one item, outside the lock. */
static uint64_t work(uint64_t x)
{
    for (int i = 0; i < WORK; i++)
        x = x * 6364136223846793005ull + 1442695040888963407ull;
    return x;
}

static void *worker(void *arg)
{
    struct counter *mine = arg;
    size_t me = (size_t)(mine - done);
    go_wait();
    for (;;) {
        lock_counted(&contended[me]);
        while (len == 0) {
            count_add(&condwaits[me], 1);
            pthread_cond_wait(&nonempty, &lock);
        }
        uint64_t item = queue[head];
        head = (head + 1) % QCAP;
        len--;
        pthread_mutex_unlock(&lock);

        item = work(item);

        lock_counted(&contended[me]);
        queue[(head + len) % QCAP] = item;
        len++;
        pthread_cond_signal(&nonempty);
        pthread_mutex_unlock(&lock);
        count_add(mine, 1);
    }
    return NULL;
}

static uint64_t sum(struct counter *c)
{
    uint64_t t = 0;
    for (int i = 0; i < WORKERS; i++)
        t += atomic_load_explicit(&c[i].v, memory_order_relaxed);
    return t;
}

static uint64_t total(void) { return sum(done); }

int main(int argc, char **argv)
{
    double secs = arg_secs(argc, argv);
    for (uint64_t i = 0; i < ITEMS; i++)
        queue[len++] = i + 1;
    for (int i = 0; i < WORKERS; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, &done[i]))
            die("pthread_create");
    }
    printf("ready pid=%d threads=%d\n", getpid(), WORKERS);
    fflush(stdout);
    wait_start();
    go_release();
    struct rusage r0, r1;
    sleep_ns(WARMUP_NS);
    getrusage(RUSAGE_SELF, &r0);
    uint64_t k0 = sum(contended), w0 = sum(condwaits);
    uint64_t c0 = total(), t0 = now_ns();
    sleep_ns((uint64_t)(secs * 1e9));
    uint64_t c1 = total(), t1 = now_ns();
    uint64_t k1 = sum(contended), w1 = sum(condwaits);
    getrusage(RUSAGE_SELF, &r1);
    double s = (double)(t1 - t0) / 1e9;
    uint64_t ops = c1 - c0;
    double kops = ops ? ops / 1000.0 : 1.0;
    printf("ops=%llu secs=%.6f ops_per_sec=%.1f vcsw_per_kop=%.3f ivcsw_per_kop=%.3f "
           "contended_per_kop=%.3f condwait_per_kop=%.3f\n",
           (unsigned long long)ops, s, ops / s, (r1.ru_nvcsw - r0.ru_nvcsw) / kops,
           (r1.ru_nivcsw - r0.ru_nivcsw) / kops, (k1 - k0) / kops, (w1 - w0) / kops);
    fflush(stdout);
    linger();
}
