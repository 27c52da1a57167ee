/*
 * LD_PRELOAD shim for the benchmark's s3s-fs (scripts/s3-server.sh, S3_SERVER_KIND=s3s):
 * sets TCP_NODELAY on every accepted connection. s3s-fs 0.14.1 leaves Nagle's algorithm on
 * and writes GET bodies in 4 KiB pieces, so the last partial segment of a body waits for
 * the client's delayed ACK (about 40 ms on Linux) before it is sent: a stall per GET that no
 * production S3 server has. Built by scripts/s3-server.sh with the system C compiler.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static void nodelay(int fd) {
    int one = 1;
    if (fd >= 0) {
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    if (!real) {
        real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
    }
    int conn = real(fd, addr, len, flags);
    nodelay(conn);
    return conn;
}

int accept(int fd, struct sockaddr *addr, socklen_t *len) {
    static int (*real)(int, struct sockaddr *, socklen_t *);
    if (!real) {
        real = (int (*)(int, struct sockaddr *, socklen_t *))dlsym(RTLD_NEXT, "accept");
    }
    int conn = real(fd, addr, len);
    nodelay(conn);
    return conn;
}
