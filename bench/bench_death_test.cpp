// SPDX-License-Identifier: MIT
//
// forksafe/doctest.hpp: what a death test costs, side by side in one run.
//   1. FORKSAFE_CHECK_EXITS(std::_Exit(3), 3), the whole macro inside a
//      doctest test case, against the hand-written minimum: fork, the
//      statement in the child, waitpid, a check of the status. Target:
//      ratio <= 1.2. Also FORKSAFE_CHECK_DEATH with a pattern to match in
//      the captured stderr, against the same by hand with a stderr pipe.
//   2. googletest's EXPECT_EXIT of the same statement (bench/gtest_death,
//      run from here), "threadsafe" style (it re-executes the test binary)
//      and "fast" style (a plain fork, unsafe with threads). Target:
//      forksafe >= 10x faster than threadsafe.
// Competitors are sampled in interleaved rounds, so drift hits all alike.

#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <forksafe/doctest.hpp>

#include "bench.hpp"

#include <cstdio>  // std::printf, popen
#include <cstdlib> // std::_Exit
#include <cstring> // std::strstr
#include <string>  // the anchor's output
#include <vector>  // samples

#include <fcntl.h>    // open
#include <sys/wait.h> // waitpid
#include <unistd.h>   // fork, pipe, dup2, read

namespace {

bool smoke_run = false;

// The minimum: fork, run the statement, reap, judge the status.
bool by_hand_exits() {
  const pid_t pid = ::fork();
  if (pid == 0) std::_Exit(3);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 3;
}

// The minimum for a death test with a message: stderr through a pipe, read
// to EOF, searched.
bool by_hand_death() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return false;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], 2);
    std::fputs("fatal: out of widgets\n", stderr);
    std::_Exit(3);
  }
  ::close(fds[1]);
  std::string err;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) err.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) != 0 && err.find("out of widgets") != std::string::npos;
}

std::vector<double> gtest_samples(const char* style, std::size_t n) {
  std::vector<double> ns;
  const std::string command =
      std::string(FORKSAFE_GTEST_DEATH) + " " + style + " " + std::to_string(n) + " 2>/dev/null";
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return ns;
  char line[1 << 16];
  const std::string prefix = std::string("gtest ") + style + " ns:";
  while (std::fgets(line, sizeof line, p) != nullptr) {
    if (std::strncmp(line, prefix.c_str(), prefix.size()) != 0) continue;
    for (char* s = line + prefix.size(); *s != '\0' && *s != '\n';) {
      char* end = nullptr;
      const double v = std::strtod(s, &end);
      if (end == s) break;
      ns.push_back(v);
      s = end;
    }
  }
  ::pclose(p);
  return ns;
}

} // namespace

TEST_CASE("bench") {
  const std::size_t rounds = bench::size(smoke_run, 2000, 20);
  std::vector<double> hand, macro, hand_death, macro_death;
  int failures = 0;
  for (std::size_t i = 0; i < rounds; ++i) {
    hand.push_back(bench::time_ns([&] { failures += by_hand_exits() ? 0 : 1; }));
    macro.push_back(bench::time_ns([] { FORKSAFE_CHECK_EXITS(std::_Exit(3), 3); }));
    hand_death.push_back(bench::time_ns([&] { failures += by_hand_death() ? 0 : 1; }));
    macro_death.push_back(bench::time_ns(
        [] { FORKSAFE_CHECK_DEATH(std::fputs("fatal: out of widgets\n", stderr); std::_Exit(3), "out of widgets"); }));
  }
  CHECK(failures == 0);
  const std::size_t gtest_runs = bench::size(smoke_run, 200, 5);
  const bench::stats threadsafe = bench::summarize(gtest_samples("threadsafe", gtest_runs));
  const bench::stats fast = bench::summarize(gtest_samples("fast", gtest_runs));

  bench::title("A death test of std::_Exit(3), end to end (us)");
  const bench::stats h = bench::summarize(hand);
  const bench::stats m = bench::summarize(macro);
  bench::row("fork + waitpid by hand (anchor)", h, "us", 1e3);
  bench::row("FORKSAFE_CHECK_EXITS", m, "us", 1e3, &h, "<= 1.2");
  const bench::stats hd = bench::summarize(hand_death);
  bench::row("by hand, stderr piped and searched", hd, "us", 1e3);
  bench::row("FORKSAFE_CHECK_DEATH(..., \"out of widgets\")", bench::summarize(macro_death), "us", 1e3, &hd, "<= 1.2");
  bench::title("Against googletest's EXPECT_EXIT of the same statement (us)");
  bench::row("googletest, threadsafe style (anchor)", threadsafe, "us", 1e3);
  bench::row("FORKSAFE_CHECK_EXITS", m, "us", 1e3, &threadsafe, "<= 0.1");
  bench::row("googletest, fast style (unsafe with threads)", fast, "us", 1e3, &threadsafe);
}

int main(int argc, char** argv) {
  smoke_run = bench::smoke(argc, argv);
  doctest::Context context;
  context.setOption("no-intro", true);
  context.setOption("no-version", true);
  return context.run();
}
