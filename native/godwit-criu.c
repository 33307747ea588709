/*
 * godwit-criu: the CRIU command godwit gives runc (`runc --criu`), in front of the real one.
 *
 * runc starts CRIU up to three times per checkpoint or restore: to ask its version, to check a
 * feature (lazy pages), and then for the work itself, each time as `criu swrk FD` speaking CRIU's
 * RPC over the SOCK_SEQPACKET socket FD. The provisioned CRIU takes ~10 ms to start (its own
 * loader, its libraries, its kernel-feature cache), and the two questions are asked while the
 * container is stopped. Their answers are fixed for one CRIU on one boot, so this front answers
 * them itself from a cache it fills by asking the real CRIU once.
 *
 * Contract:
 *   - The real CRIU is `criu` in this program's own directory (godwit's wrapper, bin/criu).
 *   - Anything but `swrk FD` is exec'd to it untouched.
 *   - `swrk FD`: each request is peeked at (MSG_PEEK: left in the socket). A VERSION or
 *     FEATURE_CHECK request is answered from CACHE_DIR/<key> when there, else by a real CRIU run
 *     on a socket pair of our own, whose answer is passed on and, if it says success, cached.
 *     Any other request: the real CRIU is exec'd with the socket as it is, and reads the request
 *     itself. End of stream: exit 0.
 *   - The key hashes what the answer depends on: the request's type and, for FEATURE_CHECK, the
 *     features it asks about (runc also sends that request its whole options, image directory
 *     descriptor and log file included, which CRIU's check ignores), the kernel's boot id and
 *     the wrapper (its contents, inode, size and mtime): a new boot, kernel or CRIU asks again.
 *   - A failure before a request is consumed falls back to the real CRIU; after, exits 1 (runc
 *     then reports a failed CRIU call, as it would for a crashed CRIU).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define CACHE_DIR "/run/godwit/criu-answers"
#define MAX_MSG (64 * 1024)

/* criu_req_type (CRIU's images/rpc.proto). */
enum { REQ_FEATURE_CHECK = 9, REQ_VERSION = 10 };

static char real_criu[PATH_MAX];

static void exec_real(char **argv) {
  argv[0] = real_criu;
  execv(real_criu, argv);
  fprintf(stderr, "godwit-criu: cannot run %s: %s\n", real_criu, strerror(errno));
  _exit(127);
}

static int read_varint(const uint8_t *p, size_t n, size_t *i, uint64_t *v) {
  *v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*i >= n) return -1;
    uint8_t b = p[(*i)++];
    *v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) return 0;
  }
  return -1;
}

/*
 * Field `field` at the top level of protobuf message `p`: a varint's value, or for a
 * length-delimited field its offset (and its length in `*len`). -1 if absent or malformed.
 */
static int64_t top_field(const uint8_t *p, size_t n, unsigned field, size_t *len) {
  size_t i = 0;
  while (i < n) {
    uint64_t tag, v;
    if (read_varint(p, n, &i, &tag) < 0) return -1;
    unsigned wire = tag & 7;
    if (wire == 0) {
      if (read_varint(p, n, &i, &v) < 0) return -1;
      if ((tag >> 3) == field) return (int64_t)v;
    } else if (wire == 2) {
      if (read_varint(p, n, &i, &v) < 0 || v > n - i) return -1;
      if ((tag >> 3) == field) {
        if (len) *len = v;
        return (int64_t)i;
      }
      i += v;
    } else if (wire == 5) {
      i += 4;
    } else if (wire == 1) {
      i += 8;
    } else {
      return -1;
    }
  }
  return -1;
}

static uint64_t fnv(uint64_t h, const void *data, size_t n) {
  const uint8_t *p = data;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

/* CACHE_DIR/<key> for a request of `type` asking about `features` (`nf` bytes); 0 on success. */
static int cache_path(int64_t type, const uint8_t *features, size_t nf, char *out, size_t outn) {
  uint64_t h = fnv(0xcbf29ce484222325ULL, &type, sizeof type);
  h = fnv(h, features, nf);
  char buf[4096];
  int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t r = read(fd, buf, sizeof buf);
  close(fd);
  if (r <= 0) return -1;
  h = fnv(h, buf, (size_t)r);
  fd = open(real_criu, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  struct stat st;
  if (fstat(fd, &st) < 0) {
    close(fd);
    return -1;
  }
  uint64_t id[4] = {(uint64_t)st.st_ino, (uint64_t)st.st_size, (uint64_t)st.st_mtim.tv_sec,
                    (uint64_t)st.st_mtim.tv_nsec};
  h = fnv(h, id, sizeof id);
  while ((r = read(fd, buf, sizeof buf)) > 0) h = fnv(h, buf, (size_t)r);
  close(fd);
  if (r < 0) return -1;
  return snprintf(out, outn, CACHE_DIR "/%016llx", (unsigned long long)h) >= (int)outn ? -1 : 0;
}

static ssize_t read_file(const char *path, uint8_t *buf, size_t n) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t r = read(fd, buf, n);
  close(fd);
  return r;
}

static void write_cache(const char *path, const uint8_t *buf, size_t n) {
  char tmp[PATH_MAX];
  if (mkdir("/run/godwit", 0755) < 0 && errno != EEXIST) return;
  if (mkdir(CACHE_DIR, 0700) < 0 && errno != EEXIST) return;
  if (snprintf(tmp, sizeof tmp, "%s.%d", path, (int)getpid()) >= (int)sizeof tmp) return;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;
  int ok = write(fd, buf, n) == (ssize_t)n;
  close(fd);
  if (!ok || rename(tmp, path) < 0) unlink(tmp);
}

/* Asks a real CRIU `req` on a socket pair of our own; its answer in `resp`. Returns its length or -1. */
static ssize_t ask_real(const uint8_t *req, size_t n, uint8_t *resp) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) return -1;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    close(sv[0]);
    int fd = fcntl(sv[1], F_DUPFD, 3); /* without CLOEXEC */
    char fdarg[16];
    snprintf(fdarg, sizeof fdarg, "%d", fd);
    char *args[] = {real_criu, "swrk", fdarg, NULL};
    exec_real(args);
  }
  close(sv[1]);
  ssize_t r = -1;
  if (send(sv[0], req, n, 0) == (ssize_t)n) {
    do r = recv(sv[0], resp, MAX_MSG, 0);
    while (r < 0 && errno == EINTR);
  }
  close(sv[0]); /* end of stream: the real CRIU exits */
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return r;
}

int main(int argc, char **argv) {
  char self[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) {
    fprintf(stderr, "godwit-criu: cannot find itself: %s\n", strerror(errno));
    return 127;
  }
  self[len] = '\0';
  char *slash = strrchr(self, '/');
  *slash = '\0';
  if (snprintf(real_criu, sizeof real_criu, "%s/criu", self) >= (int)sizeof real_criu) return 127;
  if (argc != 3 || strcmp(argv[1], "swrk") != 0) exec_real(argv);

  char *end;
  long sk = strtol(argv[2], &end, 10);
  if (*end != '\0' || sk < 0 || sk > INT_MAX) exec_real(argv);
  static uint8_t req[MAX_MSG], resp[MAX_MSG];
  for (;;) {
    ssize_t n = recv((int)sk, req, sizeof req, MSG_PEEK | MSG_TRUNC);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) return 0; /* the caller hung up */
    if (n < 0 || n > (ssize_t)sizeof req) exec_real(argv);
    int64_t type = top_field(req, (size_t)n, 1, NULL);
    if (type != REQ_VERSION && type != REQ_FEATURE_CHECK) exec_real(argv);
    /* criu_req.features (5): what a FEATURE_CHECK asks about. */
    size_t nf = 0;
    int64_t fo = type == REQ_FEATURE_CHECK ? top_field(req, (size_t)n, 5, &nf) : -1;
    if (fo < 0) nf = 0;
    char path[PATH_MAX];
    int cacheable = cache_path(type, fo < 0 ? req : req + fo, nf, path, sizeof path) == 0;
    ssize_t r = cacheable ? read_file(path, resp, sizeof resp) : -1;
    int hit = r > 0;
    if (!hit && !cacheable) exec_real(argv);
    /* Consume the request: from here on this program answers it. */
    if (recv((int)sk, req, sizeof req, 0) != n) return 1;
    if (!hit) {
      r = ask_real(req, (size_t)n, resp);
      if (r <= 0) return 1;
      if (top_field(resp, (size_t)r, 2, NULL) == 1) write_cache(path, resp, (size_t)r);
    }
    if (send((int)sk, resp, (size_t)r, MSG_NOSIGNAL) != r) return 1;
  }
}
