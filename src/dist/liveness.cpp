#include "dist/liveness.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "core/error.h"

namespace recode::liveness {
namespace {

using Clock = std::chrono::steady_clock;
// The messages: a heartbeat, a goodbye, and (from rank 0) "rank <4 bytes> failed".
constexpr char kBeat = 'h', kBye = 'q', kFailed = 'f';

struct Peer {
  int fd = -1;
  int rank = 0;  // the rank at the other end
  Clock::time_point seen;
  bool gone = false;  // said goodbye
  std::string pending;
};

std::vector<Peer> g_peers;
std::thread g_thread;
std::atomic<bool> g_stop{false};
int g_rank = 0, g_size = 1;
std::function<void()> g_on_fault;
std::function<std::string()> g_health;

int64_t ms_left(Clock::time_point deadline) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
}

void send_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return;  // a broken peer shows up on the reading side
    p += w;
    n -= (size_t)w;
  }
}

bool recv_all(int fd, char* p, size_t n, Clock::time_point deadline) {
  while (n > 0) {
    pollfd q{fd, POLLIN, 0};
    const int64_t left = ms_left(deadline);
    if (left <= 0 || ::poll(&q, 1, (int)left) <= 0) return false;
    ssize_t r = ::recv(fd, p, n, 0);
    if (r <= 0) return false;
    p += r;
    n -= (size_t)r;
  }
  return true;
}

[[noreturn]] void fail(const std::string& why, int failed_rank) {
  std::fprintf(stderr, "recode: rank %d of %d: %s; ending this rank\n", g_rank, g_size, why.c_str());
  std::fflush(stderr);
  if (g_rank == 0 && failed_rank > 0) {
    char msg[5] = {kFailed};
    const uint32_t r = htonl((uint32_t)failed_rank);
    std::memcpy(msg + 1, &r, 4);
    for (Peer& p : g_peers)
      if (p.rank != failed_rank && !p.gone) send_all(p.fd, msg, sizeof msg);
  }
  if (g_on_fault) g_on_fault();
  std::_Exit(1);
}

void watch(int interval_ms, int timeout_ms) {
  std::vector<pollfd> fds(g_peers.size());
  auto last_beat = Clock::now() - std::chrono::milliseconds(interval_ms);
  while (!g_stop.load()) {
    if (ms_left(last_beat + std::chrono::milliseconds(interval_ms)) <= 0) {
      for (Peer& p : g_peers)
        if (!p.gone) send_all(p.fd, &kBeat, 1);
      last_beat = Clock::now();
    }
    for (size_t i = 0; i < g_peers.size(); ++i) fds[i] = {g_peers[i].gone ? -1 : g_peers[i].fd, POLLIN, 0};
    ::poll(fds.data(), fds.size(), std::min(interval_ms, 200));
    if (g_stop.load()) return;
    if (g_health) {
      const std::string why = g_health();
      if (!why.empty()) fail(why, -1);
    }
    for (size_t i = 0; i < g_peers.size(); ++i) {
      Peer& p = g_peers[i];
      if (p.gone) continue;
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        char buf[256];
        ssize_t r = ::recv(p.fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
          if (g_stop.load()) return;
          fail(p.rank == 0 ? "rank 0 ended without finishing (its connection closed): see its error"
                           : "rank " + std::to_string(p.rank) + " died (its connection to rank 0 closed)",
               p.rank);
        }
        if (r > 0) {
          p.seen = Clock::now();
          p.pending.append(buf, (size_t)r);
          for (size_t k = 0; k < p.pending.size(); ++k) {
            if (p.pending[k] == kBye) p.gone = true;
            if (p.pending[k] == kFailed && k + 5 > p.pending.size()) break;  // its rank arrives with the next read
            if (p.pending[k] == kFailed) {
              uint32_t f;
              std::memcpy(&f, p.pending.data() + k + 1, 4);
              fail("rank " + std::to_string(ntohl(f)) + " failed (rank 0 saw its connection close or go silent)", -1);
            }
          }
          const size_t cut = p.pending.rfind(kFailed);
          p.pending = cut == std::string::npos ? std::string() : p.pending.substr(cut);
        }
      }
      if (!p.gone && ms_left(p.seen + std::chrono::milliseconds(timeout_ms)) < 0) {
        char secs[32];
        std::snprintf(secs, sizeof secs, "%.1f", timeout_ms / 1000.0);
        fail("rank " + std::to_string(p.rank) + " stopped answering (no heartbeat for " + secs + " s)", p.rank);
      }
    }
  }
}

int connect_to(const std::string& host, int port, Clock::time_point deadline, std::string& why) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0) {
    why = std::string("cannot resolve ") + host + ": " + gai_strerror(rc);
    return -1;
  }
  for (;;) {
    for (addrinfo* a = res; a; a = a->ai_next) {
      int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) continue;
      if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
        ::freeaddrinfo(res);
        return fd;
      }
      why = std::strerror(errno);
      ::close(fd);
    }
    if (ms_left(deadline) <= 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // rank 0 may not listen yet
  }
  ::freeaddrinfo(res);
  return -1;
}

}  // namespace

void start(int rank, int size, const std::string& host, int port, int interval_ms, int timeout_ms,
           std::function<void()> on_fault, std::function<std::string()> health) {
  if (size <= 1 || g_thread.joinable()) return;
  g_rank = rank;
  g_size = size;
  g_on_fault = std::move(on_fault);
  g_health = std::move(health);
  const auto deadline = Clock::now() + std::chrono::milliseconds(2 * timeout_ms);
  if (rank == 0) {
    int ls = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1, zero = 0;
    ::setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ::setsockopt(ls, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    sockaddr_in6 addr{};
    addr.sin6_family = AF_INET6;
    addr.sin6_addr = in6addr_any;
    addr.sin6_port = htons((uint16_t)port);
    if (ls < 0 || ::bind(ls, (sockaddr*)&addr, sizeof addr) != 0 || ::listen(ls, size) != 0) {
      const std::string why = std::strerror(errno);
      if (ls >= 0) ::close(ls);
      throw Error("ERR_DIST", "liveness: rank 0 cannot listen on port " + std::to_string(port) + ": " + why);
    }
    std::vector<bool> arrived(size, false);
    int count = 0;
    while (count < size - 1) {
      pollfd q{ls, POLLIN, 0};
      const int64_t left = ms_left(deadline);
      if (left <= 0 || ::poll(&q, 1, (int)left) <= 0) break;
      int fd = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      uint32_t r = 0;
      if (!recv_all(fd, (char*)&r, 4, deadline) || (r = ntohl(r)) < 1 || (int)r >= size || arrived[r]) {
        ::close(fd);
        continue;
      }
      arrived[r] = true;
      ++count;
      g_peers.push_back({fd, (int)r, Clock::now(), false, {}});
    }
    ::close(ls);
    if (count < size - 1) {
      std::string missing;
      for (int r = 1; r < size; ++r)
        if (!arrived[r]) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      for (Peer& p : g_peers) ::close(p.fd);
      g_peers.clear();
      throw Error("ERR_DIST", "liveness: rank(s) " + missing + " of " + std::to_string(size) +
                                  " did not connect to rank 0 within " + std::to_string(2 * timeout_ms / 1000) + " s");
    }
  } else {
    std::string why;
    int fd = connect_to(host, port, deadline, why);
    if (fd < 0)
      throw Error("ERR_DIST", "liveness: rank " + std::to_string(rank) + " could not connect to rank 0 at " + host +
                                  ":" + std::to_string(port) + " (" + why + ")");
    const uint32_t r = htonl((uint32_t)rank);
    send_all(fd, (const char*)&r, 4);
    g_peers.push_back({fd, 0, Clock::now(), false, {}});
  }
  for (Peer& p : g_peers) {
    int one = 1;
    ::setsockopt(p.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  g_stop = false;
  g_thread = std::thread(watch, interval_ms, timeout_ms);
}

void stop() {
  if (!g_thread.joinable()) return;
  g_stop = true;
  for (Peer& p : g_peers) send_all(p.fd, &kBye, 1);
  g_thread.join();
  for (Peer& p : g_peers) ::close(p.fd);
  g_peers.clear();
}

}  // namespace recode::liveness
