/* zbio: the timing and random-read helper of the Linux guest in tests/bench/diskbench.py (built there with
 * `gcc -static -O2 -pthread`, so it runs in a busybox initramfs without a C library).
 *
 *   zbio time LABEL BYTES CMD [ARGS...]
 *       Runs CMD (e.g. busybox dd), waits for it, prints
 *       `zbres LABEL bytes=BYTES ns=ELAPSED status=EXIT` (CLOCK_MONOTONIC around fork/exec/wait). busybox dd
 *       prints no transfer rate and busybox date has no %N, hence this wrapper.
 *   zbio rand LABEL PATH OFFSET LENGTH IO QD MS
 *       QD threads, each with one synchronous pread(2) of IO bytes in flight, at random IO-aligned offsets in
 *       [OFFSET, OFFSET + LENGTH) of PATH opened O_RDONLY|O_DIRECT (no page cache), for MS milliseconds; prints
 *       `zbres LABEL reads=N ns=ELAPSED qd=QD io=IO`. This is what diskbench's random phase does in Zirvium
 *       (QD tasks, one request each, xorshift64 offsets), so both sides keep the same number of requests
 *       in flight.
 *
 * Exit 0 on success, 1 on an I/O error (with a message on stderr), 2 for bad arguments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int parse_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

static int cmd_time(int argc, char **argv) {
    uint64_t bytes;
    if (argc < 5 || parse_u64(argv[3], &bytes)) {
        fprintf(stderr, "usage: zbio time LABEL BYTES CMD [ARGS...]\n");
        return 2;
    }
    uint64_t t0 = now_ns();
    pid_t pid = fork();
    if (pid < 0) {
        perror("zbio: fork");
        return 1;
    }
    if (pid == 0) {
        execvp(argv[4], argv + 4);
        perror("zbio: exec");
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0) {
        perror("zbio: waitpid");
        return 1;
    }
    uint64_t t1 = now_ns();
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    printf("zbres %s bytes=%llu ns=%llu status=%d\n", argv[2], (unsigned long long)bytes,
           (unsigned long long)(t1 - t0), code);
    return code == 0 ? 0 : 1;
}

struct worker {
    int fd;
    uint64_t offset, blocks, io, deadline, seed, reads;
    int error;
    pthread_t thread;
};

static void *rand_reads(void *arg) {
    struct worker *w = arg;
    void *buf;
    if (posix_memalign(&buf, 4096, w->io)) {
        w->error = ENOMEM;
        return NULL;
    }
    uint64_t x = w->seed ? w->seed : 1;
    while (now_ns() < w->deadline) {
        /* xorshift64 (Marsaglia 2003), as diskbench's XorShift. */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        off_t at = (off_t)(w->offset + (x % w->blocks) * w->io);
        ssize_t n = pread(w->fd, buf, w->io, at);
        if (n != (ssize_t)w->io) {
            w->error = n < 0 ? errno : EIO;
            break;
        }
        w->reads++;
    }
    free(buf);
    return NULL;
}

static int cmd_rand(int argc, char **argv) {
    uint64_t offset, length, io, qd, ms;
    if (argc != 9 || parse_u64(argv[4], &offset) || parse_u64(argv[5], &length) || parse_u64(argv[6], &io) ||
        parse_u64(argv[7], &qd) || parse_u64(argv[8], &ms) || io == 0 || io % 512 || length < io || qd < 1 ||
        qd > 64 || ms < 1) {
        fprintf(stderr, "usage: zbio rand LABEL PATH OFFSET LENGTH IO QD MS (IO a multiple of 512, QD 1..64)\n");
        return 2;
    }
    int fd = open(argv[3], O_RDONLY | O_DIRECT);
    if (fd < 0) {
        fprintf(stderr, "zbio: open %s: %s\n", argv[3], strerror(errno));
        return 1;
    }
    struct worker w[64];
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < qd; i++) {
        w[i] = (struct worker){.fd = fd, .offset = offset, .blocks = length / io, .io = io,
                               .deadline = t0 + ms * 1000000u, .seed = 0x2545F4914F6CDD1Dull ^ (i + 1)};
        if (pthread_create(&w[i].thread, NULL, rand_reads, &w[i])) {
            fprintf(stderr, "zbio: pthread_create failed\n");
            return 1;
        }
    }
    uint64_t reads = 0;
    int error = 0;
    for (uint64_t i = 0; i < qd; i++) {
        pthread_join(w[i].thread, NULL);
        reads += w[i].reads;
        if (w[i].error) error = w[i].error;
    }
    uint64_t t1 = now_ns();
    close(fd);
    if (error) {
        fprintf(stderr, "zbio: pread %s: %s\n", argv[3], strerror(error));
        return 1;
    }
    printf("zbres %s reads=%llu ns=%llu qd=%llu io=%llu\n", argv[2], (unsigned long long)reads,
           (unsigned long long)(t1 - t0), (unsigned long long)qd, (unsigned long long)io);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "time") == 0) return cmd_time(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "rand") == 0) return cmd_rand(argc, argv);
    fprintf(stderr, "usage: zbio time LABEL BYTES CMD [ARGS...] | zbio rand LABEL PATH OFFSET LENGTH IO QD MS\n");
    return 2;
}
