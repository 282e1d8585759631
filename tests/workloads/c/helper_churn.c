// helper_churn — a service that runs short-lived helper processes, for the sidecar's long-run
// memory test.
//
// The service ("service") keeps one thread ("steady") blocked reading a pipe nobody writes to
// and, every --every ms, forks a helper ("helper"): the helper blocks in read() on a pipe for
// --hold ms, then exits. Every other helper first execs this binary again (`--helper MS`), as
// a shell-out would. After reaping a helper the service asks the kernel (ns_last_pid, root
// only) to give the next one the same pid, three times out of four: pids are reused at once,
// as on a busy host where pid_max wraps.
//
// On SIGTERM the service stops forking and joins "steady", which never returns: stalled,
// flagged exactly "steady" and "service" (main), never a helper.
//
// `--stats FILE`: rewritten each second with `helpers=N reused=M`.
// Prints `ready` once the first helper has been reaped.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested;
static int steady_pipe[2];

static void on_term(int sig) { (void)sig; stop_requested = 1; }
static void on_alarm(int sig) { (void)sig; }

__attribute__((noipa)) static void *steady_reader(void *arg) {
    (void)arg;
    char c;
    while (read(steady_pipe[0], &c, 1) != 0) {
    }
    return NULL;
}

// Block in read() on a pipe for `ms` (a timer interrupts it), then exit.
__attribute__((noipa)) static int helper_wait(int ms) {
    int p[2];
    if (pipe(p) != 0) return 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm; // no SA_RESTART: the read returns EINTR
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 0}, {ms / 1000, (ms % 1000) * 1000}};
    setitimer(ITIMER_REAL, &it, NULL);
    char c;
    ssize_t n = read(p[0], &c, 1);
    return n < 0 && errno == EINTR ? 0 : 2;
}

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void write_stats(const char *path, long helpers, long reused) {
    if (!path) return;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    fprintf(f, "helpers=%ld reused=%ld\n", helpers, reused);
    fclose(f);
    rename(tmp, path);
}

int main(int argc, char **argv) {
    int every = 20, hold = 60;
    const char *stats = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--helper") && i + 1 < argc) {
            prctl(PR_SET_NAME, "helper");
            return helper_wait(atoi(argv[i + 1]));
        } else if (!strcmp(argv[i], "--every") && i + 1 < argc) {
            every = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--hold") && i + 1 < argc) {
            hold = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--stats") && i + 1 < argc) {
            stats = argv[++i];
        }
    }
    prctl(PR_SET_NAME, "service");
    if (pipe(steady_pipe) != 0) return 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    pthread_t steady;
    pthread_create(&steady, NULL, steady_reader, NULL);
    pthread_setname_np(steady, "steady");

    char hold_arg[16];
    snprintf(hold_arg, sizeof hold_arg, "%d", hold);
    long helpers = 0, reused = 0, last_stats = 0;
    pid_t last = 0;
    while (!stop_requested) {
        if (last > 1 && helpers % 4 != 0) {
            // Ask for the pid just freed (ns_last_pid is the last pid handed out).
            int fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY);
            if (fd >= 0) {
                char b[16];
                int n = snprintf(b, sizeof b, "%d", last - 1);
                if (write(fd, b, n) < 0) {
                }
                close(fd);
            }
        }
        pid_t pid = fork();
        if (pid == 0) {
            if (helpers % 2) {
                execl("/proc/self/exe", argv[0], "--helper", hold_arg, (char *)NULL);
                _exit(3);
            }
            prctl(PR_SET_NAME, "helper");
            _exit(helper_wait(hold));
        }
        if (pid < 0) {
            usleep(every * 1000);
            continue;
        }
        helpers++;
        if (pid == last) reused++;
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR && !stop_requested) {
        }
        last = pid;
        if (helpers == 1) {
            printf("ready\n");
            fflush(stdout);
        }
        if (now_ms() - last_stats >= 1000) {
            write_stats(stats, helpers, reused);
            last_stats = now_ms();
        }
        usleep(every * 1000);
    }
    write_stats(stats, helpers, reused);
    pthread_join(steady, NULL); // never returns: nobody writes to the pipe
    return 0;
}
