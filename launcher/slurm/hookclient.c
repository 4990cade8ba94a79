/*
 * hookclient: the Slurm prolog/epilog's socket client without Python.
 *
 *   hookclient prolog|epilog SOCKET_PATTERN PROLOG_TIMEOUT
 *
 * The same work, request bytes, stderr and exit codes as
 * `python -m launcher.slurm.hook --config CONFIG slurm prolog|epilog`
 * (launcher/slurm/prolog.py and epilog.py are the reference; a test runs both
 * against the same socket server and compares): the wrapper slurmd runs
 * (launcher.slurm.conf.hook_script) passes the agent socket pattern (`%n` =
 * the node) and `[slurm] prolog_timeout`, resolved from the config when the
 * hooks were written, so this program reads no config file.
 *
 * Exit 0: admitted (prolog), released or nothing to release (epilog), or not
 * a Beolaunch job. Exit 1 with `beoctl: REASON` on stderr: refused, agent not
 * reachable or no answer in time, a Slurm variable missing. Exit 2: usage.
 *
 * Plain C99 + POSIX, no library but libc: it runs on every job's start on
 * every node, as root, with only SLURM_* in the environment.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE (64 * 1024) /* launcher.node.localproto.MAX_LINE */
#define MARGIN_S 5.0         /* launcher.slurm.prolog.MARGIN_S */
#define TAG "beolaunch:manifest="

/* ---- a growing byte buffer ------------------------------------------- */

typedef struct {
    char *p;
    size_t n, cap;
} buf;

static void die_oom(void) {
    fputs("beoctl: out of memory\n", stderr);
    exit(1);
}

static void put(buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) die_oom();
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

static void putf(buf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* ---- failing the way the Python hook does ---------------------------- */

static void fail(const char *message) {
    fprintf(stderr, "beoctl: %s\n", message);
    exit(1);
}

/* Python's repr() of an ASCII-ish str: quotes chosen as Python does; control
 * characters escaped; other bytes (non-ASCII) passed as they are. */
static void put_repr(buf *b, const char *s) {
    char q = (strchr(s, '\'') && !strchr(s, '"')) ? '"' : '\'';
    put(b, &q, 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == (unsigned char)q || *c == '\\') {
            put(b, "\\", 1);
            put(b, (const char *)c, 1);
        } else if (*c == '\n') puts_(b, "\\n");
        else if (*c == '\r') puts_(b, "\\r");
        else if (*c == '\t') puts_(b, "\\t");
        else if (*c < 0x20 || *c == 0x7f) putf(b, "\\x%02x", *c);
        else put(b, (const char *)c, 1);
    }
    put(b, &q, 1);
}

/* HookEnvironmentError(name, value) */
static void fail_env(const char *name, const char *value) {
    buf m = {0};
    putf(&m, "$%s is ", name);
    if (value) put_repr(&m, value);
    else puts_(&m, "unset");
    puts_(&m, ": run by slurmd only");
    fail(m.p);
}

/* LocalSocketError(path, detail) */
static void fail_socket(const char *path, const char *detail) {
    buf m = {0};
    puts_(&m, "node agent socket ");
    puts_(&m, path);
    puts_(&m, ": ");
    puts_(&m, detail);
    fail(m.p);
}

/* ---- the job's environment ------------------------------------------- */

static int all_digits(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return 0;
    return 1;
}

/* A decimal string as Python's int() prints it (leading zeros dropped). */
static const char *canonical_int(const char *s) {
    while (s[0] == '0' && s[1]) s++;
    return s;
}

static const char *env_int(const char *name) {
    const char *v = getenv(name);
    if (!v || !all_digits(v)) fail_env(name, v);
    return canonical_int(v);
}

static const char *env_str(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) fail_env(name, v);
    return v;
}

static int is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

/* prolog.MANIFEST_RE.search: the first TAG followed by exactly 64 hex digits. */
static int manifest_of(const char *comment, char out[65]) {
    if (!comment) return 0;
    for (const char *at = strstr(comment, TAG); at; at = strstr(at + 1, TAG)) {
        const char *h = at + strlen(TAG);
        int i = 0;
        while (i < 64 && is_hex(h[i])) i++;
        if (i == 64 && !is_hex(h[64])) {
            memcpy(out, h, 64);
            out[64] = '\0';
            return 1;
        }
    }
    return 0;
}

/* ---- JSON out: json.dumps(ensure_ascii=True) of a str ------------------ */

static void put_u(buf *b, unsigned cp) { putf(b, "\\u%04x", cp); }

/* Length of the valid UTF-8 sequence at s (strict: no overlongs, surrogates or
 * > U+10FFFF), 0 when it is not one; its code point in *cp. */
static int utf8_seq(const unsigned char *s, unsigned *cp) {
    unsigned c = s[0];
    int n;
    unsigned lo = 0x80, hi = 0xbf;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        *cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        *cp = c & 0x0f;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        *cp = c & 0x07;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else {
        return 0;
    }
    for (int i = 1; i < n; i++) {
        unsigned d = s[i];
        if (d < lo || d > hi) return 0;
        lo = 0x80;
        hi = 0xbf;
        *cp = (*cp << 6) | (d & 0x3f);
    }
    return n;
}

/* os.environ decodes with surrogateescape: a byte that is not valid UTF-8 is
 * U+DC80..U+DCFF, which json.dumps writes as \udcXX. */
static void put_json_str(buf *b, const char *s) {
    const unsigned char *c = (const unsigned char *)s;
    put(b, "\"", 1);
    while (*c) {
        unsigned cp;
        int n = utf8_seq(c, &cp);
        if (n == 0) {
            put_u(b, 0xdc00 + *c);
            c++;
            continue;
        }
        c += n;
        if (cp == '"') puts_(b, "\\\"");
        else if (cp == '\\') puts_(b, "\\\\");
        else if (cp == '\n') puts_(b, "\\n");
        else if (cp == '\r') puts_(b, "\\r");
        else if (cp == '\t') puts_(b, "\\t");
        else if (cp == '\b') puts_(b, "\\b");
        else if (cp == '\f') puts_(b, "\\f");
        else if (cp >= 0x20 && cp <= 0x7e) {
            char ch = (char)cp;
            put(b, &ch, 1);
        } else if (cp < 0x10000) put_u(b, cp);
        else {
            cp -= 0x10000;
            put_u(b, 0xd800 | (cp >> 10));
            put_u(b, 0xdc00 | (cp & 0x3ff));
        }
    }
    put(b, "\"", 1);
}

/* ---- SLURM_NODELIST: launcher.slurm.parse.expand_hostlist, sorted -------- */

typedef struct {
    char **v;
    size_t n, cap;
    int bad;
} names;

static void add_name(names *l, const char *s, size_t n) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        char **v = realloc(l->v, l->cap * sizeof *v);
        if (!v) die_oom();
        l->v = v;
    }
    char *copy = strndup(s, n);
    if (!copy) die_oom();
    l->v[l->n++] = copy;
}

/* One part `prefix[ranges]suffix` (or a plain name) of the list. */
static void expand_part(names *l, const char *s, size_t n) {
    const char *open = memchr(s, '[', n);
    const char *close = open ? memchr(open, ']', (size_t)(s + n - open)) : NULL;
    if (!open || !close) {
        add_name(l, s, n);
        return;
    }
    const char *item = open + 1;
    while (item <= close) {
        const char *end = memchr(item, ',', (size_t)(close - item));
        if (!end) end = close;
        const char *dash = memchr(item, '-', (size_t)(end - item));
        const char *lo_end = dash ? dash : end;
        size_t lo_len = (size_t)(lo_end - item), hi_len = dash ? (size_t)(end - dash - 1) : 0;
        int ok = lo_len > 0 && lo_len <= 18 && hi_len <= 18;
        for (const char *d = item; ok && d < lo_end; d++) ok = *d >= '0' && *d <= '9';
        for (const char *d = dash ? dash + 1 : end; ok && d < end; d++) ok = *d >= '0' && *d <= '9';
        if (!ok) {
            l->bad = 1;
            return;
        }
        unsigned long long lo = strtoull(item, NULL, 10);
        unsigned long long hi = hi_len ? strtoull(dash + 1, NULL, 10) : lo;
        if (hi >= lo && hi - lo > 1000000) { /* a list no node agent accepts anyway */
            l->bad = 1;
            return;
        }
        for (unsigned long long i = lo; i <= hi && hi >= lo; i++) {
            buf name = {0};
            put(&name, s, (size_t)(open - s));
            putf(&name, "%0*llu", (int)lo_len, i);
            put(&name, close + 1, (size_t)(s + n - close - 1));
            add_name(l, name.p, name.n);
            free(name.p);
            if (i == hi) break;
        }
        item = end + 1;
    }
}

static int by_bytes(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Python's str.strip(): ASCII whitespace and \x1c-\x1f. */
static int py_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f); }

/* The "nodes" field: a sorted, unique JSON list, or null. */
static void put_nodes(buf *b) {
    const char *text = getenv("SLURM_NODELIST");
    if (!text || !*text) text = getenv("SLURM_JOB_NODELIST");
    if (!text || !*text) {
        puts_(b, "null");
        return;
    }
    while (py_space(*text)) text++;
    size_t len = strlen(text);
    while (len && py_space(text[len - 1])) len--;
    names l = {0};
    /* re.findall(r"[^,\[]+(?:\[[^\]]*\][^,\[]*)*", text) */
    size_t i = 0;
    while (i < len && !l.bad) {
        if (text[i] == ',' || text[i] == '[') {
            i++;
            continue;
        }
        size_t start = i;
        while (i < len && text[i] != ',' && text[i] != '[') i++;
        for (;;) {
            if (i >= len || text[i] != '[') break;
            size_t j = i + 1;
            while (j < len && text[j] != ']') j++;
            if (j >= len) break; /* an unclosed [ ends the part before it */
            i = j + 1;
            while (i < len && text[i] != ',' && text[i] != '[') i++;
        }
        expand_part(&l, text + start, i - start);
    }
    int special = (len == 6 && !strncmp(text, "(null)", 6)) || (len == 4 && !strncmp(text, "None", 4));
    if (l.bad || special || l.n == 0) {
        puts_(b, "null");
        return;
    }
    qsort(l.v, l.n, sizeof *l.v, by_bytes);
    put(b, "[", 1);
    for (size_t k = 0; k < l.n; k++) {
        if (k && !strcmp(l.v[k], l.v[k - 1])) continue;
        if (k) put(b, ",", 1);
        put_json_str(b, l.v[k]);
    }
    put(b, "]", 1);
}

/* ---- the epilog's status: epilog.exit_status ---------------------------- */

static void put_status(buf *b) {
    const char *two = getenv("SLURM_JOB_EXIT_CODE2");
    const char *colon = two ? strchr(two, ':') : NULL;
    if (colon && colon > two && colon[1]) {
        int ok = 1;
        for (const char *d = two; ok && *d; d++) ok = d == colon || (*d >= '0' && *d <= '9');
        if (ok) {
            const char *sig = canonical_int(colon + 1);
            if (strcmp(sig, "0") == 0) {
                buf code = {0};
                put(&code, two, (size_t)(colon - two));
                puts_(b, canonical_int(code.p));
                free(code.p);
            } else {
                putf(b, "%llu", 128ULL + strtoull(sig, NULL, 10));
            }
            return;
        }
    }
    const char *raw = getenv("SLURM_JOB_EXIT_CODE");
    if (raw && all_digits(raw)) {
        unsigned wait = 0; /* only its low 16 bits matter */
        for (const char *d = raw; *d; d++) wait = (wait * 10 + (unsigned)(*d - '0')) & 0xffff;
        putf(b, "%u", (wait & 0x7f) ? 128 + (wait & 0x7f) : (wait >> 8) & 0xff);
        return;
    }
    puts_(b, "0");
}

/* ---- the agent's socket: localproto.request ---------------------------- */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static char timeout_text[64];

static void fail_timeout(const char *path) {
    char m[128];
    snprintf(m, sizeof m, "no answer within %s s", timeout_text);
    fail_socket(path, m);
}

static void fail_errno(const char *path, int err) {
    buf m = {0};
    puts_(&m, strerror(err));
    puts_(&m, "; is the node agent running with this --local-socket?");
    fail_socket(path, m.p);
}

/* Wait until fd is ready for `events`, the deadline bounding it. */
static void await_fd(int fd, short events, double deadline, const char *path) {
    for (;;) {
        double left = deadline - now();
        if (left <= 0) fail_timeout(path);
        struct pollfd p = {fd, events, 0};
        int r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r > 0) return;
        if (r == 0) continue;
        if (errno != EINTR) fail_errno(path, errno);
    }
}

/* Send `req` and return the answer's bytes (up to its newline or EOF). */
static buf exchange(const char *path, const buf *req, double timeout) {
    double deadline = now() + timeout;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    /* as CPython: the path fills sun_path, no NUL needed */
    if (len > sizeof addr.sun_path)
        fail_socket(path, "AF_UNIX path too long; is the node agent running with this --local-socket?");
    memcpy(addr.sun_path, path, len);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) fail_errno(path, errno);
    socklen_t addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    if (connect(fd, (struct sockaddr *)&addr, addrlen) < 0) {
        /* CPython waits on EINPROGRESS only; a full backlog (EAGAIN) fails at once */
        if (errno != EINPROGRESS) fail_errno(path, errno);
        await_fd(fd, POLLOUT, deadline, path);
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) fail_errno(path, err);
    }
    for (size_t sent = 0; sent < req->n;) {
        ssize_t n = send(fd, req->p + sent, req->n - sent, MSG_NOSIGNAL);
        if (n >= 0) sent += (size_t)n;
        else if (errno == EAGAIN || errno == EINTR) await_fd(fd, POLLOUT, deadline, path);
        else fail_errno(path, errno);
    }
    buf data = {0};
    put(&data, "", 0);
    static char chunk[MAX_LINE];
    while (!(data.n && data.p[data.n - 1] == '\n')) {
        await_fd(fd, POLLIN, deadline, path);
        ssize_t n = recv(fd, chunk, sizeof chunk, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            fail_errno(path, errno);
        }
        if (n == 0) break;
        put(&data, chunk, (size_t)n);
        if (data.n > MAX_LINE) fail_socket(path, "the answer is too long");
    }
    close(fd);
    return data;
}

/* ---- JSON in: just enough to read the answer's top-level fields ---------- */

typedef struct {
    const char *s, *end;
    int ok;
} reader;

static void ws(reader *r) {
    while (r->s < r->end && (*r->s == ' ' || *r->s == '\t' || *r->s == '\n' || *r->s == '\r')) r->s++;
}

static unsigned hex4(reader *r) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = r->s < r->end ? *r->s++ : 0;
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else r->ok = 0;
    }
    return v;
}

static void put_utf8(buf *b, unsigned cp) {
    char o[4];
    size_t n;
    if (cp < 0x80) o[0] = (char)cp, n = 1;
    else if (cp < 0x800) o[0] = (char)(0xc0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
    else if (cp < 0x10000)
        o[0] = (char)(0xe0 | cp >> 12), o[1] = (char)(0x80 | ((cp >> 6) & 0x3f)),
        o[2] = (char)(0x80 | (cp & 0x3f)), n = 3;
    else
        o[0] = (char)(0xf0 | cp >> 18), o[1] = (char)(0x80 | ((cp >> 12) & 0x3f)),
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), o[3] = (char)(0x80 | (cp & 0x3f)), n = 4;
    put(b, o, n);
}

/* A JSON string at r->s (past its opening quote) decoded into out (may be NULL). */
static void string_(reader *r, buf *out) {
    while (r->ok) {
        if (r->s >= r->end) {
            r->ok = 0;
            return;
        }
        unsigned char c = (unsigned char)*r->s++;
        if (c == '"') return;
        if (c < 0x20) {
            r->ok = 0;
            return;
        }
        if (c != '\\') {
            if (out) put(out, (const char *)&c, 1);
            continue;
        }
        char e = r->s < r->end ? *r->s++ : 0;
        unsigned cp;
        switch (e) {
        case '"': cp = '"'; break;
        case '\\': cp = '\\'; break;
        case '/': cp = '/'; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            cp = hex4(r);
            if (cp >= 0xd800 && cp < 0xdc00 && r->end - r->s >= 6 && r->s[0] == '\\' && r->s[1] == 'u') {
                reader peek = *r;
                peek.s += 2;
                unsigned lo = hex4(&peek);
                if (peek.ok && lo >= 0xdc00 && lo < 0xe000) {
                    *r = peek;
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                }
            }
            break;
        default: r->ok = 0; return;
        }
        if (out) put_utf8(out, cp);
    }
}

enum kind { K_BAD, K_NULL, K_TRUE, K_FALSE, K_NUM, K_STR, K_ARR, K_OBJ };

static enum kind value(reader *r, buf *str, int depth);

static int literal(reader *r, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(r->end - r->s) < n || strncmp(r->s, word, n)) return r->ok = 0;
    r->s += n;
    return 1;
}

static enum kind value(reader *r, buf *str, int depth) {
    ws(r);
    if (r->s >= r->end || depth > 64) return (enum kind)(r->ok = 0);
    char c = *r->s;
    if (c == '"') {
        r->s++;
        string_(r, str);
        return K_STR;
    }
    if (c == 'n') return literal(r, "null") ? K_NULL : K_BAD;
    if (c == 't') return literal(r, "true") ? K_TRUE : K_BAD;
    if (c == 'f') return literal(r, "false") ? K_FALSE : K_BAD;
    if (c == '[' || c == '{') {
        char close = c == '[' ? ']' : '}';
        r->s++;
        ws(r);
        if (r->s < r->end && *r->s == close) {
            r->s++;
            return c == '[' ? K_ARR : K_OBJ;
        }
        for (;;) {
            if (c == '{') {
                ws(r);
                if (r->s >= r->end || *r->s != '"') return (enum kind)(r->ok = 0);
                r->s++;
                string_(r, NULL);
                ws(r);
                if (r->s >= r->end || *r->s++ != ':') return (enum kind)(r->ok = 0);
            }
            value(r, NULL, depth + 1);
            if (!r->ok) return K_BAD;
            ws(r);
            if (r->s < r->end && *r->s == ',') {
                r->s++;
                continue;
            }
            if (r->s < r->end && *r->s == close) {
                r->s++;
                return c == '[' ? K_ARR : K_OBJ;
            }
            return (enum kind)(r->ok = 0);
        }
    }
    /* a number: -?int frac? exp? */
    const char *start = r->s;
    if (*r->s == '-') r->s++;
    const char *digits = r->s;
    while (r->s < r->end && *r->s >= '0' && *r->s <= '9') r->s++;
    if (r->s == digits) return (enum kind)(r->ok = 0);
    if (r->s < r->end && *r->s == '.') {
        r->s++;
        while (r->s < r->end && *r->s >= '0' && *r->s <= '9') r->s++;
    }
    if (r->s < r->end && (*r->s == 'e' || *r->s == 'E')) {
        r->s++;
        if (r->s < r->end && (*r->s == '+' || *r->s == '-')) r->s++;
        while (r->s < r->end && *r->s >= '0' && *r->s <= '9') r->s++;
    }
    if (str) put(str, start, (size_t)(r->s - start));
    return K_NUM;
}

typedef struct {
    enum kind ok, accepted, error, reason;
    buf error_text, reason_text;
} answer;

/* Parse the whole answer; 0 when it is not JSON, -1 when not an object. */
static int parse_answer(const buf *data, answer *a) {
    reader r = {data->p, data->p + data->n, 1};
    memset(a, 0, sizeof *a);
    ws(&r);
    if (r.s >= r.end) return 0;
    if (*r.s != '{') {
        value(&r, NULL, 0);
        ws(&r);
        return r.ok && r.s == r.end ? -1 : 0;
    }
    r.s++;
    ws(&r);
    if (r.s < r.end && *r.s == '}') {
        r.s++;
    } else {
        for (;;) {
            ws(&r);
            if (r.s >= r.end || *r.s != '"') return 0;
            r.s++;
            buf key = {0};
            put(&key, "", 0);
            string_(&r, &key);
            ws(&r);
            if (!r.ok || r.s >= r.end || *r.s++ != ':') return 0;
            /* a later duplicate key wins, as in json.loads */
            if (!strcmp(key.p, "ok")) a->ok = value(&r, NULL, 1);
            else if (!strcmp(key.p, "accepted")) a->accepted = value(&r, NULL, 1);
            else if (!strcmp(key.p, "error")) {
                a->error_text.n = 0;
                a->error = value(&r, &a->error_text, 1);
            } else if (!strcmp(key.p, "reason")) {
                a->reason_text.n = 0;
                a->reason = value(&r, &a->reason_text, 1);
            } else value(&r, NULL, 1);
            free(key.p);
            if (!r.ok) return 0;
            ws(&r);
            if (r.s < r.end && *r.s == ',') {
                r.s++;
                continue;
            }
            if (r.s < r.end && *r.s == '}') {
                r.s++;
                break;
            }
            return 0;
        }
    }
    ws(&r);
    return r.ok && r.s == r.end ? 1 : 0;
}

/* str(answer.get(field) or default), for a string or a number; Python's
 * truthiness: null, false, "", 0, [] and {} take the default. */
static const char *text_or(enum kind k, buf *text, const char *fallback) {
    if (k == K_STR && text->n) return text->p;
    if (k == K_TRUE) return "True";
    if (k == K_NUM && text->n) {
        int zero = 1;
        for (size_t i = 0; i < text->n; i++)
            if (text->p[i] >= '1' && text->p[i] <= '9') zero = 0;
            else if (text->p[i] == 'e' || text->p[i] == 'E') break;
        if (!zero) return text->p;
    }
    return fallback;
}

/* localproto.request: the answer, ok true; exits with the reason otherwise. */
static answer ask(const char *path, const buf *req, double timeout) {
    buf data = exchange(path, req, timeout);
    answer a;
    int got = parse_answer(&data, &a);
    if (got == 0) fail_socket(path, "the answer is not JSON (the agent closed early?)");
    if (got < 0) fail_socket(path, "the answer is not a JSON object");
    if (a.ok != K_TRUE) fail_socket(path, text_or(a.error, &a.error_text, "refused without a reason"));
    return a;
}

/* ---- main ------------------------------------------------------------- */

static char *socket_path(const char *pattern, const char *node) {
    buf b = {0};
    put(&b, "", 0);
    for (const char *p = pattern; *p;) {
        if (p[0] == '%' && p[1] == 'n') {
            puts_(&b, node);
            p += 2;
        } else {
            put(&b, p, 1);
            p++;
        }
    }
    return b.p;
}

int main(int argc, char **argv) {
    if (argc != 4 || (strcmp(argv[1], "prolog") && strcmp(argv[1], "epilog")) || !all_digits(argv[3])) {
        fputs("usage: hookclient prolog|epilog SOCKET_PATTERN PROLOG_TIMEOUT\n", stderr);
        return 2;
    }
    int prolog = !strcmp(argv[1], "prolog");
    char manifest[65];
    if (!manifest_of(getenv("SLURM_JOB_COMMENT"), manifest)) return 0;
    char *path = socket_path(argv[2], env_str("SLURMD_NODENAME"));
    double timeout = (double)strtol(argv[3], NULL, 10);
    double bound = timeout - MARGIN_S > 1.0 ? timeout - MARGIN_S : 1.0;
    snprintf(timeout_text, sizeof timeout_text, "%g", bound);
    buf req = {0};
    if (!prolog) {
        const char *job = getenv("SLURM_JOB_ID");
        if (!job || !all_digits(job)) fail_env("SLURM_JOB_ID", job && *job ? job : NULL);
        puts_(&req, "{\"op\":\"release\",\"slurm_job\":");
        puts_(&req, canonical_int(job));
        puts_(&req, ",\"status\":");
        put_status(&req);
        puts_(&req, "}\n");
        ask(path, &req, bound);
        return 0;
    }
    const char *job = env_int("SLURM_JOB_ID");
    puts_(&req, "{\"op\":\"admit\",\"slurm_job\":");
    puts_(&req, job);
    puts_(&req, ",\"manifest\":\"");
    puts_(&req, manifest);
    puts_(&req, "\",\"uid\":");
    puts_(&req, env_int("SLURM_JOB_UID"));
    puts_(&req, ",\"gid\":");
    puts_(&req, env_int("SLURM_JOB_GID"));
    puts_(&req, ",\"user\":");
    put_json_str(&req, env_str("SLURM_JOB_USER"));
    puts_(&req, ",\"work_dir\":");
    const char *work = getenv("SLURM_JOB_WORK_DIR");
    if (work && *work) put_json_str(&req, work);
    else puts_(&req, "null");
    puts_(&req, ",\"nodes\":");
    put_nodes(&req);
    /* bound - 0.5: prolog_timeout is whole seconds, so this is always N.5 */
    putf(&req, ",\"timeout\":%.1f}\n", bound - 0.5);
    answer a = ask(path, &req, bound);
    if (a.accepted != K_TRUE) {
        buf m = {0};
        puts_(&m, "slurm job ");
        puts_(&m, job);
        puts_(&m, " refused on this node: ");
        puts_(&m, text_or(a.reason, &a.reason_text, "no reason"));
        fail(m.p);
    }
    return 0;
}
