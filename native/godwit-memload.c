/*
 * godwit-memload: a workload with a known amount of memory, a known content mix, a known dirtying
 * rate, and exact self-verification of its memory.
 *
 * usage: godwit-memload --mib N [--interval-ms M] [--seed S] [--mix Z:R:X]
 *                       [--dirty-mib-per-s R] [--pattern uniform|hotset|sequential] [--hot-mib H]
 *                       [--verify-interval-ms V] [--port P] [--bind IPV4] [--self-test-corrupt]
 *
 * Memory: N MiB of anonymous memory, every page written at start. Each page has a kind, fixed for
 * its lifetime and assigned from the seed S (default 1) by a seeded shuffle, with exactly
 * floor(pages*Z/100) zero pages, floor(pages*R/100) repeated pages and the rest random
 * (--mix default 0:0:100; integers summing to 100):
 *   zero      all bytes 0;
 *   repeated  one non-zero page image derived from S, the same for every repeated page;
 *   random    xorshift64* words from a state derived from (S, page index, page version), so the
 *             page does not compress and differs per version.
 * Each page has a version (u32, starts at 0) kept in memory; a page's content is a pure function of
 * (S, index, version, kind).
 *
 * Output (stdout, flushed per line; nothing per HTTP request):
 *   "ready mib <N>"                               once every page is written;
 *   "mix zero <z> repeated <r> random <x> pages <n>"  the exact page counts, right after;
 *   "listening <P>"                               with --port, right after;
 *   "counter <n> mib <N>"                         every M ms (default 1000), n counting from 1;
 *   "verify ok pages <n> checksum <hex16> ms <t>" after a verify pass that found every page exact;
 *   "verify FAILED page <i> bad <b> failures <f>" after a pass that found <b> wrong pages, <i> the
 *                                                 first, <f> failed passes so far (this one included);
 *   "self-test corrupted page <i>"                with --self-test-corrupt (see below).
 *
 * Dirtying: every M ms, R MiB/s * M ms worth of pages (fraction carried over; default 0) are
 * rewritten. The page is picked by --pattern: uniform (default) over all pages; hotset uniformly
 * within a seeded random set of H MiB of pages (--hot-mib, default a quarter of N); sequential a
 * cursor walking the pages in order, wrapping around. A rewrite increments the page's version and
 * writes the content of the new version; the kind never changes, so the mix stays exact: a random
 * page gets new random bytes, a zero or repeated page is rewritten with the same bytes (it is still
 * written, so it is dirty to the kernel's tracking and to pre-copy).
 *
 * Verify: every V ms (default 1000; 0 = only on demand) and once per SIGUSR1, a pass regenerates the
 * expected content of every page and compares it to memory. A pass is done in slices of 8 MiB
 * between timer ticks and HTTP events so neither stalls; it is exact anyway, since each page is
 * compared against its version at that moment and rewrites happen only between slices. <t> is the
 * time spent in the slices. The checksum is FNV-1a-style over per-page sums of the 64-bit words read
 * (h = (h ^ sum) * 0x100000001b3, from 0xcbf29ce484222325), so it depends on all content. All this
 * state lives only in the process's memory: a verify pass after a CRIU restore proves the memory
 * (including the version and kind arrays) came back exactly.
 *
 * --self-test-corrupt: after the first pass completes, flips one byte in the middle of page
 * pages/2 (and prints the line above), so the next pass must print "verify FAILED page <pages/2>".
 *
 * --port P: a poll()-based HTTP/1.1 server (keep-alive, pipelining) on IPV4:P (default 0.0.0.0).
 * Every GET or HEAD (any path) increments a request counter and is answered 200, text/plain, body
 *   "counter <n>\nverify <ok|failed|pending> pages <p> failures <f>\n"
 * where the status is that of the last completed pass (pending before the first), <p> the pages
 * checked by it, <f> failed passes so far. Other methods get 405. Same connection rules as
 * godwit-counterd.
 *
 * Time: CLOCK_MONOTONIC; after a stall longer than one interval (frozen for a checkpoint) the timers
 * do not burst to catch up, and if the clock goes backwards (restored on another host) they re-arm.
 * Exits 0 on SIGTERM/SIGINT, 2 on a usage error, 1 otherwise.
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
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { KIND_ZERO = 0, KIND_REPEATED = 1, KIND_RANDOM = 2 };
enum { PATTERN_UNIFORM, PATTERN_HOTSET, PATTERN_SEQUENTIAL };

#define VERIFY_SLICE_BYTES (8u << 20)
#define HTTP_MAX_CONNS 1024
#include "godwit-http.h"

static volatile sig_atomic_t stop_requested = 0;
static volatile sig_atomic_t verify_requested = 0;

static void on_stop(int sig) {
  (void)sig;
  stop_requested = 1;
}

static void on_usr1(int sig) {
  (void)sig;
  verify_requested = 1;
}

/* ---- random numbers ---- */

static inline uint64_t xorshift(uint64_t *state) {
  uint64_t x = *state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545F4914F6CDD1DULL;
}

/* splitmix64, so that small or zero seeds still give a well-mixed, non-zero xorshift state. */
static uint64_t mix_seed(uint64_t seed) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return z != 0 ? z : 0x9E3779B97F4A7C15ULL;
}

/* Uniform in [0, n). */
static inline size_t below(uint64_t *state, size_t n) {
  return (size_t)(((unsigned __int128)xorshift(state) * n) >> 64);
}

/* ---- memory and its expected content ---- */

static size_t page_size, page_words, pages;
static unsigned char *mem;
static uint32_t *versions; /* per page */
static uint8_t *kinds;     /* per page */
static uint64_t *repeated_image; /* the content of every repeated page */
static uint64_t content_key;     /* derived from the seed */

static inline uint64_t *page_at(size_t p) { return (uint64_t *)(mem + p * page_size); }

static inline uint64_t random_page_state(size_t p, uint32_t version) {
  return mix_seed(mix_seed(content_key ^ (uint64_t)p) ^ (uint64_t)version);
}

/* Writes page p's content for its current version and kind. */
static void write_page(size_t p) {
  uint64_t *w = page_at(p);
  switch (kinds[p]) {
  case KIND_ZERO:
    memset(w, 0, page_size);
    break;
  case KIND_REPEATED:
    memcpy(w, repeated_image, page_size);
    break;
  default: {
    uint64_t s = random_page_state(p, versions[p]);
    for (size_t i = 0; i < page_words; i++) w[i] = xorshift(&s);
  }
  }
}

/* Compares page p with its expected content; adds the sum of its words to *sum. Returns 1 when it differs. */
static int check_page(size_t p, uint64_t *sum) {
  const uint64_t *w = page_at(p);
  uint64_t diff = 0, s = 0;
  switch (kinds[p]) {
  case KIND_ZERO:
    for (size_t i = 0; i < page_words; i++) {
      diff |= w[i];
      s += w[i];
    }
    break;
  case KIND_REPEATED:
    for (size_t i = 0; i < page_words; i++) {
      diff |= w[i] ^ repeated_image[i];
      s += w[i];
    }
    break;
  case KIND_RANDOM: {
    uint64_t st = random_page_state(p, versions[p]);
    for (size_t i = 0; i < page_words; i++) {
      diff |= w[i] ^ xorshift(&st);
      s += w[i];
    }
    break;
  }
  default:
    diff = 1; /* the kind array itself is damaged */
  }
  *sum = s;
  return diff != 0;
}

/* ---- verify passes ---- */

static struct {
  int active;
  size_t next, bad, first_bad;
  uint64_t checksum;
  int64_t busy_ns;
} pass;
/* Outcome of the last completed pass, for HTTP. */
static int last_status = -1; /* -1 pending, 0 ok, 1 failed */
static size_t last_pages = 0;
static uint64_t failed_passes = 0, completed_passes = 0;

static int64_t mono_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void start_pass(void) {
  memset(&pass, 0, sizeof pass);
  pass.active = 1;
  pass.checksum = 0xcbf29ce484222325ULL;
}

/* Checks the next slice of pages; returns 1 when the pass is complete. */
static int verify_slice(void) {
  int64_t t0 = mono_ns();
  size_t n = VERIFY_SLICE_BYTES / page_size;
  size_t end = pass.next + n < pages ? pass.next + n : pages;
  for (size_t p = pass.next; p < end; p++) {
    uint64_t sum;
    if (check_page(p, &sum)) {
      if (pass.bad == 0) pass.first_bad = p;
      pass.bad++;
    }
    pass.checksum = (pass.checksum ^ sum) * 0x100000001B3ULL;
  }
  pass.next = end;
  pass.busy_ns += mono_ns() - t0;
  return pass.next >= pages;
}

static void finish_pass(void) {
  pass.active = 0;
  completed_passes++;
  last_pages = pages;
  if (pass.bad == 0) {
    last_status = 0;
    printf("verify ok pages %zu checksum %016llx ms %.1f\n", pages, (unsigned long long)pass.checksum,
           (double)pass.busy_ns / 1e6);
  } else {
    last_status = 1;
    failed_passes++;
    printf("verify FAILED page %zu bad %zu failures %llu\n", pass.first_bad, pass.bad,
           (unsigned long long)failed_passes);
  }
  fflush(stdout);
}

/* ---- HTTP (godwit-http.h, as in godwit-counterd) ---- */

/* The 200 body: the request counter and the outcome of the last completed verify pass. */
static int http_body(char *buf, size_t cap) {
  const char *v = last_status < 0 ? "pending" : last_status == 0 ? "ok" : "failed";
  return snprintf(buf, cap, "counter %llu\nverify %s pages %zu failures %llu\n",
                  (unsigned long long)http_requests, v, last_pages, (unsigned long long)failed_passes);
}

/* ---- arguments ---- */

static void usage(void) {
  fprintf(stderr,
          "usage: godwit-memload --mib N [--interval-ms M] [--seed S] [--mix Z:R:X]\n"
          "                      [--dirty-mib-per-s R] [--pattern uniform|hotset|sequential] [--hot-mib H]\n"
          "                      [--verify-interval-ms V] [--port P] [--bind IPV4] [--self-test-corrupt]\n");
  exit(2);
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out) {
  char *end;
  if (s == NULL || *s == '\0' || *s == '-') return -1;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0' || v > max) return -1;
  *out = (uint64_t)v;
  return 0;
}

static int parse_rate(const char *s, double *out) {
  char *end;
  if (s == NULL || *s == '\0') return -1;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || *end != '\0' || !(v >= 0.0) || v > 1e6) return -1;
  *out = v;
  return 0;
}

/* "Z:R:X", integers summing to 100. */
static int parse_mix(const char *s, unsigned pct[3]) {
  if (s == NULL) return -1;
  unsigned total = 0;
  for (int k = 0; k < 3; k++) {
    char *end;
    if (*s < '0' || *s > '9') return -1;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || v > 100) return -1;
    if (*end != (k < 2 ? ':' : '\0')) return -1;
    pct[k] = (unsigned)v;
    total += (unsigned)v;
    s = end + 1;
  }
  return total == 100 ? 0 : -1;
}

/* ---- main ---- */

int main(int argc, char **argv) {
  uint64_t mib = 0, interval_ms = 1000, seed = 1, verify_ms = 1000, port = 0;
  double dirty_mib_per_s = 0.0, hot_mib = -1.0;
  unsigned mix[3] = {0, 0, 100};
  int pattern = PATTERN_UNIFORM, have_mib = 0, self_test_corrupt = 0;
  const char *bind_addr = "0.0.0.0";

  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--self-test-corrupt") == 0) {
      self_test_corrupt = 1;
      continue;
    }
    const char *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(arg, "--mib") == 0) {
      if (parse_u64(val, 1u << 20, &mib) != 0) usage();
      have_mib = 1;
    } else if (strcmp(arg, "--interval-ms") == 0) {
      if (parse_u64(val, 3600000, &interval_ms) != 0 || interval_ms == 0) usage();
    } else if (strcmp(arg, "--dirty-mib-per-s") == 0) {
      if (parse_rate(val, &dirty_mib_per_s) != 0) usage();
    } else if (strcmp(arg, "--seed") == 0) {
      if (parse_u64(val, UINT64_MAX, &seed) != 0) usage();
    } else if (strcmp(arg, "--mix") == 0) {
      if (parse_mix(val, mix) != 0) usage();
    } else if (strcmp(arg, "--pattern") == 0) {
      if (val == NULL) usage();
      else if (strcmp(val, "uniform") == 0) pattern = PATTERN_UNIFORM;
      else if (strcmp(val, "hotset") == 0) pattern = PATTERN_HOTSET;
      else if (strcmp(val, "sequential") == 0) pattern = PATTERN_SEQUENTIAL;
      else usage();
    } else if (strcmp(arg, "--hot-mib") == 0) {
      if (parse_rate(val, &hot_mib) != 0) usage();
    } else if (strcmp(arg, "--verify-interval-ms") == 0) {
      if (parse_u64(val, 3600000, &verify_ms) != 0) usage();
    } else if (strcmp(arg, "--port") == 0) {
      if (parse_u64(val, 65535, &port) != 0 || port == 0) usage();
    } else if (strcmp(arg, "--bind") == 0) {
      if (val == NULL) usage();
      bind_addr = val;
    } else {
      usage();
    }
    i++;
  }
  if (!have_mib) usage();
  if (hot_mib > (double)mib) usage();

  long ps = sysconf(_SC_PAGESIZE);
  page_size = ps > 0 ? (size_t)ps : 4096;
  page_words = page_size / sizeof(uint64_t);
  size_t bytes = (size_t)mib << 20;
  pages = bytes / page_size;
  if (self_test_corrupt && pages == 0) usage();

  /* Signals are blocked except inside ppoll, so a flag set by a handler is never missed. */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  sigset_t blocked, wait_mask;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGTERM);
  sigaddset(&blocked, SIGINT);
  sigaddset(&blocked, SIGUSR1);
  sigprocmask(SIG_BLOCK, &blocked, &wait_mask);
  sigdelset(&wait_mask, SIGTERM);
  sigdelset(&wait_mask, SIGINT);
  sigdelset(&wait_mask, SIGUSR1);

  int lfd = -1;
  if (port != 0) {
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, bind_addr, &addr.sin_addr) != 1) usage();
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) {
      perror("godwit-memload: socket");
      return 1;
    }
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0) {
      fprintf(stderr, "godwit-memload: bind %s:%llu: %s\n", bind_addr, (unsigned long long)port,
              strerror(errno));
      return 1;
    }
    if (listen(lfd, 1024) != 0) {
      perror("godwit-memload: listen");
      return 1;
    }
  }

  if (bytes > 0) {
    mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
      fprintf(stderr, "godwit-memload: mmap %llu MiB: %s\n", (unsigned long long)mib, strerror(errno));
      return 1;
    }
  }
  versions = calloc(pages + 1, sizeof *versions);
  kinds = malloc(pages + 1);
  repeated_image = malloc(page_size);
  if (versions == NULL || kinds == NULL || repeated_image == NULL) {
    fprintf(stderr, "godwit-memload: out of memory\n");
    return 1;
  }

  /* Kinds: exact counts, placed by a seeded Fisher-Yates shuffle. */
  content_key = mix_seed(seed ^ 0xC0FFEE0DDF00DULL);
  size_t nzero = (size_t)((unsigned __int128)pages * mix[0] / 100);
  size_t nrep = (size_t)((unsigned __int128)pages * mix[1] / 100);
  for (size_t p = 0; p < pages; p++) kinds[p] = p < nzero ? KIND_ZERO : p < nzero + nrep ? KIND_REPEATED : KIND_RANDOM;
  uint64_t layout_rng = mix_seed(seed ^ 0x6B696E6473ULL);
  for (size_t p = pages; p > 1; p--) {
    size_t j = below(&layout_rng, p);
    uint8_t t = kinds[p - 1];
    kinds[p - 1] = kinds[j];
    kinds[j] = t;
  }
  uint64_t rep_state = mix_seed(seed ^ 0x7265706561746564ULL);
  for (size_t i = 0; i < page_words; i++) {
    uint64_t w;
    do w = xorshift(&rep_state);
    while (w == 0);
    repeated_image[i] = w;
  }

  /* Hot set: a seeded random set of pages (partial Fisher-Yates over all page indices). */
  uint32_t *hot = NULL;
  size_t hot_pages = 0;
  if (pattern == PATTERN_HOTSET && pages > 0) {
    double h = hot_mib >= 0.0 ? hot_mib : (double)mib / 4.0;
    hot_pages = (size_t)(h * (double)(1 << 20) / (double)page_size);
    if (hot_pages < 1) hot_pages = 1;
    if (hot_pages > pages) hot_pages = pages;
    hot = malloc(pages * sizeof *hot);
    if (hot == NULL) {
      fprintf(stderr, "godwit-memload: out of memory\n");
      return 1;
    }
    for (size_t p = 0; p < pages; p++) hot[p] = (uint32_t)p;
    uint64_t hot_rng = mix_seed(seed ^ 0x686F74ULL);
    for (size_t k = 0; k < hot_pages; k++) {
      size_t j = k + below(&hot_rng, pages - k);
      uint32_t t = hot[k];
      hot[k] = hot[j];
      hot[j] = t;
    }
    uint32_t *shrunk = realloc(hot, hot_pages * sizeof *hot);
    if (shrunk != NULL) hot = shrunk;
  }

  for (size_t p = 0; p < pages; p++) write_page(p);
  printf("ready mib %llu\n", (unsigned long long)mib);
  printf("mix zero %zu repeated %zu random %zu pages %zu\n", nzero, nrep, pages - nzero - nrep, pages);
  if (port != 0) printf("listening %llu\n", (unsigned long long)port);
  fflush(stdout);

  /* Pages to rewrite per interval, with the fractional part carried over. */
  double pages_per_tick = dirty_mib_per_s * (double)(1 << 20) / (double)page_size * (double)interval_ms / 1000.0;
  double carry = 0.0;
  uint64_t dirty_rng = mix_seed(seed);
  size_t seq_cursor = 0;
  uint64_t counter = 0;
  int corrupted = 0, want_verify = 0;
  const int64_t interval_ns = (int64_t)interval_ms * 1000000LL;
  const int64_t verify_ns = (int64_t)verify_ms * 1000000LL;
  int64_t now = mono_ns();
  int64_t next_tick = now + interval_ns;
  int64_t next_verify = now + verify_ns;

  while (!stop_requested) {
    now = mono_ns();
    /* The clock went backwards (restored on another host): re-arm instead of waiting it out. */
    if (next_tick - now > interval_ns) next_tick = now + interval_ns;
    if (verify_ns > 0 && next_verify - now > verify_ns) next_verify = now + verify_ns;

    if (now >= next_tick) {
      counter++;
      if (pages > 0 && pages_per_tick > 0.0) {
        carry += pages_per_tick;
        uint64_t n = (uint64_t)carry;
        carry -= (double)n;
        for (uint64_t k = 0; k < n; k++) {
          size_t p;
          if (pattern == PATTERN_HOTSET) p = hot[below(&dirty_rng, hot_pages)];
          else if (pattern == PATTERN_SEQUENTIAL) {
            p = seq_cursor;
            seq_cursor = seq_cursor + 1 < pages ? seq_cursor + 1 : 0;
          } else p = below(&dirty_rng, pages);
          versions[p]++;
          write_page(p);
        }
      }
      printf("counter %llu mib %llu\n", (unsigned long long)counter, (unsigned long long)mib);
      fflush(stdout);
      next_tick += interval_ns;
      /* After a long stall (e.g. frozen for a checkpoint) do not burst to catch up. */
      if (next_tick <= now) next_tick = now + interval_ns;
    }

    if (verify_ns > 0 && now >= next_verify) {
      want_verify = 1;
      next_verify += verify_ns;
      if (next_verify <= now) next_verify = now + verify_ns;
    }
    if (verify_requested) {
      verify_requested = 0;
      want_verify = 1;
    }
    if (!pass.active && want_verify) {
      want_verify = 0;
      start_pass();
    }
    if (pass.active && verify_slice()) {
      finish_pass();
      if (self_test_corrupt && !corrupted) {
        corrupted = 1;
        size_t p = pages / 2;
        mem[p * page_size + page_size / 2] ^= 0x5A;
        printf("self-test corrupted page %zu\n", p);
        fflush(stdout);
      }
    }

    /* Sleep until the next timer (not at all while a pass is in progress), serving HTTP meanwhile. */
    int64_t wait_ns = 0;
    if (!pass.active && !want_verify) {
      int64_t until = next_tick;
      if (verify_ns > 0 && next_verify < until) until = next_verify;
      wait_ns = until - mono_ns();
      if (wait_ns < 0) wait_ns = 0;
    }
    struct timespec timeout = {.tv_sec = (time_t)(wait_ns / 1000000000LL), .tv_nsec = (long)(wait_ns % 1000000000LL)};
    nfds_t nfds = 0;
    int polled = 0;
    if (lfd >= 0) {
      polled = http_poll_prepare(lfd);
      nfds = (nfds_t)polled + 1;
    }
    int n = ppoll(nfds > 0 ? http_pfds : NULL, nfds, &timeout, &wait_mask);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("godwit-memload: ppoll");
      return 1;
    }
    if (n == 0 || lfd < 0) continue;
    http_poll_dispatch(lfd, polled);
  }
  return 0;
}
