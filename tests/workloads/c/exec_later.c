// Reliability: a target that execs. Prints `ready`, waits 2 s, then execs argv[1] (with the
// remaining arguments). The new image's threads must be reported with symbolized stacks.
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    printf("ready\n");
    fflush(stdout);
    sleep(2);
    execv(argv[1], &argv[1]);
    perror("execv");
    return 1;
}
