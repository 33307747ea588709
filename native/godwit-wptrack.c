/*
 * godwit-wptrack: exact write tracking of running processes, for pre-copy without soft-dirty.
 *
 * Contract: `godwit-wptrack PID...` (root). For each PID it makes the process create a
 * userfaultfd (one injected system call under ptrace, which the process does not notice),
 * takes that descriptor with pidfd_getfd and closes the process's copy (a second injected
 * call), enables asynchronous write-protect (UFFD_FEATURE_WP_ASYNC | WP_UNPOPULATED, kernel
 * >= 6.7) and registers every private region of /proc/PID/maps for it, then write-protects
 * them all. A write to a protected page is then resolved by the kernel at once (the process
 * never waits for this program); it only clears the page's protection, which PAGEMAP_SCAN
 * on /proc/PID/pagemap reports as PAGE_IS_WRITTEN.
 *
 * Output, one line each, numbers in decimal, pages being addresses / 4096:
 *   track PID PAGE NPAGES        a region registered
 *   skip PID PAGE NPAGES ERRNO   a region that could not be (its pages are not tracked)
 *   fail PID ERRNO WHAT          the process could not be tracked at all
 *   ready                        after every PID, protections in place
 * Then, for each line `collect` on stdin: the pages written since the previous collect (or
 * since ready), protecting them again in the same walk:
 *   w PID PAGE NPAGES            written pages
 *   lost PID PAGE NPAGES ERRNO   a region no longer tracked (unmapped, remapped, or the
 *                                process exited): its pages must be treated as written
 *   done MICROSECONDS
 * EOF or `close` on stdin closes the descriptors (the kernel then unregisters the regions and
 * drops their protections) and exits 0. Exit 2: usage; exit 1: nothing could be tracked.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/types.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Kernel >= 6.7 interfaces that Debian 12's headers (6.1) lack. */
#ifndef PAGEMAP_SCAN
#define PAGE_IS_WRITTEN (1 << 1)
struct page_region {
  __u64 start, end, categories;
};
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
struct pm_scan_arg {
  __u64 size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted, category_mask,
      category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

#define PAGE 4096ULL
#define VEC 4096

struct range {
  uint64_t start, end; /* bytes */
  int live;
};

struct proc {
  pid_t pid;
  int uffd;     /* ours */
  int pagemap;  /* /proc/PID/pagemap */
  struct range *ranges;
  size_t nranges;
};

static struct page_region vec[VEC];

/* ---- one system call run by a stopped tracee ---- */

/* The address of a `syscall` instruction (0f 05) in the tracee: the one it is stopped in, or one in its vDSO. */
static uint64_t syscall_insn(pid_t pid, const struct user_regs_struct *regs, int memfd) {
  unsigned char b[2];
  if ((long long)regs->orig_rax >= 0 && pread(memfd, b, 2, (off_t)(regs->rip - 2)) == 2 && b[0] == 0x0f &&
      b[1] == 0x05)
    return regs->rip - 2;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/maps", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return 0;
  char line[512];
  uint64_t lo = 0, hi = 0;
  while (fgets(line, sizeof line, f)) {
    if (strstr(line, "[vdso]") != NULL) {
      sscanf(line, "%lx-%lx", (unsigned long *)&lo, (unsigned long *)&hi);
      break;
    }
  }
  fclose(f);
  if (hi <= lo || hi - lo > (1 << 20)) return 0;
  size_t n = hi - lo;
  unsigned char *code = malloc(n);
  uint64_t at = 0;
  if (code != NULL && pread(memfd, code, n, (off_t)lo) == (ssize_t)n) {
    for (size_t i = 0; i + 1 < n; i++) {
      if (code[i] == 0x0f && code[i + 1] == 0x05) {
        at = lo + i;
        break;
      }
    }
  }
  free(code);
  return at;
}

/* A signal that arrived while the tracee was held here: delivered to it when it is let go. */
static int pending_signal;

/* Runs syscall `nr` in the stopped tracee; its result (or -errno), or -1000 - errno of ptrace. */
static long remote_syscall(pid_t pid, const struct user_regs_struct *saved, uint64_t insn, long nr, long a1,
                           long a2, long a3) {
  struct user_regs_struct r = *saved;
  r.rax = (unsigned long long)nr;
  r.orig_rax = (unsigned long long)-1; /* no restart of what it was in */
  r.rdi = (unsigned long long)a1;
  r.rsi = (unsigned long long)a2;
  r.rdx = (unsigned long long)a3;
  r.rip = insn;
  if (ptrace(PTRACE_SETREGS, pid, 0, &r) != 0) return -1000 - errno;
  if (ptrace(PTRACE_SINGLESTEP, pid, 0, 0) != 0) return -1000 - errno;
  int st;
  for (;;) {
    if (waitpid(pid, &st, __WALL) < 0) return -1000 - errno;
    if (!WIFSTOPPED(st)) return -1000 - ESRCH;
    /* The step's trap (a plain SIGTRAP stop): the call is done. */
    if (WSTOPSIG(st) == SIGTRAP && (st >> 16) == 0) break;
    /* Another stop first: a signal is kept for later (it stays undelivered while held here),
     * an event stop is passed over; then the step again. */
    if ((st >> 16) == 0 && pending_signal == 0) pending_signal = WSTOPSIG(st);
    if (ptrace(PTRACE_SINGLESTEP, pid, 0, 0) != 0) return -1000 - errno;
  }
  if (ptrace(PTRACE_GETREGS, pid, 0, &r) != 0) return -1000 - errno;
  return (long)r.rax;
}

/* Makes `pid` create a userfaultfd and returns our copy of it, or -errno (with *what set). */
static int steal_uffd(pid_t pid, const char **what) {
  *what = "seize";
  if (ptrace(PTRACE_SEIZE, pid, 0, 0) != 0) return -errno;
  int err = 0, ours = -1;
  struct user_regs_struct saved;
  *what = "interrupt";
  if (ptrace(PTRACE_INTERRUPT, pid, 0, 0) != 0) {
    err = errno;
    goto detach;
  }
  /* Until the interrupt's own stop; a signal stop before it is kept for later. */
  pending_signal = 0;
  for (;;) {
    int st;
    if (waitpid(pid, &st, __WALL) < 0 || !WIFSTOPPED(st)) {
      err = ESRCH;
      goto detach;
    }
    if ((st >> 16) == PTRACE_EVENT_STOP) break;
    if (pending_signal == 0) pending_signal = WSTOPSIG(st);
    if (ptrace(PTRACE_CONT, pid, 0, 0) != 0) {
      err = errno;
      goto detach;
    }
  }
  *what = "getregs";
  if (ptrace(PTRACE_GETREGS, pid, 0, &saved) != 0) {
    err = errno;
    goto detach;
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/mem", pid);
  int memfd = open(path, O_RDONLY | O_CLOEXEC);
  uint64_t insn = memfd >= 0 ? syscall_insn(pid, &saved, memfd) : 0;
  if (memfd >= 0) close(memfd);
  *what = "find a syscall instruction";
  if (insn == 0) {
    err = ENOEXEC;
    goto restore;
  }
  *what = "userfaultfd";
  long fd = remote_syscall(pid, &saved, insn, SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY, 0, 0);
  if (fd < 0) {
    err = fd <= -1000 ? (int)(-fd - 1000) : (int)-fd;
    goto restore;
  }
  *what = "pidfd_getfd";
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd >= 0) {
    ours = (int)syscall(SYS_pidfd_getfd, pidfd, (int)fd, 0);
    if (ours < 0) err = errno;
    close(pidfd);
  } else {
    err = errno;
  }
  /* The process's copy goes either way: it must not find a descriptor it did not open. */
  long c = remote_syscall(pid, &saved, insn, SYS_close, fd, 0, 0);
  if (c != 0 && err == 0) {
    *what = "close";
    err = c <= -1000 ? (int)(-c - 1000) : (int)-c;
  }
restore:
  if (ptrace(PTRACE_SETREGS, pid, 0, &saved) != 0 && err == 0) {
    *what = "setregs";
    err = errno;
  }
detach:
  ptrace(PTRACE_DETACH, pid, 0, (void *)(long)pending_signal);
  if (err != 0) {
    if (ours >= 0) close(ours);
    return -err;
  }
  return ours;
}

/* ---- tracking ---- */

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

/* Scans one range: prints its written pages (`print`) and protects them again; 0 or -errno. */
static int scan_range(struct proc *p, struct range *r, int print) {
  uint64_t at = r->start;
  while (at < r->end) {
    struct pm_scan_arg a = {0};
    a.size = sizeof a;
    a.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC;
    a.start = at;
    a.end = r->end;
    a.vec = (uint64_t)(uintptr_t)vec;
    a.vec_len = VEC;
    a.category_mask = PAGE_IS_WRITTEN;
    a.return_mask = PAGE_IS_WRITTEN;
    long n = ioctl(p->pagemap, PAGEMAP_SCAN, &a);
    if (n < 0) return -errno;
    for (long i = 0; print && i < n; i++)
      printf("w %d %llu %llu\n", p->pid, (unsigned long long)(vec[i].start / PAGE),
             (unsigned long long)((vec[i].end - vec[i].start) / PAGE));
    if (a.walk_end <= at) return -EIO;
    at = a.walk_end;
  }
  return 0;
}

static int track(struct proc *p) {
  const char *what = "";
  int fd = steal_uffd(p->pid, &what);
  if (fd < 0) {
    printf("fail %d %d %s\n", p->pid, -fd, what);
    return -1;
  }
  p->uffd = fd;
  struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED};
  if (ioctl(fd, UFFDIO_API, &api) != 0) {
    printf("fail %d %d UFFDIO_API\n", p->pid, errno);
    return -1;
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/pagemap", p->pid);
  p->pagemap = open(path, O_RDONLY | O_CLOEXEC);
  snprintf(path, sizeof path, "/proc/%d/maps", p->pid);
  FILE *f = fopen(path, "r");
  if (p->pagemap < 0 || f == NULL) {
    printf("fail %d %d open\n", p->pid, errno);
    if (f != NULL) fclose(f);
    return -1;
  }
  char line[512];
  size_t cap = 0;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    char perms[5] = "";
    if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) != 3) continue;
    /* Private regions (what CRIU dumps from memory), not the kernel's own. */
    if (perms[3] != 'p' || strstr(line, "[vsyscall]") || strstr(line, "[vvar") || strstr(line, "[vdso]"))
      continue;
    struct uffdio_register reg = {.range = {.start = lo, .len = hi - lo}, .mode = UFFDIO_REGISTER_MODE_WP};
    if (ioctl(fd, UFFDIO_REGISTER, &reg) != 0) {
      printf("skip %d %llu %llu %d\n", p->pid, (unsigned long long)(lo / PAGE), (unsigned long long)((hi - lo) / PAGE), errno);
      continue;
    }
    if (p->nranges == cap) {
      cap = cap ? cap * 2 : 32;
      p->ranges = realloc(p->ranges, cap * sizeof *p->ranges);
      if (p->ranges == NULL) exit(1);
    }
    p->ranges[p->nranges++] = (struct range){lo, hi, 1};
  }
  fclose(f);
  /* Protect everything: the first scan finds every page "written" and protects it. */
  for (size_t i = 0; i < p->nranges; i++) {
    struct range *r = &p->ranges[i];
    int e = scan_range(p, r, 0);
    if (e != 0) {
      printf("skip %d %llu %llu %d\n", p->pid, (unsigned long long)(r->start / PAGE),
             (unsigned long long)((r->end - r->start) / PAGE), -e);
      r->live = 0;
    } else {
      printf("track %d %llu %llu\n", p->pid, (unsigned long long)(r->start / PAGE),
             (unsigned long long)((r->end - r->start) / PAGE));
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: godwit-wptrack PID...\n");
    return 2;
  }
  int n = argc - 1, tracked = 0;
  struct proc *ps = calloc((size_t)n, sizeof *ps);
  if (ps == NULL) return 1;
  for (int i = 0; i < n; i++) {
    ps[i].pid = atoi(argv[i + 1]);
    ps[i].uffd = ps[i].pagemap = -1;
    if (ps[i].pid <= 0) {
      fprintf(stderr, "godwit-wptrack: not a pid: %s\n", argv[i + 1]);
      return 2;
    }
    if (track(&ps[i]) == 0) tracked++;
  }
  printf("ready\n");
  fflush(stdout);
  if (tracked == 0) return 1;
  char cmd[64];
  while (fgets(cmd, sizeof cmd, stdin) != NULL) {
    if (strncmp(cmd, "close", 5) == 0) break;
    if (strncmp(cmd, "collect", 7) != 0) {
      printf("error unknown command\n");
      fflush(stdout);
      continue;
    }
    double t0 = now_us();
    for (int i = 0; i < n; i++) {
      struct proc *p = &ps[i];
      for (size_t k = 0; k < p->nranges; k++) {
        struct range *r = &p->ranges[k];
        if (!r->live) continue;
        int e = scan_range(p, r, 1);
        if (e != 0) {
          r->live = 0;
          printf("lost %d %llu %llu %d\n", p->pid, (unsigned long long)(r->start / PAGE),
                 (unsigned long long)((r->end - r->start) / PAGE), -e);
        }
      }
    }
    printf("done %.0f\n", now_us() - t0);
    fflush(stdout);
  }
  for (int i = 0; i < n; i++) {
    if (ps[i].uffd >= 0) close(ps[i].uffd);
    if (ps[i].pagemap >= 0) close(ps[i].pagemap);
  }
  return 0;
}
