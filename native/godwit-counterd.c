/*
 * godwit-counterd: a tiny HTTP counter service whose only state lives in memory.
 *
 * Contract: `godwit-counterd [--port P] [--bind ADDR]` (defaults 8080 and 0.0.0.0; ADDR is IPv4)
 *   - listens on ADDR:P (SO_REUSEADDR) and prints one line "listening <P>" to stdout once ready;
 *     nothing more is printed per request, so its log does not grow;
 *   - speaks HTTP/1.1 with keep-alive and pipelining: every GET or HEAD request (any path)
 *     increments a counter kept only in memory and is answered `200 OK`, `Content-Type: text/plain`,
 *     `Content-Length`, body "counter <N>\n" (headers only for HEAD); other methods get 405 and do not
 *     count; a request with a body (Content-Length) has the body skipped;
 *   - closes a connection after the reply when the request says `Connection: close` (or is HTTP/1.0
 *     without `Connection: keep-alive`), on a malformed request (after a 400), when the client goes
 *     away, or when a client stops reading while more than OUT_LIMIT bytes of replies are queued;
 *   - one thread, poll(); non-blocking sockets; SIGPIPE ignored; exits 0 on SIGTERM/SIGINT,
 *     2 on a usage error, 1 when it cannot listen.
 * A restored process continues its counter from where it was dumped, which is how tests see that
 * memory (and, with --tcp-established, the connections) survived a migration.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONNS 4096
#define IN_SIZE 16384 /* request headers must fit */
#define OUT_LIMIT (1 << 20)

struct conn {
  int fd;
  char in[IN_SIZE];
  size_t in_len;
  size_t skip_body; /* request body bytes still to discard */
  char *out;
  size_t out_len, out_off, out_cap;
  int close_after_write;
  int peer_eof;
};

static volatile sig_atomic_t stop_requested = 0;
static uint64_t counter = 0;
static struct conn *conns[MAX_CONNS];
static struct pollfd pfds[MAX_CONNS + 1];
static int nconns = 0;

static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

static void usage(void) {
  fprintf(stderr, "usage: godwit-counterd [--port P] [--bind IPV4]\n");
  exit(2);
}

static int out_append(struct conn *c, const char *data, size_t len) {
  if (c->out_len + len > c->out_cap) {
    size_t cap = c->out_cap ? c->out_cap : 1024;
    while (cap < c->out_len + len) cap *= 2;
    char *p = realloc(c->out, cap);
    if (p == NULL) return -1;
    c->out = p;
    c->out_cap = cap;
  }
  memcpy(c->out + c->out_len, data, len);
  c->out_len += len;
  return 0;
}

static void close_conn(int i) {
  struct conn *c = conns[i];
  close(c->fd);
  free(c->out);
  free(c);
  nconns--;
  conns[i] = conns[nconns];
  conns[nconns] = NULL;
}

/* Case-insensitive search for `needle` within [s, s+n). */
static const char *memcasemem(const char *s, size_t n, const char *needle) {
  size_t m = strlen(needle);
  for (size_t i = 0; i + m <= n; i++) {
    if (strncasecmp(s + i, needle, m) == 0) return s + i;
  }
  return NULL;
}

/* Value of header `name` (with the colon, lower case, e.g. "connection:") in the header block, or NULL. */
static const char *header_value(const char *hdrs, size_t n, const char *name, size_t *vlen) {
  const char *p = hdrs;
  const char *end = hdrs + n;
  size_t m = strlen(name);
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (eol == NULL) eol = end;
    if ((size_t)(eol - p) >= m && strncasecmp(p, name, m) == 0) {
      const char *v = p + m;
      while (v < eol && (*v == ' ' || *v == '\t')) v++;
      const char *ve = eol;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      *vlen = (size_t)(ve - v);
      return v;
    }
    p = eol + 1;
  }
  return NULL;
}

static int respond(struct conn *c, int status, const char *reason, int head, int keep_alive) {
  char body[64];
  char hdr[256];
  int blen = 0;
  if (status == 200) blen = snprintf(body, sizeof body, "counter %llu\n", (unsigned long long)counter);
  else blen = snprintf(body, sizeof body, "%s\n", reason);
  int hlen = snprintf(hdr, sizeof hdr,
                      "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                      "Connection: %s\r\n\r\n",
                      status, reason, blen, keep_alive ? "keep-alive" : "close");
  if (out_append(c, hdr, (size_t)hlen) != 0) return -1;
  if (!head && out_append(c, body, (size_t)blen) != 0) return -1;
  if (!keep_alive) c->close_after_write = 1;
  return 0;
}

/* Answers every complete request in c->in. Returns -1 when the connection must close now. */
static int handle_input(struct conn *c) {
  size_t pos = 0;
  while (!c->close_after_write) {
    if (c->skip_body > 0) {
      size_t n = c->in_len - pos < c->skip_body ? c->in_len - pos : c->skip_body;
      pos += n;
      c->skip_body -= n;
      if (c->skip_body > 0) break;
    }
    char *start = c->in + pos;
    size_t avail = c->in_len - pos;
    /* Tolerate empty lines between requests (RFC 9112 section 2.2). */
    while (avail > 0 && (*start == '\r' || *start == '\n')) {
      start++;
      avail--;
      pos++;
    }
    if (avail == 0) break;
    const char *hend = memmem(start, avail, "\r\n\r\n", 4);
    size_t hlen;
    if (hend != NULL) hlen = (size_t)(hend - start) + 4;
    else {
      hend = memmem(start, avail, "\n\n", 2);
      if (hend == NULL) break;
      hlen = (size_t)(hend - start) + 2;
    }
    /* Request line: METHOD SP TARGET SP HTTP/x.y */
    const char *eol = memchr(start, '\n', hlen);
    size_t llen = (size_t)(eol - start);
    const char *sp1 = memchr(start, ' ', llen);
    const char *version = sp1 ? memcasemem(sp1, llen - (size_t)(sp1 - start), " HTTP/1.") : NULL;
    if (sp1 == NULL || version == NULL || version == sp1) {
      if (respond(c, 400, "Bad Request", 0, 0) != 0) return -1;
      break;
    }
    int http10 = version[8] == '0';
    size_t vlen = 0;
    const char *conn_hdr = header_value(eol + 1, hlen - llen - 1, "connection:", &vlen);
    int keep_alive = !http10;
    if (conn_hdr != NULL) {
      if (memcasemem(conn_hdr, vlen, "close") != NULL) keep_alive = 0;
      else if (memcasemem(conn_hdr, vlen, "keep-alive") != NULL) keep_alive = 1;
    }
    const char *cl = header_value(eol + 1, hlen - llen - 1, "content-length:", &vlen);
    if (cl != NULL) {
      char tmp[24];
      size_t n = vlen < sizeof tmp - 1 ? vlen : sizeof tmp - 1;
      memcpy(tmp, cl, n);
      tmp[n] = '\0';
      char *end;
      errno = 0;
      unsigned long long v = strtoull(tmp, &end, 10);
      if (errno != 0 || *end != '\0' || n == 0) {
        if (respond(c, 400, "Bad Request", 0, 0) != 0) return -1;
        break;
      }
      c->skip_body = (size_t)v;
    }
    if (memchr(eol + 1, '\0', hlen - llen - 1) != NULL) {
      if (respond(c, 400, "Bad Request", 0, 0) != 0) return -1;
      break;
    }
    size_t mlen = (size_t)(sp1 - start);
    int is_get = mlen == 3 && memcmp(start, "GET", 3) == 0;
    int is_head = mlen == 4 && memcmp(start, "HEAD", 4) == 0;
    int rc;
    if (is_get || is_head) {
      counter++;
      rc = respond(c, 200, "OK", is_head, keep_alive);
    } else {
      rc = respond(c, 405, "Method Not Allowed", 0, keep_alive);
    }
    if (rc != 0) return -1;
    pos += hlen;
  }
  if (c->close_after_write) {
    c->in_len = 0;
    c->skip_body = 0;
    return 0;
  }
  if (pos > 0) {
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
  }
  if (c->in_len == IN_SIZE) {
    /* Headers larger than the buffer. */
    c->in_len = 0;
    if (respond(c, 431, "Request Header Fields Too Large", 0, 0) != 0) return -1;
  }
  return 0;
}

/* Writes what is queued. Returns -1 when the connection must close. */
static int flush_out(struct conn *c) {
  while (c->out_off < c->out_len) {
    ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      return -1;
    }
    c->out_off += (size_t)n;
  }
  c->out_off = c->out_len = 0;
  return c->close_after_write ? -1 : 0;
}

/* Reads what is available and answers it. Returns -1 when the connection must close now. */
static int read_in(struct conn *c) {
  for (int rounds = 0; rounds < 16; rounds++) {
    char sink[4096];
    char *buf = c->close_after_write ? sink : c->in + c->in_len;
    size_t room = c->close_after_write ? sizeof sink : IN_SIZE - c->in_len;
    ssize_t n = recv(c->fd, buf, room, 0);
    if (n == 0) {
      /* The client is done sending: answer what it asked, then close. */
      c->peer_eof = 1;
      c->close_after_write = 1;
      return 0;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
    }
    if (c->close_after_write) continue; /* discard: we are done with this client */
    c->in_len += (size_t)n;
    if (handle_input(c) != 0) return -1;
    if (c->out_len - c->out_off > OUT_LIMIT) return -1;
  }
  return 0;
}

static void accept_all(int lfd) {
  while (nconns < MAX_CONNS) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      return; /* EAGAIN, or a transient error (ECONNABORTED, EMFILE): poll again */
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
      close(fd);
      return;
    }
    c->fd = fd;
    conns[nconns++] = c;
  }
}

int main(int argc, char **argv) {
  unsigned long port = 8080;
  const char *bind_addr = "0.0.0.0";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      char *end;
      errno = 0;
      port = strtoul(argv[++i], &end, 10);
      if (errno != 0 || *end != '\0' || port == 0 || port > 65535) usage();
    } else if (strcmp(argv[i], "--bind") == 0 && i + 1 < argc) {
      bind_addr = argv[++i];
    } else {
      usage();
    }
  }
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, bind_addr, &addr.sin_addr) != 1) usage();

  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd < 0) {
    perror("godwit-counterd: socket");
    return 1;
  }
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    fprintf(stderr, "godwit-counterd: bind %s:%lu: %s\n", bind_addr, port, strerror(errno));
    return 1;
  }
  if (listen(lfd, 1024) != 0) {
    perror("godwit-counterd: listen");
    return 1;
  }
  printf("listening %lu\n", port);
  fflush(stdout);

  while (!stop_requested) {
    pfds[0].fd = lfd;
    pfds[0].events = nconns < MAX_CONNS ? POLLIN : 0;
    pfds[0].revents = 0;
    for (int i = 0; i < nconns; i++) {
      struct conn *c = conns[i];
      pfds[i + 1].fd = c->fd;
      pfds[i + 1].events = (c->peer_eof ? 0 : POLLIN) | (c->out_off < c->out_len ? POLLOUT : 0);
      pfds[i + 1].revents = 0;
    }
    int polled = nconns;
    int n = poll(pfds, (nfds_t)polled + 1, 1000);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("godwit-counterd: poll");
      return 1;
    }
    /* Walk backwards: close_conn moves the last connection into the freed slot. */
    for (int i = polled - 1; i >= 0; i--) {
      short re = pfds[i + 1].revents;
      if (re == 0) continue;
      struct conn *c = conns[i];
      int dead = 0;
      if (re & (POLLIN | POLLHUP | POLLERR)) dead = read_in(c) != 0;
      if (!dead && (c->out_off < c->out_len || c->close_after_write)) dead = flush_out(c) != 0;
      if (dead) close_conn(i);
    }
    if (pfds[0].revents & POLLIN) accept_all(lfd);
  }
  return 0;
}
