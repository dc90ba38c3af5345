// SPDX-License-Identifier: MIT
//
// Values that cross in their wire form (std::string, std::vector, ...), side
// by side in one run with what the same transfer costs written by hand:
//   1. A 64 MiB std::vector<char> returned by fork_call, end to end, against
//      the same bytes sent through a pipe by hand: fork(), the child builds
//      the vector and write()s it to a pipe, the parent read()s it into a
//      std::vector<char> of 64 MiB, waitpid. Both children build the vector
//      with the same function. Target: fork_call at least 2x faster.
//   2. A 100-byte std::string result against an int result, for fork_call
//      and for a warm pool's tiny task. Target: ratio <= 1.10 for each.
//   3. A std::vector<std::string> of 1,000,000 strings of 16 bytes returned
//      by fork_call, against the by-hand minimum for a value that is not
//      flat: the parent maps MAP_SHARED | MAP_ANONYMOUS memory (large enough)
//      before fork(); the child builds the same vector, serialises it into
//      one private buffer (a count, then each string's 64-bit length and
//      bytes: fork_call's wire layout, without its checks), copies the
//      buffer into the mapping and writes its size to a pipe; the parent
//      rebuilds the std::vector<std::string> from the mapping, trusting
//      every length, unmaps it and reaps. Target: within 2x.
//   4. A pool task taking a 16 MiB std::vector<double> argument (returning
//      its size) against "copy the vector in-process, then a tiny task's
//      round trip": std::vector<double> copy(v) (allocation + memcpy) plus
//      submit(x * x).get() on the same warm pool, timed as one sample.
//      Target: within 1.5x.
// Every sample ends once the parent holds the value and the child is
// reaped; the parent destroys the value after the clock stops, on both
// sides. The competitors of each part are sampled in interleaved rounds, so
// drift (frequency, the page cache, other tenants) hits all of them alike.
// Targets are printed beside the ratios, not judged here (docs/benchmarks.md).
//
// Run: build/<dir>/bench/bench_values [--smoke]

#include <forksafe/fork_call.hpp>
#include <forksafe/process_pool.hpp>

#include "bench.hpp"

#include <cstdint> // std::uint64_t: lengths on the wire
#include <cstdio>  // std::perror, std::snprintf
#include <cstdlib> // std::_Exit
#include <cstring> // std::memcpy
#include <memory>  // the child's serialisation buffer
#include <string>  // the string results
#include <utility> // std::pair
#include <vector>  // the vector results, samples

#include <fcntl.h>        // O_CLOEXEC
#include <sys/mman.h>     // mmap: the by-hand shared mapping
#include <sys/resource.h> // getrusage: page faults of the anchor's copy
#include <sys/wait.h>     // waitpid
#include <unistd.h>       // pipe2, fork, read, write, _exit

namespace {

constexpr std::size_t page = 4096;
constexpr std::size_t big_bytes = std::size_t{64} << 20;
constexpr std::size_t string_count = 1'000'000;
constexpr std::size_t string_length = 16;
constexpr std::size_t arg_doubles = (std::size_t{16} << 20) / sizeof(double);

volatile std::uint64_t sink; // keeps results from being optimised out

void die(const char* what) {
  std::perror(what);
  std::_Exit(1);
}

// Tells the optimiser the memory at `p` is used, so a value built only to be
// thrown away is still built.
void escape(const void* p) { asm volatile("" : : "g"(p) : "memory"); }

void reap(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) die("child");
}

void write_all(int fd, const void* data, std::size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t done = 0; done < n;) {
    const ssize_t w = ::write(fd, p + done, n - done);
    if (w <= 0) ::_exit(1);
    done += static_cast<std::size_t>(w);
  }
}

void read_all(int fd, void* data, std::size_t n) {
  auto* p = static_cast<unsigned char*>(data);
  for (std::size_t done = 0; done < n;) {
    const ssize_t r = ::read(fd, p + done, n - done);
    if (r <= 0) die("read");
    done += static_cast<std::size_t>(r);
  }
}

// ---- part 1: 64 MiB std::vector<char> ---------------------------------------

// What every child of part 1 returns or sends, built the same way on each side.
std::vector<char> make_bytes() { return std::vector<char>(big_bytes, 'z'); }

void check_bytes(const std::vector<char>& v) {
  if (v.size() != big_bytes || v.front() != 'z' || v[big_bytes / 2] != 'z' || v.back() != 'z') die("wrong bytes");
}

// A pipe, then fork(): in the child (0 returned) only the write end is open.
pid_t fork_with_pipe(int (&fds)[2]) {
  if (::pipe2(fds, O_CLOEXEC) != 0) die("pipe2");
  const pid_t pid = ::fork();
  if (pid < 0) die("fork");
  if (pid == 0) ::close(fds[0]);
  return pid;
}

std::vector<char> bytes_by_fork_call() { return forksafe::fork_call(make_bytes).get(); }

std::vector<char> bytes_through_pipe() {
  int fds[2];
  const pid_t pid = fork_with_pipe(fds);
  if (pid == 0) {
    const std::vector<char> v = make_bytes();
    write_all(fds[1], v.data(), v.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::vector<char> got(big_bytes);
  read_all(fds[0], got.data(), got.size());
  ::close(fds[0]);
  reap(pid);
  return got;
}

// Neither: fork, the child builds the vector and exits. What both spend
// before any byte moves.
template <class Make>
void build_only(Make make) {
  const pid_t pid = ::fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    const auto v = make();
    escape(v.data());
    ::_exit(0);
  }
  reap(pid);
}

// ---- part 2: a 100-byte string against an int -------------------------------

void fork_call_int() {
  if (forksafe::fork_call([] { return 42; }).get() != 42) die("fork_call returned a wrong int");
}

void fork_call_string() {
  if (forksafe::fork_call([] { return std::string(100, 's'); }).get().size() != 100) die("wrong string");
}

// The same by hand, for context (not a target's anchor): fork + pipe +
// waitpid, the child sending an int, or building a 100-byte std::string
// and sending its bytes, which the parent makes a std::string of. It shows
// what allocating in a freshly forked child costs by itself (its first
// malloc writes to pages still shared with the parent).
template <bool string_result>
void by_hand_small() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) die("pipe2");
  const pid_t pid = ::fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    if constexpr (string_result) {
      const std::string s(100, 's');
      escape(s.data());
      write_all(fds[1], s.data(), s.size());
    } else {
      const int value = 42;
      write_all(fds[1], &value, sizeof value);
    }
    ::_exit(0);
  }
  ::close(fds[1]);
  if constexpr (string_result) {
    char bytes[100];
    read_all(fds[0], bytes, sizeof bytes);
    const std::string got(bytes, sizeof bytes);
    escape(got.data());
  } else {
    int value = 0;
    read_all(fds[0], &value, sizeof value);
    if (value != 42) die("wrong int");
  }
  ::close(fds[0]);
  reap(pid);
}

int square(int x) { return x * x; }
std::string hundred_bytes(int x) { return std::string(100, static_cast<char>('a' + x % 26)); }

// ---- part 3: 1,000,000 strings of 16 bytes ----------------------------------

std::vector<std::string> make_strings() {
  std::vector<std::string> v;
  v.reserve(string_count);
  for (std::size_t i = 0; i < string_count; ++i) {
    std::string s(string_length, 'k');
    const auto n = static_cast<std::uint64_t>(i);
    std::memcpy(s.data(), &n, sizeof n);
    v.push_back(std::move(s));
  }
  return v;
}

void check_strings(const std::vector<std::string>& v) {
  if (v.size() != string_count) die("wrong count of strings");
  for (std::size_t i : {std::size_t{0}, string_count / 3, string_count - 1}) {
    std::uint64_t n = 0;
    if (v[i].size() != string_length) die("wrong string length");
    std::memcpy(&n, v[i].data(), sizeof n);
    if (n != i || v[i].back() != 'k') die("wrong string");
  }
}

std::vector<std::string> strings_by_fork_call() { return forksafe::fork_call(make_strings).get(); }

// The serialised form: a count, then each string's length (8 bytes) and
// bytes. The mapping is sized for the known value, rounded up to pages.
constexpr std::size_t strings_mapping_bytes = (8 + string_count * (8 + string_length) + page - 1) / page * page;

std::vector<std::string> strings_by_hand() {
  void* shared = ::mmap(nullptr, strings_mapping_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) die("mmap");
  int fds[2];
  const pid_t pid = fork_with_pipe(fds);
  if (pid == 0) {
    const std::vector<std::string> v = make_strings();
    std::uint64_t total = 8;
    for (const auto& s : v) total += 8 + s.size();
    if (total > strings_mapping_bytes) ::_exit(1);
    const std::unique_ptr<unsigned char[]> buffer(new unsigned char[static_cast<std::size_t>(total)]); // uninitialised
    unsigned char* out = buffer.get();
    const std::uint64_t count = v.size();
    std::memcpy(out, &count, 8);
    out += 8;
    for (const auto& s : v) {
      const std::uint64_t length = s.size();
      std::memcpy(out, &length, 8);
      std::memcpy(out + 8, s.data(), s.size());
      out += 8 + s.size();
    }
    std::memcpy(shared, buffer.get(), static_cast<std::size_t>(total));
    write_all(fds[1], &total, sizeof total);
    ::_exit(0);
  }
  ::close(fds[1]);
  std::uint64_t total = 0;
  read_all(fds[0], &total, sizeof total);
  ::close(fds[0]);
  const auto* in = static_cast<const unsigned char*>(shared);
  std::uint64_t count = 0;
  std::memcpy(&count, in, 8);
  in += 8;
  std::vector<std::string> got;
  got.reserve(static_cast<std::size_t>(count));
  for (std::uint64_t i = 0; i < count; ++i) {
    std::uint64_t length = 0;
    std::memcpy(&length, in, 8);
    got.emplace_back(reinterpret_cast<const char*>(in + 8), static_cast<std::size_t>(length));
    in += 8 + length;
  }
  ::munmap(shared, strings_mapping_bytes);
  reap(pid);
  return got;
}

// ---- part 4: a 16 MiB argument --------------------------------------------

constexpr auto count_of = [](const std::vector<double>& v) { return v.size(); };

long minor_faults() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

// ---- helpers ------------------------------------------------------------------

// Times `take` (which returns a value), checks the value after the clock
// stopped, then destroys it (also after the clock stopped).
template <class Take, class Check>
double sample_value(Take take, Check check) {
  decltype(take()) got;
  const double ns = bench::time_ns([&] { got = take(); });
  check(got);
  return ns;
}

// "2.10x faster" or "1.40x slower": ours against the anchor, end to end.
std::string speed(const bench::stats& ours, const bench::stats& anchor, const char* target) {
  char line[160];
  if (ours.median <= anchor.median) {
    std::snprintf(line, sizeof line, "%.2fx faster end to end [target %s]", anchor.median / ours.median, target);
  } else {
    std::snprintf(line, sizeof line, "%.2fx slower end to end [target %s]", ours.median / anchor.median, target);
  }
  return line;
}

// Parts 1 and 3: fork_call against a transfer by hand of the same value,
// and the build alone, in interleaved rounds; prints the rows, returns
// fork_call's and the anchor's summaries.
template <class Ours, class Hand, class Check, class Make>
auto compare_transfer(bool smoke, Ours ours_fn, Hand hand_fn, Check check, Make make, const char* title,
                      const char* hand_label, const char* target) {
  const std::size_t rounds = bench::size(smoke, 12, 1);
  check(ours_fn()); // warm-up, and a check of each side
  check(hand_fn());
  std::vector<double> ours, hand, build;
  for (std::size_t r = 0; r < rounds; ++r) {
    ours.push_back(sample_value(ours_fn, check));
    hand.push_back(sample_value(hand_fn, check));
    build.push_back(bench::time_ns([&make] { build_only(make); }));
  }
  auto ours_s = bench::summarize(std::move(ours));
  auto hand_s = bench::summarize(std::move(hand));
  const auto build_s = bench::summarize(std::move(build));
  bench::title(title);
  bench::row("fork + build in the child, no transfer", build_s, "ms", 1e6);
  bench::row(hand_label, hand_s, "ms", 1e6);
  bench::row("fork_call(f).get(), f returns the vector", ours_s, "ms", 1e6, &hand_s, target);
  return std::pair{ours_s, hand_s};
}

} // namespace

int main(int argc, char** argv) {
  const bool smoke = bench::smoke(argc, argv);

  // Part 1: 64 MiB.
  {
    const auto ours_s = compare_transfer(smoke, bytes_by_fork_call, bytes_through_pipe, check_bytes, make_bytes,
                                         "fork_call: a 64 MiB std::vector<char> result, end to end, per call (ms)",
                                         "by hand: fork, build, pipe, read, waitpid", "<= 0.50, >= 2x faster");
    bench::fact("fork_call vs the pipe", speed(ours_s.first, ours_s.second, ">= 2x faster"));
  }

  // Part 2: a 100-byte std::string against an int, fork_call, then the pool.
  {
    const std::size_t rounds = bench::size(smoke, 60, 2);
    const std::size_t per_round = bench::size(smoke, 20, 3);
    for (int i = 0; i < 20; ++i) { // warm-up
      fork_call_int();
      fork_call_string();
      by_hand_small<false>();
      by_hand_small<true>();
    }
    std::vector<double> with_int, with_string, hand_int, hand_string;
    for (std::size_t r = 0; r < rounds; ++r) {
      for (std::size_t i = 0; i < per_round; ++i) with_int.push_back(bench::time_ns(fork_call_int));
      for (std::size_t i = 0; i < per_round; ++i) with_string.push_back(bench::time_ns(fork_call_string));
      for (std::size_t i = 0; i < per_round; ++i) hand_int.push_back(bench::time_ns(by_hand_small<false>));
      for (std::size_t i = 0; i < per_round; ++i) hand_string.push_back(bench::time_ns(by_hand_small<true>));
    }
    const auto int_s = bench::summarize(std::move(with_int));
    const auto string_s = bench::summarize(std::move(with_string));
    const auto hand_int_s = bench::summarize(std::move(hand_int));
    const auto hand_string_s = bench::summarize(std::move(hand_string));
    bench::title("fork_call: a 100-byte std::string result vs an int, per call (µs)");
    bench::row("by hand: fork, pipe, waitpid; an int", hand_int_s, "us", 1e3);
    bench::row("by hand: the same, a 100-byte std::string", hand_string_s, "us", 1e3, &hand_int_s);
    bench::row("fork_call(f).get(), f returns int", int_s, "us", 1e3);
    bench::row("... f returns a 100-byte std::string", string_s, "us", 1e3, &int_s, "<= 1.10");
  }
  {
    const std::size_t rounds = bench::size(smoke, 100, 2);
    const std::size_t per_round = bench::size(smoke, 50, 10);
    forksafe::process_pool pool(1);
    for (int i = 0; i < 100; ++i) { // warm
      (void)pool.submit(square, i).get();
      (void)pool.submit(hundred_bytes, i).get();
    }
    std::vector<double> with_int, with_string;
    for (std::size_t r = 0; r < rounds; ++r) {
      for (std::size_t i = 0; i < per_round; ++i) {
        const int x = static_cast<int>(i & 0xff);
        with_int.push_back(bench::time_ns([&] {
          if (pool.submit(square, x).get() != x * x) die("wrong square");
        }));
      }
      for (std::size_t i = 0; i < per_round; ++i) {
        const int x = static_cast<int>(i & 0xff);
        with_string.push_back(bench::time_ns([&] {
          if (pool.submit(hundred_bytes, x).get().size() != 100) die("wrong string");
        }));
      }
    }
    const auto int_s = bench::summarize(std::move(with_int));
    const auto string_s = bench::summarize(std::move(with_string));
    bench::title("process_pool: a 100-byte std::string result vs an int, warm pool of 1 worker (µs)");
    bench::row("submit(f, x).get(), f returns int", int_s, "us", 1e3);
    bench::row("... f returns a 100-byte std::string", string_s, "us", 1e3, &int_s, "<= 1.10");
  }

  // Part 3: 1,000,000 strings of 16 bytes.
  (void)compare_transfer(smoke, strings_by_fork_call, strings_by_hand, check_strings, make_strings,
                         "fork_call: a std::vector<std::string> of 1,000,000 x 16 bytes, end to end, per call (ms)",
                         "by hand: serialise, shared mapping, rebuild", "<= 2.0");

  // Part 4: a 16 MiB std::vector<double> argument.
  {
    const std::size_t rounds = bench::size(smoke, 30, 2);
    forksafe::process_pool pool(1);
    const std::vector<double> v(arg_doubles, 0.5);
    const auto copy_in_process = [&v] {
      std::vector<double> copy(v);
      escape(copy.data());
      sink = copy.size();
    };
    // The same bytes into memory that is certainly fresh: glibc's malloc
    // serves `copy(v)` from memory it kept from the previous copy once a
    // 16 MiB block has been freed (its mmap threshold rises), so the copy
    // above may fault no page at all. Shown beside it, not the target's anchor.
    const auto copy_to_fresh_memory = [&v] {
      const std::size_t bytes = v.size() * sizeof(double);
      void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) die("mmap");
      std::memcpy(p, v.data(), bytes);
      escape(p);
      ::munmap(p, bytes);
    };
    const auto tiny = [&pool](int x) {
      if (pool.submit(square, x).get() != x * x) die("wrong square");
    };
    const auto with_argument = [&pool, &v] {
      if (pool.submit(count_of, v).get() != arg_doubles) die("wrong count");
    };
    for (int i = 0; i < 3; ++i) { // warm
      with_argument();
      copy_in_process();
      tiny(i);
    }
    std::vector<double> ours, anchor, fresh_anchor, copy, fresh_copy, round_trip;
    long copy_faults = 0;
    for (std::size_t r = 0; r < rounds; ++r) {
      const int x = static_cast<int>(r & 0xff);
      ours.push_back(bench::time_ns(with_argument));
      anchor.push_back(bench::time_ns([&] {
        copy_in_process();
        tiny(x);
      }));
      fresh_anchor.push_back(bench::time_ns([&] {
        copy_to_fresh_memory();
        tiny(x);
      }));
      const long faults = minor_faults();
      copy.push_back(bench::time_ns(copy_in_process));
      copy_faults += minor_faults() - faults;
      fresh_copy.push_back(bench::time_ns(copy_to_fresh_memory));
      round_trip.push_back(bench::time_ns([&] { tiny(x); }));
    }
    const auto ours_s = bench::summarize(std::move(ours));
    const auto anchor_s = bench::summarize(std::move(anchor));
    const auto fresh_anchor_s = bench::summarize(std::move(fresh_anchor));
    const auto copy_s = bench::summarize(std::move(copy));
    const auto fresh_copy_s = bench::summarize(std::move(fresh_copy));
    const auto round_trip_s = bench::summarize(std::move(round_trip));
    bench::title("process_pool: a task taking a 16 MiB std::vector<double>, warm pool of 1 worker (ms)");
    bench::row("std::vector<double> copy(v), in-process", copy_s, "ms", 1e6);
    bench::row("the same bytes into fresh mmap'd memory", fresh_copy_s, "ms", 1e6);
    bench::row("tiny task round trip, submit(x * x).get()", round_trip_s, "ms", 1e6);
    bench::row("anchor: copy(v) + the tiny round trip", anchor_s, "ms", 1e6);
    bench::row("(the same with the fresh-memory copy)", fresh_anchor_s, "ms", 1e6);
    bench::row("submit(f, v).get(), f returns v.size()", ours_s, "ms", 1e6, &anchor_s, "<= 1.5");
    char line[120];
    std::snprintf(line, sizeof line, "%.3f (against copy(v) + round trip: the target's ratio above)",
                  ours_s.median / fresh_anchor_s.median);
    bench::fact("vs the fresh-memory copy + round trip", line);
    std::snprintf(line, sizeof line, "%.0f per copy (%zu pages of 4 KiB)",
                  static_cast<double>(copy_faults) / static_cast<double>(rounds), arg_doubles * sizeof(double) / page);
    bench::fact("page faults of copy(v)", line);
  }
  return 0;
}
