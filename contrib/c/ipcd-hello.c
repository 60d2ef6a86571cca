/*
 * ipcd-hello: log one line to ipcd's log socket, then call ping on its
 * control socket and print the reply.  Plain C99 and POSIX, no libraries:
 *
 *     cc -o ipcd-hello ipcd-hello.c
 *     ./ipcd-hello [CONTROL_SOCKET [LOG_SOCKET]]
 *
 * The control socket is the argument, else $IPCD_SOCKET, else
 * /run/ipcd/ipcd.sock; the log socket the second argument, else
 * $IPCD_LOG_SOCKET, else log.sock beside the control socket (as ipcctl).
 *
 * The log socket takes one message per datagram, like /dev/log: here the
 * local syslog form "<PRI>TAG[PID]: MESSAGE" (PRI 14 = user.info).  ipcd
 * learns our real pid and uid from the kernel (SCM_CREDENTIALS) either way.
 * The control socket speaks JSON-RPC 2.0, one JSON value per line.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

static int unix_address(struct sockaddr_un *addr, const char *path)
{
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr->sun_path) {
        fprintf(stderr, "ipcd-hello: socket path too long: %s\n", path);
        return -1;
    }
    strcpy(addr->sun_path, path);
    return 0;
}

static int send_log(const char *path, const char *message)
{
    struct sockaddr_un addr;
    char line[1024];
    int fd, n;

    if (unix_address(&addr, path) < 0)
        return -1;
    n = snprintf(line, sizeof line, "<14>ipcd-hello[%ld]: %s", (long)getpid(), message);
    if (n < 0 || (size_t)n >= sizeof line)
        return -1;
    fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (fd < 0) {
        perror("ipcd-hello: socket");
        return -1;
    }
    if (sendto(fd, line, (size_t)n, 0, (struct sockaddr *)&addr, sizeof addr) < 0) {
        fprintf(stderr, "ipcd-hello: sendto %s: %s\n", path, strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

/* Send one request line, print the one reply line. */
static int call_ping(const char *path)
{
    static const char request[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n";
    struct sockaddr_un addr;
    char reply[4096];
    size_t got = 0, sent = 0;
    int fd;

    if (unix_address(&addr, path) < 0)
        return -1;
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) {
        perror("ipcd-hello: socket");
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        fprintf(stderr, "ipcd-hello: connect %s: %s (is ipcd running?)\n", path, strerror(errno));
        close(fd);
        return -1;
    }
    while (sent < sizeof request - 1) {
        ssize_t n = write(fd, request + sent, sizeof request - 1 - sent);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            perror("ipcd-hello: write");
            close(fd);
            return -1;
        }
        sent += (size_t)n;
    }
    while (got < sizeof reply - 1 && memchr(reply, '\n', got) == NULL) {
        ssize_t n = read(fd, reply + got, sizeof reply - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fprintf(stderr, "ipcd-hello: no reply from %s\n", path);
            close(fd);
            return -1;
        }
        got += (size_t)n;
    }
    close(fd);
    reply[got] = '\0';
    fputs(reply, stdout);
    return strstr(reply, "\"result\"") != NULL ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *control = argc > 1 ? argv[1] : getenv("IPCD_SOCKET");
    const char *log = argc > 2 ? argv[2] : getenv("IPCD_LOG_SOCKET");
    char beside[sizeof ((struct sockaddr_un *)0)->sun_path + 16];

    if (control == NULL || *control == '\0')
        control = "/run/ipcd/ipcd.sock";
    if (log == NULL || *log == '\0') {
        const char *slash = strrchr(control, '/');
        int dir = slash ? (int)(slash - control + 1) : 0;
        snprintf(beside, sizeof beside, "%.*slog.sock", dir, control);
        log = beside;
    }
    if (send_log(log, "hello from C") < 0)
        return 1;
    printf("logged to %s as pid %ld\n", log, (long)getpid());
    fflush(stdout);
    return call_ping(control) < 0 ? 1 : 0;
}
