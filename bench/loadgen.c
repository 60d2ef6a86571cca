/*
 * loadgen: the C load generator for the benchmarks in bench/ (the runners are Python).
 *
 * A Python client would share the machine's two cores with a GIL-bound
 * server and distort what it measures, so the load comes from here: one
 * thread, epoll, no allocation in the hot path.  Each subcommand prints ONE
 * line of JSON with its results on stdout (the runners parse it); errors
 * go to stderr and make the exit status non-zero.
 *
 *   loadgen rpc     --socket P --conns N --seconds S [--request LINE] [--pipeline D]
 *                   [--warmup S] [--check] [--redis]
 *   loadgen connect --socket P --seconds S [--request LINE] [--warmup S] [--drop] [--rate R] [--redis]
 *   loadgen dgram   --socket P --count N [--size B] [--conns K] [--rate R]
 *   loadgen pubsub  --socket P --subscribers N --seconds S [--warmup S] [--redis]
 *   common: --pin CPU (sched_setaffinity before anything else)
 *
 * rpc: each of N connections keeps D requests outstanding (D=1 is a closed
 * loop: send, wait for the reply, send the next); every reply (a line, or
 * with --redis one RESP value) is timed from the send of its request.
 * A reply with "error" (RESP: a '-' reply) counts as an error; --check also
 * counts replies without "result" (RESP: any error) as check failures.
 * --redis speaks RESP to redis-server: the request is a command line split
 * on blanks ("SET k v", "GET k"), so ipcd and redis are driven by the same
 * loop.
 *
 * connect: connect, one request, read its reply, close; in a loop.  With --drop,
 *   close as soon as the request is written, without waiting for the reply (a
 *   client that churns connections: they queue for the server's accept).
 *
 * dgram: K sender processes, each a blocking send() on a connected
 * SOCK_DGRAM socket (as glibc's syslog(3): blocking, so nothing is lost),
 * lines shaped as glibc sends them: "<14>Nov 30 12:00:00 bench[PID]: SEQ ..."
 * padded to B bytes.  start_ns/end_ns are CLOCK_MONOTONIC, the clock that
 * Python's time.monotonic_ns() reads, so a runner can time what follows.
 *
 * pubsub: N subscriber connections subscribe to channel "bench"; then one
 * publisher publishes {"t": <CLOCK_MONOTONIC ns>} in a closed loop; each
 * delivery's latency is its receive time minus t.
 *
 * Latencies go into a log-linear histogram (64 sub-buckets per power of
 * two: under 1.6% error); p50/p99/max are in microseconds.
 *
 * Build: cc -O2 -Wall -Wextra -o bench/loadgen bench/loadgen.c -lpthread
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- small helpers ------------------------------------------------------ */

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        die("out of memory");
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p)
        die("out of memory");
    return p;
}

static const char *find(const char *hay, size_t n, const char *needle)
{
    return memmem(hay, n, needle, strlen(needle));
}

/* ---- latency histogram -------------------------------------------------- */

#define SUB_BITS 7 /* values below 128 ns exact, then 64 sub-buckets per octave */
#define HALF (1u << (SUB_BITS - 1))
#define NBUCKETS ((int)((64 - SUB_BITS + 2) * HALF))

typedef struct {
    uint64_t count[NBUCKETS];
    uint64_t n, max, sum;
} hist_t;

static int msb64(uint64_t v)
{
    int r = 0;
    while (v >>= 1)
        r++;
    return r;
}

static int bucket_of(uint64_t v)
{
    if (v < (1u << SUB_BITS))
        return (int)v;
    int shift = msb64(v) - (SUB_BITS - 1);
    return shift * (int)HALF + (int)(v >> shift);
}

/* The middle of a bucket's range. */
static double bucket_value(int i)
{
    if (i < (int)(1u << SUB_BITS))
        return i;
    int shift = i / (int)HALF - 1;
    uint64_t low = (uint64_t)(i - shift * (int)HALF) << shift;
    return (double)low + (double)(((uint64_t)1 << shift) - 1) / 2.0;
}

static void hist_add(hist_t *h, uint64_t v)
{
    h->count[bucket_of(v)]++;
    h->n++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

/* The q-quantile in microseconds (0 when empty). */
static double hist_q_us(const hist_t *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->n);
    if (rank >= h->n)
        rank = h->n - 1;
    uint64_t seen = 0;
    for (int i = 0; i < NBUCKETS; i++) {
        seen += h->count[i];
        if (seen > rank) {
            double v = bucket_value(i);
            return (v > (double)h->max ? (double)h->max : v) / 1000.0;
        }
    }
    return (double)h->max / 1000.0;
}

static void hist_json(const char *prefix, const hist_t *h)
{
    printf("\"%sp50_us\":%.1f,\"%sp99_us\":%.1f,\"%smax_us\":%.1f,\"%smean_us\":%.1f", prefix,
           hist_q_us(h, 0.50), prefix, hist_q_us(h, 0.99), prefix, (double)h->max / 1000.0, prefix,
           h->n ? (double)h->sum / (double)h->n / 1000.0 : 0.0);
}

/* ---- options ------------------------------------------------------------ */

typedef struct {
    const char *cmd;
    const char *socket;
    const char *request;
    int conns;
    int pipeline;
    int size;
    int subscribers;
    int check;
    int drop;
    int redis;
    int pin;
    long count;
    long rate; /* dgram: datagrams per second, all senders together; 0: as fast as they go */
    double seconds;
    double warmup;
} opts_t;

static void usage(void)
{
    fputs("usage: loadgen rpc     --socket P [--conns N] [--seconds S] [--request LINE] [--pipeline D]\n"
          "                       [--warmup S] [--check] [--redis] [--pin CPU]\n"
          "       loadgen connect --socket P [--seconds S] [--request LINE] [--warmup S] [--drop] [--rate R] [--redis]\n"
          "                       [--pin CPU]\n"
          "       loadgen dgram   --socket P [--count N] [--size B] [--conns K] [--rate R] [--pin CPU]\n"
          "       loadgen pubsub  --socket P [--subscribers N] [--seconds S] [--warmup S] [--redis] [--pin CPU]\n",
          stderr);
    exit(2);
}

static long num(const char *opt, const char *v, long lo, long hi)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || x < lo || x > hi)
        die("%s: expected an integer in [%ld, %ld], not '%s'", opt, lo, hi, v);
    return x;
}

static double fnum(const char *opt, const char *v)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || *end || x < 0)
        die("%s: expected a non-negative number, not '%s'", opt, v);
    return x;
}

static opts_t parse(int argc, char **argv)
{
    opts_t o = {0};
    o.conns = 1;
    o.pipeline = 1;
    o.size = 160;
    o.subscribers = 1;
    o.count = 100000;
    o.seconds = 3;
    o.pin = -1;
    if (argc < 2)
        usage();
    o.cmd = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--check")) {
            o.check = 1;
            continue;
        }
        if (!strcmp(a, "--redis")) {
            o.redis = 1;
            continue;
        }
        if (!strcmp(a, "--drop")) {
            o.drop = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            usage();
        if (i + 1 >= argc)
            die("%s needs a value", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--socket"))
            o.socket = v;
        else if (!strcmp(a, "--request"))
            o.request = v;
        else if (!strcmp(a, "--conns"))
            o.conns = (int)num(a, v, 1, 100000);
        else if (!strcmp(a, "--pipeline"))
            o.pipeline = (int)num(a, v, 1, 100000);
        else if (!strcmp(a, "--size"))
            o.size = (int)num(a, v, 40, 65000);
        else if (!strcmp(a, "--subscribers"))
            o.subscribers = (int)num(a, v, 1, 100000);
        else if (!strcmp(a, "--count"))
            o.count = num(a, v, 1, 1000000000L);
        else if (!strcmp(a, "--rate"))
            o.rate = num(a, v, 1, 1000000000L);
        else if (!strcmp(a, "--pin"))
            o.pin = (int)num(a, v, 0, CPU_SETSIZE - 1);
        else if (!strcmp(a, "--seconds"))
            o.seconds = fnum(a, v);
        else if (!strcmp(a, "--warmup"))
            o.warmup = fnum(a, v);
        else
            die("unknown option %s", a);
    }
    if (!o.socket)
        die("--socket is required");
    if (strlen(o.socket) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        die("socket path too long for AF_UNIX: %s", o.socket);
    return o;
}

static void pin_cpu(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0)
        die("sched_setaffinity(%d): %s", cpu, strerror(errno));
}

/* ---- sockets and wire formats ------------------------------------------- */

static int unix_connect(const char *path, int type)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    for (;;) {
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
            return fd;
        if (errno != EINTR)
            break;
    }
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        die("fcntl: %s", strerror(errno));
}

/* A growable byte buffer. */
typedef struct {
    char *p;
    size_t len, cap;
} buf_t;

static void buf_reserve(buf_t *b, size_t more)
{
    if (b->len + more <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

static void buf_add(buf_t *b, const void *data, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void buf_printf(buf_t *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            die("vsnprintf failed");
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        buf_reserve(b, (size_t)n + 1);
    }
}

/* A command line as a RESP array of bulk strings ("SET k v" -> *3 $3 SET ...). */
static void resp_command(buf_t *out, const char *line)
{
    const char *args[64];
    size_t lens[64];
    int n = 0;
    const char *p = line;
    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        const char *s = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        if (n == 64)
            die("too many words in the redis command");
        args[n] = s;
        lens[n++] = (size_t)(p - s);
    }
    if (n == 0)
        die("empty redis command");
    buf_printf(out, "*%d\r\n", n);
    for (int i = 0; i < n; i++) {
        buf_printf(out, "$%zu\r\n", lens[i]);
        buf_add(out, args[i], lens[i]);
        buf_add(out, "\r\n", 2);
    }
}

/* The request bytes for a command line: JSON lines get their '\n', redis gets RESP. */
static buf_t encode_request(const char *line, int redis)
{
    buf_t b = {0};
    if (redis) {
        resp_command(&b, line);
    } else {
        size_t n = strlen(line);
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        buf_add(&b, line, n);
        buf_add(&b, "\n", 1);
    }
    return b;
}

/* Length of the complete RESP value at p, 0 if incomplete, -1 if malformed. */
static long resp_len(const char *p, size_t n, int depth)
{
    if (n < 3)
        return 0;
    const char *cr = memchr(p, '\r', n);
    if (!cr)
        return 0;
    if ((size_t)(cr - p) + 1 >= n)
        return 0;
    if (cr[1] != '\n' || depth > 8)
        return -1;
    size_t hdr = (size_t)(cr - p) + 2;
    long k;
    switch (p[0]) {
    case '+':
    case '-':
    case ':':
        return (long)hdr;
    case '$':
        k = strtol(p + 1, NULL, 10);
        if (k < 0)
            return (long)hdr;
        if (n < hdr + (size_t)k + 2)
            return 0;
        return (long)(hdr + (size_t)k + 2);
    case '*': {
        k = strtol(p + 1, NULL, 10);
        size_t off = hdr;
        for (long i = 0; i < k; i++) {
            long r = resp_len(p + off, n - off, depth + 1);
            if (r <= 0)
                return r;
            off += (size_t)r;
        }
        return (long)off;
    }
    default:
        return -1;
    }
}

/* Length of the first complete reply in p[0..n): a line, or a RESP value. */
static long frame_len(const char *p, size_t n, int redis)
{
    if (redis)
        return resp_len(p, n, 0);
    const char *nl = memchr(p, '\n', n);
    return nl ? (long)(nl - p) + 1 : 0;
}

static int is_error(const char *p, size_t n, int redis)
{
    return redis ? p[0] == '-' : find(p, n, "\"error\"") != NULL;
}

static int has_result(const char *p, size_t n, int redis)
{
    if (redis) /* not an error, not a nil ($-1, *-1: GET of a missing key) */
        return p[0] != '-' && !(n > 1 && (p[0] == '$' || p[0] == '*') && p[1] == '-');
    return find(p, n, "\"result\"") != NULL;
}

/* The number after "t": in a delivered message; 0 if none. */
static uint64_t stamp_of(const char *p, size_t n)
{
    const char *t = find(p, n, "\"t\":");
    if (!t)
        return 0;
    const char *end = p + n;
    t += 4;
    while (t < end && *t == ' ')
        t++;
    uint64_t v = 0;
    while (t < end && *t >= '0' && *t <= '9')
        v = v * 10 + (uint64_t)(*t++ - '0');
    return v;
}

/* ---- the epoll engine (rpc, pubsub) -------------------------------------- */

enum role { ROLE_RPC, ROLE_SUB, ROLE_PUB };

typedef struct {
    int fd;
    enum role role;
    int subscribed;
    int closed;
    int want_out;
    buf_t in;
    buf_t out;
    size_t out_off;
    uint64_t *sent; /* FIFO of send times of the outstanding requests */
    int q_head, q_len, q_cap;
} conn_t;

typedef struct {
    uint64_t replies, errors, check_failed, closed, protocol;
    uint64_t deliveries, lagged, unstamped, acks;
    hist_t lat;  /* rpc: request latency; pubsub: delivery latency */
    hist_t plat; /* pubsub: publish round trip */
} stats_t;

static int ep = -1;
static volatile sig_atomic_t g_sig_stop, g_sig_reset;
static int g_redis;
static int g_check;
static int g_running = 1;
static int g_measuring;
static stats_t st;
static buf_t g_request;

static void conn_watch(conn_t *c, int out)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | (out ? EPOLLOUT : 0);
    ev.data.ptr = c;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    c->want_out = out;
}

static void conn_close(conn_t *c)
{
    if (c->closed)
        return;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->closed = 1;
    st.closed++;
}

static conn_t *conn_open(const char *path, enum role role, int depth)
{
    conn_t *c = xmalloc(sizeof *c);
    memset(c, 0, sizeof *c);
    c->fd = unix_connect(path, SOCK_STREAM);
    if (c->fd < 0)
        die("connect %s: %s", path, strerror(errno));
    set_nonblock(c->fd);
    c->role = role;
    c->q_cap = depth;
    c->sent = xmalloc(sizeof(uint64_t) * (size_t)depth);
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.ptr = c;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    return c;
}

static void conn_flush(conn_t *c)
{
    while (c->out_off < c->out.len) {
        ssize_t w = write(c->fd, c->out.p + c->out_off, c->out.len - c->out_off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            conn_close(c);
            return;
        }
        c->out_off += (size_t)w;
    }
    if (c->out_off == c->out.len) {
        c->out.len = c->out_off = 0;
        if (c->want_out)
            conn_watch(c, 0);
    } else if (!c->want_out) {
        conn_watch(c, 1);
    }
}

static void conn_queue(conn_t *c, const char *p, size_t n, uint64_t t)
{
    buf_add(&c->out, p, n);
    if (c->q_len < c->q_cap) {
        c->sent[(c->q_head + c->q_len) % c->q_cap] = t;
        c->q_len++;
    }
}

static uint64_t conn_pop(conn_t *c)
{
    if (c->q_len == 0)
        return 0;
    uint64_t t = c->sent[c->q_head];
    c->q_head = (c->q_head + 1) % c->q_cap;
    c->q_len--;
    return t;
}

static void send_rpc(conn_t *c)
{
    conn_queue(c, g_request.p, g_request.len, now_ns());
}

static void send_publish(conn_t *c)
{
    char tmp[256];
    uint64_t t = now_ns();
    int n;
    if (g_redis) {
        char payload[64];
        int pl = snprintf(payload, sizeof payload, "{\"t\":%llu}", (unsigned long long)t);
        n = snprintf(tmp, sizeof tmp, "*3\r\n$7\r\nPUBLISH\r\n$5\r\nbench\r\n$%d\r\n%s\r\n", pl, payload);
    } else {
        n = snprintf(tmp, sizeof tmp,
                     "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"publish\","
                     "\"params\":{\"channel\":\"bench\",\"message\":{\"t\":%llu}}}\n",
                     (unsigned long long)t);
    }
    conn_queue(c, tmp, (size_t)n, t);
}

static void on_frame(conn_t *c, const char *p, size_t n, uint64_t t)
{
    switch (c->role) {
    case ROLE_RPC: {
        uint64_t sent = conn_pop(c);
        if (!g_measuring)
            break;
        st.replies++;
        if (sent)
            hist_add(&st.lat, t - sent);
        if (is_error(p, n, g_redis))
            st.errors++;
        if (g_check && !has_result(p, n, g_redis))
            st.check_failed++;
        break;
    }
    case ROLE_PUB: {
        uint64_t sent = conn_pop(c);
        if (!g_measuring)
            break;
        st.replies++;
        if (sent)
            hist_add(&st.plat, t - sent);
        if (is_error(p, n, g_redis))
            st.errors++;
        break;
    }
    case ROLE_SUB:
        if (!c->subscribed) { /* the reply to subscribe */
            c->subscribed = 1;
            st.acks++;
            if (is_error(p, n, g_redis))
                die("subscribe failed: %.*s", (int)n, p);
            break;
        }
        if (!g_measuring)
            break;
        if (!g_redis && find(p, n, "\"lagged\"")) {
            st.lagged++;
            break;
        }
        uint64_t stamp = stamp_of(p, n);
        if (!stamp) {
            st.unstamped++;
            break;
        }
        st.deliveries++;
        if (t > stamp)
            hist_add(&st.lat, t - stamp);
        break;
    }
}

static void conn_read(conn_t *c)
{
    buf_reserve(&c->in, 65536);
    ssize_t r = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len);
    if (r < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return;
        conn_close(c);
        return;
    }
    if (r == 0) {
        conn_close(c);
        return;
    }
    uint64_t t = now_ns();
    c->in.len += (size_t)r;
    size_t off = 0;
    int replies = 0;
    for (;;) {
        long fl = frame_len(c->in.p + off, c->in.len - off, g_redis);
        if (fl < 0) {
            st.protocol++;
            conn_close(c);
            return;
        }
        if (fl == 0)
            break;
        on_frame(c, c->in.p + off, (size_t)fl, t);
        off += (size_t)fl;
        if (c->role != ROLE_SUB)
            replies++;
    }
    if (off) {
        memmove(c->in.p, c->in.p + off, c->in.len - off);
        c->in.len -= off;
    }
    if (replies && g_running) {
        for (int i = 0; i < replies; i++) {
            if (c->role == ROLE_PUB)
                send_publish(c);
            else
                send_rpc(c);
        }
        conn_flush(c);
    }
}

static void loop_once(int timeout_ms)
{
    struct epoll_event evs[128];
    int n = epoll_wait(ep, evs, 128, timeout_ms);
    if (n < 0) {
        if (errno == EINTR)
            return;
        die("epoll_wait: %s", strerror(errno));
    }
    for (int i = 0; i < n; i++) {
        conn_t *c = evs[i].data.ptr;
        if (c->closed)
            continue;
        if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
            conn_read(c);
        if (!c->closed && (evs[i].events & EPOLLOUT))
            conn_flush(c);
    }
}

/* Run the loop for warmup + seconds; returns the measured seconds. */
static double run_timed(const opts_t *o, conn_t **conns, int nconns)
{
    uint64_t start = now_ns();
    uint64_t measure_at = start + (uint64_t)(o->warmup * 1e9);
    uint64_t end = measure_at + (uint64_t)(o->seconds * 1e9);
    uint64_t measured_from = start;
    g_measuring = o->warmup <= 0;
    for (;;) {
        uint64_t now = now_ns();
        if (g_sig_reset) { /* SIGUSR1: measure from now on */
            g_sig_reset = 0;
            g_measuring = 0;
            measure_at = now;
        }
        if (!g_measuring && now >= measure_at) {
            memset(&st.lat, 0, sizeof st.lat);
            memset(&st.plat, 0, sizeof st.plat);
            st.replies = st.errors = st.check_failed = st.deliveries = st.lagged = st.unstamped = 0;
            g_measuring = 1;
            measured_from = now;
        }
        if (now >= end || g_sig_stop)
            break;
        int open = 0;
        for (int i = 0; i < nconns; i++)
            open += !conns[i]->closed;
        if (!open)
            break;
        uint64_t left_ms = (end - now) / 1000000u + 1;
        loop_once(left_ms < 100 ? (int)left_ms : 100);
    }
    g_running = 0;
    return (double)(now_ns() - measured_from) / 1e9;
}

static void print_common(const char *mode, const opts_t *o)
{
    printf("{\"mode\":\"%s\",\"protocol\":\"%s\",\"socket\":\"%s\",", mode, o->redis ? "redis" : "jsonrpc",
           o->socket);
}

static int cmd_rpc(const opts_t *o)
{
    const char *req = o->request ? o->request : (o->redis ? "PING" : "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}");
    g_request = encode_request(req, o->redis);
    conn_t **conns = xmalloc(sizeof(conn_t *) * (size_t)o->conns);
    for (int i = 0; i < o->conns; i++)
        conns[i] = conn_open(o->socket, ROLE_RPC, o->pipeline);
    for (int i = 0; i < o->conns; i++) {
        for (int d = 0; d < o->pipeline; d++)
            send_rpc(conns[i]);
        conn_flush(conns[i]);
    }
    double secs = run_timed(o, conns, o->conns);
    print_common("rpc", o);
    printf("\"conns\":%d,\"pipeline\":%d,\"seconds\":%.3f,\"requests\":%llu,\"requests_per_s\":%.1f,", o->conns,
           o->pipeline, secs, (unsigned long long)st.replies, (double)st.replies / secs);
    hist_json("", &st.lat);
    printf(",\"errors\":%llu,\"check_failed\":%llu,\"closed\":%llu,\"protocol_errors\":%llu}\n",
           (unsigned long long)st.errors, (unsigned long long)st.check_failed, (unsigned long long)st.closed,
           (unsigned long long)st.protocol);
    return 0; /* closed connections and protocol errors are in the results */
}

static int cmd_pubsub(const opts_t *o)
{
    buf_t sub = {0};
    if (o->redis)
        resp_command(&sub, "SUBSCRIBE bench");
    else
        buf_printf(&sub, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"subscribe\",\"params\":{\"channels\":[\"bench\"]}}\n");
    int n = o->subscribers + 1;
    conn_t **conns = xmalloc(sizeof(conn_t *) * (size_t)n);
    for (int i = 0; i < o->subscribers; i++) {
        conns[i] = conn_open(o->socket, ROLE_SUB, 1);
        buf_add(&conns[i]->out, sub.p, sub.len);
        conn_flush(conns[i]);
    }
    uint64_t deadline = now_ns() + 10000000000ull;
    while (st.acks < (uint64_t)o->subscribers) {
        if (now_ns() > deadline)
            die("only %llu of %d subscribers were acknowledged in 10 s", (unsigned long long)st.acks,
                o->subscribers);
        if (st.closed)
            die("a subscriber connection was closed by the server");
        loop_once(100);
    }
    conn_t *pub = conns[o->subscribers] = conn_open(o->socket, ROLE_PUB, 1);
    send_publish(pub);
    conn_flush(pub);
    double secs = run_timed(o, conns, n);
    print_common("pubsub", o);
    printf("\"subscribers\":%d,\"seconds\":%.3f,\"publishes\":%llu,\"publishes_per_s\":%.1f,"
           "\"deliveries\":%llu,\"deliveries_per_s\":%.1f,",
           o->subscribers, secs, (unsigned long long)st.replies, (double)st.replies / secs,
           (unsigned long long)st.deliveries, (double)st.deliveries / secs);
    hist_json("", &st.lat);
    printf(",");
    hist_json("publish_", &st.plat);
    printf(",\"errors\":%llu,\"lagged\":%llu,\"unstamped\":%llu,\"closed\":%llu,\"protocol_errors\":%llu}\n",
           (unsigned long long)st.errors, (unsigned long long)st.lagged, (unsigned long long)st.unstamped,
           (unsigned long long)st.closed, (unsigned long long)st.protocol);
    return 0;
}

/* ---- connect: a connection per request ----------------------------------- */

static int cmd_connect(const opts_t *o)
{
    const char *req = o->request ? o->request : (o->redis ? "PING" : "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}");
    buf_t r = encode_request(req, o->redis);
    buf_t in = {0};
    buf_reserve(&in, 65536);
    uint64_t start = now_ns();
    uint64_t measure_at = start + (uint64_t)(o->warmup * 1e9);
    uint64_t end = measure_at + (uint64_t)(o->seconds * 1e9);
    uint64_t measured_from = start;
    uint64_t conns = 0, errors = 0, failed = 0, streak = 0;
    hist_t *lat = xmalloc(sizeof *lat);
    memset(lat, 0, sizeof *lat);
    int measuring = o->warmup <= 0;
    double per_ns = (double)o->rate / 1e9; /* --rate: connections per second, paced */
    uint64_t begun = 0;
    for (;;) {
        while (per_ns > 0 && (double)(now_ns() - start) * per_ns < (double)begun && !g_sig_stop) {
            struct timespec pause = {0, 100000};
            nanosleep(&pause, NULL);
        }
        begun++;
        uint64_t t0 = now_ns();
        if (!measuring && t0 >= measure_at) {
            measuring = 1;
            measured_from = t0;
            conns = errors = failed = 0;
            memset(lat, 0, sizeof *lat);
        }
        if (t0 >= end || g_sig_stop)
            break;
        int fd = unix_connect(o->socket, SOCK_STREAM);
        int ok = 0;
        if (fd >= 0) {
            size_t off = 0;
            while (off < r.len) {
                ssize_t w = write(fd, r.p + off, r.len - off);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0)
                    break;
                off += (size_t)w;
            }
            in.len = 0;
            if (o->drop && off == r.len)
                ok = 1; /* written: closed without its reply */
            while (off == r.len && !o->drop) {
                buf_reserve(&in, 4096);
                ssize_t got = read(fd, in.p + in.len, in.cap - in.len);
                if (got < 0 && errno == EINTR)
                    continue;
                if (got <= 0)
                    break;
                in.len += (size_t)got;
                long fl = frame_len(in.p, in.len, o->redis);
                if (fl < 0)
                    break;
                if (fl > 0) {
                    ok = 1;
                    if (measuring && is_error(in.p, (size_t)fl, o->redis))
                        errors++;
                    break;
                }
            }
            close(fd);
        }
        if (!ok) {
            if (measuring)
                failed++;
            if (++streak >= 1000)
                die("1000 connections in a row failed (last: %s)", strerror(errno));
            continue;
        }
        streak = 0;
        if (measuring) {
            conns++;
            hist_add(lat, now_ns() - t0);
        }
    }
    double secs = (double)(now_ns() - measured_from) / 1e9;
    print_common("connect", o);
    printf("\"seconds\":%.3f,\"connections\":%llu,\"connections_per_s\":%.1f,", secs, (unsigned long long)conns,
           (double)conns / secs);
    hist_json("", lat);
    printf(",\"errors\":%llu,\"failed\":%llu}\n", (unsigned long long)errors, (unsigned long long)failed);
    return 0;
}

/* ---- dgram: blocking senders, as glibc's syslog(3) ------------------------ */

static const char FILLER[] = "GET /api/v1/items?page=17 200 1234 bytes in 0.8 ms from 10.1.2.3 "
                             "user=bench agent=loadgen/1.0 ref=/api/v1/items?page=16 cache=miss ";

static int sender(const opts_t *o, long count, int gate)
{
    int fd = unix_connect(o->socket, SOCK_DGRAM);
    if (fd < 0) {
        fprintf(stderr, "loadgen: connect %s: %s\n", o->socket, strerror(errno));
        return 2;
    }
    char *msg = xmalloc((size_t)o->size + 64);
    int head = snprintf(msg, 64, "<14>Nov 30 12:00:00 bench[%d]: ", (int)getpid());
    char go;
    while (read(gate, &go, 1) < 0 && errno == EINTR) {
    }
    double per_ns = (double)o->rate / o->conns / 1e9; /* this sender's share of --rate */
    uint64_t t0 = now_ns();
    for (long i = 0; i < count; i++) {
        while (per_ns > 0 && (double)(now_ns() - t0) * per_ns < (double)i) {
            struct timespec pause = {0, 100000}; /* 0.1 ms: --rate paces, the senders never burst ahead */
            nanosleep(&pause, NULL);
        }
        int n = head + snprintf(msg + head, 24, "%ld ", i);
        while (n < o->size) {
            size_t k = sizeof FILLER - 1;
            if (k > (size_t)(o->size - n))
                k = (size_t)(o->size - n);
            memcpy(msg + n, FILLER, k);
            n += (int)k;
        }
        while (send(fd, msg, (size_t)n, 0) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "loadgen: send: %s (after %ld datagrams)\n", strerror(errno), i);
            return 1;
        }
    }
    close(fd);
    return 0;
}

static int cmd_dgram(const opts_t *o)
{
    int k = o->conns;
    int gate[2];
    if (pipe(gate) < 0)
        die("pipe: %s", strerror(errno));
    pid_t *pids = xmalloc(sizeof(pid_t) * (size_t)k);
    fflush(stdout);
    for (int i = 0; i < k; i++) {
        long share = o->count / k + (i < o->count % k ? 1 : 0);
        pids[i] = fork();
        if (pids[i] < 0)
            die("fork: %s", strerror(errno));
        if (pids[i] == 0) {
            close(gate[1]);
            _exit(sender(o, share, gate[0]));
        }
    }
    close(gate[0]);
    uint64_t start = now_ns();
    close(gate[1]); /* every sender's read returns 0: go */
    int failed = 0;
    for (int i = 0; i < k; i++) {
        int status;
        while (waitpid(pids[i], &status, 0) < 0 && errno == EINTR) {
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed++;
    }
    uint64_t end = now_ns();
    double secs = (double)(end - start) / 1e9;
    print_common("dgram", o);
    printf("\"senders\":%d,\"size\":%d,\"sent\":%ld,\"seconds\":%.3f,\"sent_per_s\":%.1f,\"start_ns\":%llu,"
           "\"end_ns\":%llu,\"failed_senders\":%d}\n",
           k, o->size, o->count, secs, (double)o->count / secs, (unsigned long long)start, (unsigned long long)end,
           failed);
    return failed ? 1 : 0;
}

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        g_sig_reset = 1;
    else
        g_sig_stop = 1;
}

int main(int argc, char **argv)
{
    opts_t o = parse(argc, argv);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (o.pin >= 0)
        pin_cpu(o.pin);
    g_redis = o.redis;
    g_check = o.check;
    if (!strcmp(o.cmd, "dgram"))
        return cmd_dgram(&o);
    if (!strcmp(o.cmd, "connect"))
        return cmd_connect(&o);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1: %s", strerror(errno));
    if (!strcmp(o.cmd, "rpc"))
        return cmd_rpc(&o);
    if (!strcmp(o.cmd, "pubsub"))
        return cmd_pubsub(&o);
    usage();
    return 2;
}
