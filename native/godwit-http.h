/*
 * godwit-http.h: the small poll()-based HTTP/1.1 server shared by godwit-counterd and godwit-memload.
 *
 * Include once, after `#define _GNU_SOURCE` and `#define HTTP_MAX_CONNS <n>`. The including program
 * defines the 200 body (it is declared below):
 *   static int http_body(char *buf, size_t cap);  -- snprintf-style: writes the body, returns its length
 * and drives the server from its own poll loop:
 *   int polled = http_poll_prepare(lfd);  -- fills http_pfds[0] (lfd) and http_pfds[1..polled]
 *   poll(http_pfds, polled + 1, ...);
 *   http_poll_dispatch(lfd, polled);      -- reads, answers, writes, closes, accepts
 *
 * Behaviour: keep-alive and pipelining; every GET or HEAD request (any path) increments http_requests
 * and is answered `200 OK`, `Content-Type: text/plain`, `Content-Length`, the http_body (headers only
 * for HEAD); other methods get 405 and do not count; a request with a body (Content-Length) has the
 * body skipped. A connection closes after the reply when the request says `Connection: close` (or is
 * HTTP/1.0 without `Connection: keep-alive`), on a malformed request (after a 400), when the client
 * goes away, or when a client stops reading while more than OUT_LIMIT bytes of replies are queued.
 * Sockets are non-blocking; the program is expected to ignore SIGPIPE.
 */
#ifndef GODWIT_HTTP_H
#define GODWIT_HTTP_H

#ifndef _GNU_SOURCE
#error "define _GNU_SOURCE before including godwit-http.h (memmem, accept4)"
#endif
#ifndef HTTP_MAX_CONNS
#error "define HTTP_MAX_CONNS before including godwit-http.h"
#endif

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define IN_SIZE 16384 /* request headers must fit */
#define OUT_LIMIT (1 << 20)
#define HTTP_BODY_SIZE 160 /* room for the longest 200 body */

/* Supplied by the including program: the body of a 200 reply (snprintf-style return). */
static int http_body(char *buf, size_t cap);

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

static uint64_t http_requests = 0; /* GET and HEAD requests answered 200, in memory only */
static struct conn *conns[HTTP_MAX_CONNS];
static struct pollfd http_pfds[HTTP_MAX_CONNS + 1];
static int nconns = 0;

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
  char body[HTTP_BODY_SIZE];
  char hdr[256];
  int blen = 0;
  if (status == 200) blen = http_body(body, sizeof body);
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
      http_requests++;
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
  while (nconns < HTTP_MAX_CONNS) {
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

/* Fills http_pfds for a poll: [0] the listening socket, [1..n] the connections. Returns n. */
static int http_poll_prepare(int lfd) {
  http_pfds[0].fd = lfd;
  http_pfds[0].events = nconns < HTTP_MAX_CONNS ? POLLIN : 0;
  http_pfds[0].revents = 0;
  for (int i = 0; i < nconns; i++) {
    struct conn *c = conns[i];
    http_pfds[i + 1].fd = c->fd;
    http_pfds[i + 1].events = (c->peer_eof ? 0 : POLLIN) | (c->out_off < c->out_len ? POLLOUT : 0);
    http_pfds[i + 1].revents = 0;
  }
  return nconns;
}

/* Serves what the poll reported for the `polled` connections http_poll_prepare returned, then accepts. */
static void http_poll_dispatch(int lfd, int polled) {
  /* Walk backwards: close_conn moves the last connection into the freed slot. */
  for (int i = polled - 1; i >= 0; i--) {
    short re = http_pfds[i + 1].revents;
    if (re == 0) continue;
    struct conn *c = conns[i];
    int dead = 0;
    if (re & (POLLIN | POLLHUP | POLLERR)) dead = read_in(c) != 0;
    if (!dead && (c->out_off < c->out_len || c->close_after_write)) dead = flush_out(c) != 0;
    if (dead) close_conn(i);
  }
  if (http_pfds[0].revents & POLLIN) accept_all(lfd);
}

#endif /* GODWIT_HTTP_H */
