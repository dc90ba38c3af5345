// SPDX-License-Identifier: MIT
//
// fork_call: what the safety costs, side by side in one run.
//   1. fork_call returning an int against the hand-written minimum: pipe2 +
//      fork + 4-byte write + read + waitpid. Target: ratio <= 1.10. Also the
//      same written carefully (stdio flushed, signals blocked across fork),
//      to show what part of the difference those two alone cost.
//   2. A 64 MiB result: fork_call (built in place in a shared mapping) against
//      the same bytes sent through a pipe into a ready buffer; both against
//      the same fork + fill without any transfer, and against memcpy.
//      Target: fork_call's transfer at least 2x faster than the pipe's.
// The competitors of each part are sampled in interleaved rounds, so drift
// (frequency, the page cache, other tenants) hits all of them alike.

#include <forksafe/process_result.hpp>

#include "bench.hpp"

#include <array>   // the 64 MiB result
#include <csignal> // sigset_t: the careful hand-written version
#include <cstdint> // std::uint32_t
#include <cstdio>  // std::printf, std::fflush
#include <cstring> // std::memcpy
#include <new>     // placement new
#include <vector>  // samples

#include <fcntl.h>    // O_CLOEXEC
#include <pthread.h>  // pthread_sigmask
#include <sys/mman.h> // mmap: fresh memory for the pipe baseline
#include <sys/wait.h> // waitpid
#include <unistd.h>   // pipe2, fork, read, write, _exit

namespace {

constexpr std::size_t big_bytes = std::size_t{64} << 20;
constexpr std::size_t page = 4096;

// 64 MiB filled by its constructor: `return big_result(first)` is a prvalue
// that fork_call's child builds in place.
struct big_result {
  std::array<std::uint32_t, big_bytes / sizeof(std::uint32_t)> words;
  explicit big_result(std::uint32_t first) noexcept {
    for (std::size_t i = 0; i < words.size(); ++i) words[i] = first + static_cast<std::uint32_t>(i);
  }
};

// The parent reads one word per page, so every result is really in its hands.
std::uint64_t touch(const void* data, std::size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint64_t sum = 0;
  for (std::size_t off = 0; off < bytes; off += page) sum += p[off];
  return sum;
}

volatile std::uint64_t sink; // keeps the touches from being optimised out

void die(const char* what) {
  std::perror(what);
  std::_Exit(1);
}

// ---- part 1: an int --------------------------------------------------------

void fork_call_int() {
  if (forksafe::fork_call([] { return 42; }).get() != 42) die("fork_call returned a wrong value");
}

// fork + pipe + waitpid by hand. `careful` adds what fork_call must do:
// flush C stdio first (or buffered output is printed twice) and block every
// signal across fork() (so no handler runs in the child before it is ready).
template <bool careful>
void by_hand_int() {
  sigset_t all;
  sigset_t old;
  if constexpr (careful) {
    std::fflush(nullptr);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) die("pipe2");
  const pid_t pid = ::fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    if constexpr (careful) pthread_sigmask(SIG_SETMASK, &old, nullptr);
    const int value = 42;
    (void)!::write(fds[1], &value, sizeof value);
    ::_exit(0);
  }
  if constexpr (careful) pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::close(fds[1]);
  int value = 0;
  if (::read(fds[0], &value, sizeof value) != static_cast<ssize_t>(sizeof value) || value != 42) die("read");
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
}
void hand_written_int() { by_hand_int<false>(); }
void careful_int() { by_hand_int<true>(); }

// ---- part 2: 64 MiB ----------------------------------------------------------

void fork_call_big() {
  auto r = forksafe::fork_call([] { return big_result(7); });
  const big_result& value = r.get();
  sink = touch(&value, sizeof value);
}

// The child builds the same value in fresh private memory and writes it to a
// pipe; the parent reads it into a buffer that is already faulted in (the
// pipe's best case), then reaps.
void through_pipe_big(unsigned char* into) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) die("pipe2");
  const pid_t pid = ::fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    void* mem = ::mmap(nullptr, big_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) ::_exit(1);
    const auto* value = ::new (mem) big_result(7);
    const auto* bytes = reinterpret_cast<const unsigned char*>(value);
    for (std::size_t done = 0; done < big_bytes;) {
      const ssize_t n = ::write(fds[1], bytes + done, big_bytes - done);
      if (n <= 0) ::_exit(1);
      done += static_cast<std::size_t>(n);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  for (std::size_t done = 0; done < big_bytes;) {
    const ssize_t n = ::read(fds[0], into + done, big_bytes - done);
    if (n <= 0) die("read");
    done += static_cast<std::size_t>(n);
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  sink = touch(into, big_bytes);
}

// Neither: the child builds the value in fresh private memory and exits. What
// both transfers are measured over.
void fill_only_big() {
  const pid_t pid = ::fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    void* mem = ::mmap(nullptr, big_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) ::_exit(1);
    sink = (::new (mem) big_result(7))->words[1];
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
}

unsigned char* faulted_buffer() {
  void* p = ::mmap(nullptr, big_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) die("mmap");
  std::memset(p, 1, big_bytes);
  return static_cast<unsigned char*>(p);
}

double gib_per_s(double ns) { return static_cast<double>(big_bytes) / ns * 1e9 / double(1U << 30); }

} // namespace

int main(int argc, char** argv) {
  const bool smoke = bench::smoke(argc, argv);

  // Part 1, interleaved: a round of each, many rounds.
  {
    const std::size_t rounds = bench::size(smoke, 100, 2);
    const std::size_t per_round = bench::size(smoke, 30, 5);
    for (int i = 0; i < 20; ++i) { // warm-up: page tables, caches, the allocator
      fork_call_int();
      hand_written_int();
      careful_int();
    }
    std::vector<double> ours;
    std::vector<double> hand;
    std::vector<double> careful;
    for (std::size_t r = 0; r < rounds; ++r) {
      for (std::size_t i = 0; i < per_round; ++i) ours.push_back(bench::time_ns(fork_call_int));
      for (std::size_t i = 0; i < per_round; ++i) hand.push_back(bench::time_ns(hand_written_int));
      for (std::size_t i = 0; i < per_round; ++i) careful.push_back(bench::time_ns(careful_int));
    }
    const auto hand_s = bench::summarize(std::move(hand));
    const auto careful_s = bench::summarize(std::move(careful));
    const auto ours_s = bench::summarize(std::move(ours));
    bench::title("fork_call: an int result, per call (µs)");
    bench::row("fork + pipe + waitpid, hand-written", hand_s, "us", 1e3);
    bench::row("... + fflush(NULL) + signals blocked", careful_s, "us", 1e3, &hand_s);
    bench::row("fork_call(f).get(), f returns int", ours_s, "us", 1e3, &hand_s, "<= 1.10");
  }

  // Part 2, interleaved.
  {
    const std::size_t rounds = bench::size(smoke, 15, 1);
    const std::size_t per_round = bench::size(smoke, 2, 1);
    unsigned char* into = faulted_buffer();
    unsigned char* from = faulted_buffer();
    fork_call_big(); // warm-up
    through_pipe_big(into);
    std::vector<double> ours, pipe, fill, copy;
    for (std::size_t r = 0; r < rounds; ++r) {
      for (std::size_t i = 0; i < per_round; ++i) {
        ours.push_back(bench::time_ns(fork_call_big));
        pipe.push_back(bench::time_ns([&] { through_pipe_big(into); }));
        fill.push_back(bench::time_ns(fill_only_big));
        copy.push_back(bench::time_ns([&] {
          std::memcpy(into, from, big_bytes);
          sink = touch(into, big_bytes);
        }));
      }
    }
    const auto ours_s = bench::summarize(std::move(ours));
    const auto pipe_s = bench::summarize(std::move(pipe));
    const auto fill_s = bench::summarize(std::move(fill));
    const auto copy_s = bench::summarize(std::move(copy));
    bench::title("fork_call: a 64 MiB result, per call (ms)");
    bench::row("fork + fill 64 MiB + exit, no transfer", fill_s, "ms", 1e6);
    bench::row("fork + fill + send through a pipe", pipe_s, "ms", 1e6, &fill_s);
    bench::row("fork_call, built in the shared mapping", ours_s, "ms", 1e6, &fill_s);
    bench::row("memcpy 64 MiB (parent, both faulted in)", copy_s, "ms", 1e6);
    const double pipe_transfer = pipe_s.median - fill_s.median;
    const double ours_transfer = ours_s.median - fill_s.median;
    char line[200];
    std::snprintf(line, sizeof line, "%.2f ms; fork_call %.2f ms (%s)", pipe_transfer / 1e6, ours_transfer / 1e6,
                  ours_transfer > 0 ? "over the fill" : "less than the fill alone");
    bench::fact("transfer cost over fork + fill: pipe", line);
    char transfer[80] = "free (fork_call is faster than fork + fill alone)";
    if (ours_transfer > 0) std::snprintf(transfer, sizeof transfer, "%.2fx faster", pipe_transfer / ours_transfer);
    std::snprintf(line, sizeof line, "%.2fx end to end; transfer %s [target >= 2x on the transfer]",
                  pipe_s.median / ours_s.median, transfer);
    bench::fact("fork_call vs pipe", line);
    std::snprintf(line, sizeof line, "pipe %.2f GiB/s, memcpy %.2f GiB/s", gib_per_s(pipe_transfer),
                  gib_per_s(copy_s.median));
    bench::fact("bandwidth of the transfer", line);
    ::munmap(into, big_bytes);
    ::munmap(from, big_bytes);
  }
  return 0;
}
