/*
 * godwit-linkd: the testbed's host-network switch, with a one-way delay and a loss rate per
 * ordered pair of ports. It exists because this machine kind's kernel has no sch_netem (nor
 * sch_fq/sch_etf, which could honour departure times): rate limits stay in the kernel (htb on
 * each host's egress), and delay and loss happen here, in user space.
 *
 * It runs in the testbed's switch namespace, opens an AF_PACKET socket on each port (the switch
 * side of each host's veth), learns source MACs like a bridge, floods broadcast, multicast and
 * unknown unicast, and holds each frame from port I to port J for delay(I,J) before sending it,
 * dropping it with probability loss(I,J). Frames keep their order per (I,J). PACKET_VNET_HDR
 * keeps GSO frames whole, so a 64 KiB TCP segment crosses as one frame.
 *
 *   godwit-linkd --port NAME... [--link FROM,TO,DELAY_US,LOSS_PCT]... [--seed N]
 *
 * Pairs without --link get no delay and no loss. Prints "godwit-linkd ready" on stdout once every
 * socket is bound; SIGUSR1 prints counters on stderr; SIGTERM/SIGINT exit 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/virtio_net.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

#define MAX_PORTS 32
#define MAX_MACS 1024
#define VNET_LEN ((int)sizeof(struct virtio_net_hdr))
#define BUF_SIZE (256 * 1024)
#define MAX_QUEUED_BYTES ((size_t)512 << 20)
#define RX_BATCH 256

struct pkt {
  struct pkt *next;
  uint64_t due_ns;
  uint32_t len;
  unsigned char data[];
};

struct queue {
  struct pkt *head, *tail;
};

struct mac_entry {
  unsigned char mac[6];
  int port;
};

static char port_names[MAX_PORTS][IFNAMSIZ];
static int port_fd[MAX_PORTS];
static int nports;
static uint64_t delay_ns[MAX_PORTS][MAX_PORTS];
static uint64_t loss_threshold[MAX_PORTS][MAX_PORTS]; /* drop when rand64() < threshold */
static struct queue queues[MAX_PORTS][MAX_PORTS];     /* [from][to] */
static size_t queued_bytes;
static struct mac_entry macs[MAX_MACS];
static int nmacs;
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static unsigned long long n_rx, n_tx, n_lost, n_overflow, n_tx_err;
static volatile sig_atomic_t want_stats, want_exit;

static void die(const char *what) {
  fprintf(stderr, "godwit-linkd: %s: %s\n", what, strerror(errno));
  exit(1);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t rand64(void) { /* xorshift64* */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545f4914f6cdd1dULL;
}

static int port_index(const char *name) {
  for (int i = 0; i < nports; i++)
    if (strcmp(port_names[i], name) == 0) return i;
  return -1;
}

static int open_port(const char *name) {
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
  if (fd < 0) die("socket(AF_PACKET)");
  int one = 1, bufsize = 32 << 20;
  if (setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) < 0) die("PACKET_VNET_HDR");
  if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) < 0) die("SO_TIMESTAMPNS");
  (void)setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bufsize, sizeof bufsize) < 0)
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof bufsize);
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bufsize, sizeof bufsize) < 0)
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize);
  unsigned idx = if_nametoindex(name);
  if (idx == 0) {
    fprintf(stderr, "godwit-linkd: no interface %s\n", name);
    exit(1);
  }
  struct sockaddr_ll sll;
  memset(&sll, 0, sizeof sll);
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = (int)idx;
  if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) die("bind");
  struct packet_mreq mr;
  memset(&mr, 0, sizeof mr);
  mr.mr_ifindex = (int)idx;
  mr.mr_type = PACKET_MR_PROMISC;
  if (setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) < 0) die("PACKET_MR_PROMISC");
  return fd;
}

static void learn(const unsigned char *mac, int port) {
  if (mac[0] & 1) return;
  for (int i = 0; i < nmacs; i++) {
    if (memcmp(macs[i].mac, mac, 6) == 0) {
      macs[i].port = port;
      return;
    }
  }
  if (nmacs < MAX_MACS) {
    memcpy(macs[nmacs].mac, mac, 6);
    macs[nmacs++].port = port;
  }
}

static int lookup(const unsigned char *mac) {
  if (mac[0] & 1) return -1;
  for (int i = 0; i < nmacs; i++)
    if (memcmp(macs[i].mac, mac, 6) == 0) return macs[i].port;
  return -1;
}

static void transmit(int to, const unsigned char *data, uint32_t len) {
  if (send(port_fd[to], data, len, MSG_DONTWAIT) < 0) n_tx_err++;
  else n_tx++;
}

/* Queues (or sends at once, when it has no delay and nothing is waiting) one frame from -> to. */
static void forward(int from, int to, const unsigned char *data, uint32_t len, uint64_t rx_ns) {
  if (loss_threshold[from][to] && rand64() < loss_threshold[from][to]) {
    n_lost++;
    return;
  }
  struct queue *q = &queues[from][to];
  if (delay_ns[from][to] == 0 && q->head == NULL) {
    transmit(to, data, len);
    return;
  }
  if (queued_bytes + len > MAX_QUEUED_BYTES) {
    n_overflow++;
    return;
  }
  struct pkt *p = malloc(sizeof *p + len);
  if (!p) {
    n_overflow++;
    return;
  }
  p->next = NULL;
  p->due_ns = rx_ns + delay_ns[from][to];
  p->len = len;
  memcpy(p->data, data, len);
  if (q->tail) q->tail->next = p;
  else q->head = p;
  q->tail = p;
  queued_bytes += len;
}

/*
 * When the kernel received the frame, on CLOCK_MONOTONIC: the delay counts from there, so the
 * time this process takes to wake up and read it is part of the delay, not added to it.
 */
static uint64_t rx_time(struct msghdr *msg) {
  uint64_t mono = now_ns();
  for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS) {
      struct timespec ts, real;
      memcpy(&ts, CMSG_DATA(c), sizeof ts);
      clock_gettime(CLOCK_REALTIME, &real);
      int64_t age = ((int64_t)real.tv_sec - ts.tv_sec) * 1000000000LL + (real.tv_nsec - ts.tv_nsec);
      if (age > 0 && age < 100000000LL) return mono - (uint64_t)age;
    }
  }
  return mono;
}

static void receive(int from, unsigned char *buf) {
  for (int n = 0; n < RX_BATCH; n++) {
    struct sockaddr_ll sll;
    struct iovec iov = {.iov_base = buf, .iov_len = BUF_SIZE};
    union {
      char buf[CMSG_SPACE(sizeof(struct timespec))];
      struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_name = &sll,
                         .msg_namelen = sizeof sll,
                         .msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    ssize_t len = recvmsg(port_fd[from], &msg, MSG_DONTWAIT);
    if (len < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) die("recvmsg");
      return;
    }
    if (sll.sll_pkttype == PACKET_OUTGOING || len < VNET_LEN + ETH_HLEN) continue;
    n_rx++;
    uint64_t rx_ns = rx_time(&msg);
    const unsigned char *eth = buf + VNET_LEN;
    /* The receiver's stack need not verify a checksum the sender's stack computed. */
    ((struct virtio_net_hdr *)buf)->flags &= (uint8_t)~VIRTIO_NET_HDR_F_DATA_VALID;
    learn(eth + 6, from);
    int to = lookup(eth);
    if (to == from) continue;
    if (to >= 0) {
      forward(from, to, buf, (uint32_t)len, rx_ns);
    } else {
      for (int j = 0; j < nports; j++)
        if (j != from) forward(from, j, buf, (uint32_t)len, rx_ns);
    }
  }
}

/*
 * How late ppoll's timeouts fire (moving average, ns). Timers are set that much early and frames
 * due within it are sent, so that frames leave on time on average instead of always late.
 */
static uint64_t wake_late_ns = 20000;
#define MAX_WAKE_LATE_NS 200000

/* Sends every frame due by now (give or take wake_late_ns); returns the earliest due time left, or UINT64_MAX. */
static uint64_t flush_due(void) {
  uint64_t now = now_ns() + wake_late_ns, next = UINT64_MAX;
  for (int i = 0; i < nports; i++) {
    for (int j = 0; j < nports; j++) {
      struct queue *q = &queues[i][j];
      while (q->head && q->head->due_ns <= now) {
        struct pkt *p = q->head;
        transmit(j, p->data, p->len);
        q->head = p->next;
        if (!q->head) q->tail = NULL;
        queued_bytes -= p->len;
        free(p);
      }
      if (q->head && q->head->due_ns < next) next = q->head->due_ns;
    }
  }
  return next;
}

static void on_signal(int sig) {
  if (sig == SIGUSR1) want_stats = 1;
  else want_exit = 1;
}

static void usage(void) {
  fprintf(stderr, "usage: godwit-linkd --port NAME... [--link FROM,TO,DELAY_US,LOSS_PCT]... [--seed N]\n");
  exit(2);
}

int main(int argc, char **argv) {
  /* Ports first, so --link can name them in any order. */
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
      if (nports == MAX_PORTS || strlen(argv[i + 1]) >= IFNAMSIZ) usage();
      strcpy(port_names[nports++], argv[++i]);
    } else if ((strcmp(argv[i], "--link") == 0 || strcmp(argv[i], "--seed") == 0) && i + 1 < argc) {
      i++;
    } else {
      usage();
    }
  }
  if (nports < 1) usage();
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--link") == 0) {
      char from[IFNAMSIZ + 1], to[IFNAMSIZ + 1];
      unsigned long long delay_us;
      double loss;
      if (sscanf(argv[++i], "%16[^,],%16[^,],%llu,%lf", from, to, &delay_us, &loss) != 4) usage();
      int a = port_index(from), b = port_index(to);
      if (a < 0 || b < 0 || loss < 0 || loss > 100) usage();
      delay_ns[a][b] = delay_us * 1000ULL;
      loss_threshold[a][b] = loss >= 100 ? UINT64_MAX : (uint64_t)(loss / 100.0 * 18446744073709551615.0);
    } else if (strcmp(argv[i], "--seed") == 0) {
      rng_state = strtoull(argv[++i], NULL, 10) | 1;
    } else {
      i++;
    }
  }

  /* Wake up on time: the default 50 us timer slack is a tenth of the lan profile's delay. */
  (void)prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  struct pollfd pfd[MAX_PORTS];
  for (int i = 0; i < nports; i++) {
    port_fd[i] = open_port(port_names[i]);
    pfd[i].fd = port_fd[i];
    pfd[i].events = POLLIN;
  }
  unsigned char *buf = malloc(BUF_SIZE);
  if (!buf) die("malloc");
  printf("godwit-linkd ready ports=%d\n", nports);
  fflush(stdout);

  while (!want_exit) {
    if (want_stats) {
      want_stats = 0;
      fprintf(stderr, "godwit-linkd rx=%llu tx=%llu lost=%llu overflow=%llu tx_err=%llu queued_bytes=%zu\n",
              n_rx, n_tx, n_lost, n_overflow, n_tx_err, queued_bytes);
    }
    uint64_t next = flush_due();
    struct timespec ts, *tsp = NULL;
    uint64_t target = 0;
    if (next != UINT64_MAX) {
      uint64_t now = now_ns();
      target = next > wake_late_ns ? next - wake_late_ns : 0;
      uint64_t wait = target > now ? target - now : 0;
      if (wait == 0) target = 0; /* already due: nothing to learn from this wake-up */
      ts.tv_sec = (time_t)(wait / 1000000000ULL);
      ts.tv_nsec = (long)(wait % 1000000000ULL);
      tsp = &ts;
    }
    int n = ppoll(pfd, (nfds_t)nports, tsp, NULL);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("ppoll");
    }
    if (n == 0 && target != 0) {
      uint64_t now = now_ns();
      uint64_t late = now > target ? now - target : 0;
      if (late > MAX_WAKE_LATE_NS) late = MAX_WAKE_LATE_NS;
      wake_late_ns = (wake_late_ns * 7 + late) / 8;
    }
    for (int i = 0; i < nports && n > 0; i++) {
      if (pfd[i].revents & (POLLERR | POLLNVAL)) {
        fprintf(stderr, "godwit-linkd: port %s failed\n", port_names[i]);
        return 1;
      }
      if (pfd[i].revents & POLLIN) receive(i, buf);
    }
  }
  return 0;
}
