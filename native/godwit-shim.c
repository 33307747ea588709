/*
 * godwit-shim: the per-container parent process, in the manner of conmon.
 *
 * Contract: `godwit-shim LOG EXITFILE -- RUNC ARGS...`
 *   - detaches into its own session and becomes a child subreaper;
 *   - gives RUNC anonymous pipes as stdin, stdout and stderr, so CRIU sees
 *     external pipes (which runc maps on restore) instead of host files;
 *   - prints "ok <runc-exit>" or "err <runc-exit>" on its original stdout once
 *     RUNC has exited, then closes that stdout, so the caller can wait for it;
 *   - appends everything the container writes to LOG;
 *   - when the container's init (reparented here) exits, writes
 *     "<exit-code>\n" (or "signal <n>\n") to EXITFILE and exits.
 * The write end of stdin is held open and never written, so reads block.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Self-pipe: SIGCHLD writes a byte here, so poll() wakes the moment runc or the init exits
 * (without it, an exit was noticed only at the next 200 ms poll timeout: restores and runs
 * reported up to 400 ms late). */
static int chld_w = -1;

static void on_sigchld(int sig) {
  (void)sig;
  int saved = errno;
  if (write(chld_w, "x", 1) < 0) { /* pipe full: a wakeup is pending anyway */ }
  errno = saved;
}

static void die(const char *msg) {
  fprintf(stderr, "godwit-shim: %s: %s\n", msg, strerror(errno));
  exit(125);
}

static void write_exit(const char *path, int status) {
  char buf[64];
  int n;
  if (WIFEXITED(status)) n = snprintf(buf, sizeof buf, "%d\n", WEXITSTATUS(status));
  else n = snprintf(buf, sizeof buf, "signal %d\n", WTERMSIG(status));
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  if (write(fd, buf, (size_t)n) < 0) { /* nothing more to do */ }
  close(fd);
  rename(tmp, path);
}

int main(int argc, char **argv) {
  if (argc < 5 || strcmp(argv[3], "--") != 0) {
    fprintf(stderr, "usage: godwit-shim LOG EXITFILE -- RUNC ARGS...\n");
    return 125;
  }
  const char *log_path = argv[1];
  const char *exit_path = argv[2];
  char **cmd = &argv[4];

  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) die("pipe");

  /* Detach: the caller waits only for the status line on our stdout. */
  pid_t d = fork();
  if (d < 0) die("fork");
  if (d > 0) _exit(0);
  if (setsid() < 0) die("setsid");
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) die("subreaper");
  signal(SIGPIPE, SIG_IGN);

  int logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (logfd < 0) die("open log");

  int chld[2];
  if (pipe2(chld, O_CLOEXEC | O_NONBLOCK)) die("pipe");
  chld_w = chld[1];
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigchld;
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGCHLD, &sa, NULL) < 0) die("sigaction");

  pid_t runc = fork();
  if (runc < 0) die("fork runc");
  if (runc == 0) {
    if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0) _exit(126);
    execvp(cmd[0], cmd);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(err[1]);

  int runc_status = -1;
  int reported = 0;
  int init_status = 0;
  int have_init = 0;
  int open_pipes = 2;
  int drain_ticks = 0;
  struct pollfd fds[3] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}, {chld[0], POLLIN, 0}};
  char buf[65536];

  for (;;) {
    /* Reap whatever has exited: runc first, then the reparented init. */
    int st;
    pid_t p;
    while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
      if (p == runc) {
        runc_status = st;
      } else {
        init_status = st;
        have_init = 1;
      }
    }
    if (runc_status != -1 && !reported) {
      int code = WIFEXITED(runc_status) ? WEXITSTATUS(runc_status) : 128 + WTERMSIG(runc_status);
      printf("%s %d\n", code == 0 ? "ok" : "err", code);
      fflush(stdout);
      int devnull = open("/dev/null", O_RDWR);
      if (devnull >= 0) { dup2(devnull, 0); dup2(devnull, 1); dup2(devnull, 2); close(devnull); }
      reported = 1;
      if (code != 0) { write_exit(exit_path, runc_status); return 0; }
    }
    /* The init has exited: drain what its namespace still wrote, then record it. */
    if (reported && have_init) {
      if (open_pipes == 0 || ++drain_ticks > 5) {
        write_exit(exit_path, init_status);
        return 0;
      }
    }
    int r = poll(fds, 3, 200);
    if (r < 0 && errno != EINTR) die("poll");
    if (fds[2].revents & POLLIN) {
      while (read(chld[0], buf, sizeof buf) > 0) { /* drain: the loop's waitpid does the work */ }
    }
    for (int i = 0; i < 2; i++) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        if (write(logfd, buf, (size_t)n) < 0) { /* log full: drop */ }
      } else if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
        close(fds[i].fd);
        fds[i].fd = -1;
        open_pipes--;
      }
    }
  }
}
