// Reliability: a target that forks a child process 2 s after printing `ready` (so a stallprobe
// attached meanwhile sees the fork); the child blocks reading a pipe nobody writes to (in
// `child_wait`), the parent waits for it in waitpid.
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((noinline)) static void child_wait(int fd) {
    char c;
    while (read(fd, &c, 1) > 0) {
    }
}

int main(int argc, char **argv) {
    int p[2];
    if (pipe(p) != 0) return 1;
    if (argc > 1 && strcmp(argv[1], "--ready") == 0) {
        printf("ready\n");
        fflush(stdout);
    }
    sleep(2);
    pid_t child = fork();
    if (child == 0) {
        close(p[1]);
        child_wait(p[0]);
        return 0;
    }
    fprintf(stderr, "forker: child %d\n", child);
    waitpid(child, NULL, 0);
    return 0;
}
