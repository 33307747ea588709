/*
 * godwit-memload: a workload with a known amount of memory and a known dirtying rate.
 *
 * Contract: `godwit-memload --mib N [--interval-ms M] [--dirty-mib-per-s R] [--seed S]`
 *   - maps N MiB of anonymous memory and fills every page with pseudo-random bytes (xorshift64*,
 *     seeded from S), so the content is deterministic for a given seed and does not compress;
 *   - prints "ready mib <N>" once every page is written;
 *   - then every M ms (default 1000): increments a counter kept only in memory, rewrites
 *     R MiB/s * M ms worth of pages chosen uniformly at random (none when R is 0, the default),
 *     and prints "counter <n> mib <N>";
 *   - flushes stdout after every line; exits 0 on SIGTERM/SIGINT, 2 on a usage error, 1 otherwise.
 * A restored process continues its counter from where it was dumped, which is how tests see that
 * memory survived a migration.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

static uint64_t rng_state;

static uint64_t next_random(void) {
  uint64_t x = rng_state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  rng_state = x;
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

static void fill_page(unsigned char *page, size_t page_size) {
  uint64_t *words = (uint64_t *)page;
  for (size_t i = 0; i < page_size / sizeof(uint64_t); i++) words[i] = next_random();
}

static void usage(void) {
  fprintf(stderr,
          "usage: godwit-memload --mib N [--interval-ms M] [--dirty-mib-per-s R] [--seed S]\n");
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

static void add_ms(struct timespec *t, uint64_t ms) {
  t->tv_sec += (time_t)(ms / 1000);
  t->tv_nsec += (long)(ms % 1000) * 1000000L;
  if (t->tv_nsec >= 1000000000L) {
    t->tv_sec += 1;
    t->tv_nsec -= 1000000000L;
  }
}

static int before(const struct timespec *a, const struct timespec *b) {
  return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

int main(int argc, char **argv) {
  uint64_t mib = 0, interval_ms = 1000, seed = 1;
  double dirty_mib_per_s = 0.0;
  int have_mib = 0;

  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
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
    } else {
      usage();
    }
    i++;
  }
  if (!have_mib) usage();

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);

  long ps = sysconf(_SC_PAGESIZE);
  size_t page_size = ps > 0 ? (size_t)ps : 4096;
  size_t bytes = (size_t)mib << 20;
  size_t pages = bytes / page_size;
  unsigned char *mem = NULL;
  if (bytes > 0) {
    mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
      fprintf(stderr, "godwit-memload: mmap %llu MiB: %s\n", (unsigned long long)mib, strerror(errno));
      return 1;
    }
  }

  rng_state = mix_seed(seed);
  for (size_t p = 0; p < pages; p++) fill_page(mem + p * page_size, page_size);
  printf("ready mib %llu\n", (unsigned long long)mib);
  fflush(stdout);

  /* Pages to rewrite per interval, with the fractional part carried over. */
  double pages_per_tick = dirty_mib_per_s * (double)(1 << 20) / (double)page_size * (double)interval_ms / 1000.0;
  double carry = 0.0;
  uint64_t counter = 0;
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);

  while (!stop_requested) {
    add_ms(&deadline, interval_ms);
    while (!stop_requested) {
      int rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, NULL);
      if (rc == 0) break;
      if (rc != EINTR) {
        fprintf(stderr, "godwit-memload: clock_nanosleep: %s\n", strerror(rc));
        return 1;
      }
    }
    if (stop_requested) break;
    /* After a long stall (e.g. frozen for a checkpoint) do not burst to catch up. */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    struct timespec late = deadline;
    add_ms(&late, interval_ms);
    if (before(&late, &now)) deadline = now;

    counter++;
    if (pages > 0 && pages_per_tick > 0.0) {
      carry += pages_per_tick;
      uint64_t n = (uint64_t)carry;
      carry -= (double)n;
      for (uint64_t k = 0; k < n; k++) {
        size_t p = (size_t)(((unsigned __int128)next_random() * pages) >> 64);
        fill_page(mem + p * page_size, page_size);
      }
    }
    printf("counter %llu mib %llu\n", (unsigned long long)counter, (unsigned long long)mib);
    fflush(stdout);
  }
  return 0;
}
