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
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_MAX_CONNS 4096
#include "godwit-http.h"

static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

static void usage(void) {
  fprintf(stderr, "usage: godwit-counterd [--port P] [--bind IPV4]\n");
  exit(2);
}

/* The 200 body: the counter, which only ever lives in memory. */
static int http_body(char *buf, size_t cap) {
  return snprintf(buf, cap, "counter %llu\n", (unsigned long long)http_requests);
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
    int polled = http_poll_prepare(lfd);
    int n = poll(http_pfds, (nfds_t)polled + 1, 1000);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("godwit-counterd: poll");
      return 1;
    }
    http_poll_dispatch(lfd, polled);
  }
  return 0;
}
