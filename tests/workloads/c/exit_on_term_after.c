// Reliability: ignores SIGTERM's default action and exits argv[1] ms after it, so that the
// exit races with stallprobe's grace expiry and report (target exiting mid-report).
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t got;
static void on_term(int s) { (void)s; got = 1; }

int main(int argc, char **argv) {
    int delay_ms = argc > 1 ? atoi(argv[1]) : 1000;
    signal(SIGTERM, on_term);
    if (argc > 2 && strcmp(argv[2], "--ready") == 0) {
        printf("ready\n");
        fflush(stdout);
    }
    while (!got) pause();
    usleep(delay_ms * 1000);
    return 0;
}
