// SPDX-License-Identifier: MIT
//
// process_pool, side by side in one run:
//  - a tiny task's round trip (submit(x * x).get()) on a warm pool, against
//    the floor, a bare ping-pong of 8 bytes between two processes over pipes
//    (target: at most 2x), and against Python's ProcessPoolExecutor on the
//    same machine, timed by bench/python_anchor.py (target: at most 1/10);
//  - throughput with 1, 2 and 4 workers, 2,000 tasks in flight.

#include <forksafe/process_pool.hpp>

#include "bench.hpp"

#include <cstdio>  // popen: the Python anchor
#include <cstdlib> // std::strtod
#include <string>  // parsing the anchor's output
#include <vector>  // handles, samples

#include <sys/wait.h> // waitpid
#include <unistd.h>   // pipe, fork

namespace {

int square(int x) { return x * x; }

// Round trips of 8 bytes between this process and a child, over two pipes.
std::vector<double> pipe_ping_pong(std::size_t samples) {
  int to_child[2], to_parent[2];
  if (::pipe(to_child) != 0 || ::pipe(to_parent) != 0) return {};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(to_child[1]); // else the read below never sees EOF
    ::close(to_parent[0]);
    long v;
    while (::read(to_child[0], &v, sizeof v) == static_cast<ssize_t>(sizeof v)) {
      v *= v;
      if (::write(to_parent[1], &v, sizeof v) != static_cast<ssize_t>(sizeof v)) break;
    }
    ::_exit(0);
  }
  ::close(to_child[0]);
  ::close(to_parent[1]);
  std::vector<double> ns;
  for (std::size_t i = 0; i < samples + 20; ++i) {
    long v = static_cast<long>(i);
    const double t = bench::time_ns([&] {
      (void)!::write(to_child[1], &v, sizeof v);
      (void)!::read(to_parent[0], &v, sizeof v);
    });
    if (i >= 20) ns.push_back(t); // the first ones warm up
  }
  ::close(to_child[1]);
  ::close(to_parent[0]);
  ::waitpid(pid, nullptr, 0);
  return ns;
}

// The median, in ns, of the Python anchor's ProcessPoolExecutor row; 0 if
// python3 or the script is not there.
double python_pool_median_ns(bool smoke) {
#ifdef FORKSAFE_PYTHON_ANCHOR
  const std::string cmd = std::string("python3 ") + FORKSAFE_PYTHON_ANCHOR + (smoke ? " --smoke" : "") + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return 0;
  char line[512];
  double median_us = 0;
  while (std::fgets(line, sizeof line, p) != nullptr) {
    std::fputs(line, stdout);
    const std::string s(line);
    const auto at = s.find("median");
    if (s.find("ProcessPoolExecutor") != std::string::npos && at != std::string::npos) {
      median_us = std::strtod(line + at + 6, nullptr);
    }
  }
  ::pclose(p);
  return median_us * 1e3;
#else
  (void)smoke;
  return 0;
#endif
}

} // namespace

int main(int argc, char** argv) {
  const bool smoke = bench::smoke(argc, argv);
  const std::size_t samples = bench::size(smoke, 5000, 50);

  const auto floor = bench::summarize(pipe_ping_pong(samples));
  std::vector<double> round_trip;
  {
    forksafe::process_pool pool(1);
    for (int i = 0; i < 100; ++i) (void)pool.submit(square, i).get(); // warm
    for (std::size_t i = 0; i < samples; ++i) {
      const int x = static_cast<int>(i & 0xff);
      round_trip.push_back(bench::time_ns([&] {
        if (pool.submit(square, x).get() != x * x) std::abort();
      }));
    }
  }
  const auto pool_stats = bench::summarize(round_trip);
  const double python_ns = python_pool_median_ns(smoke);

  bench::title("process_pool: a tiny task's round trip, warm pool of 1 worker (µs)");
  bench::row("pipe ping-pong between two processes (floor)", floor, "us", 1e3);
  bench::row("process_pool submit(x * x).get()", pool_stats, "us", 1e3, &floor, "ratio <= 2.0 of the floor");
  if (python_ns > 0) {
    std::printf("  process_pool / Python ProcessPoolExecutor: %.3f (%.1f us vs %.1f us) [target <= 0.10]\n",
                pool_stats.median / python_ns, pool_stats.median / 1e3, python_ns / 1e3);
  } else {
    std::printf("  Python anchor not run (python3 or bench/python_anchor.py missing)\n");
  }

  bench::title("process_pool: throughput, 2,000 tasks in flight (µs per task)");
  const std::size_t in_flight = bench::size(smoke, 2000, 50);
  for (std::size_t workers : {1, 2, 4}) {
    forksafe::process_pool pool(workers);
    for (int i = 0; i < 100; ++i) (void)pool.submit(square, i).get();
    std::vector<double> per_task;
    for (std::size_t r = 0; r < bench::size(smoke, 15, 2); ++r) {
      std::vector<forksafe::process_result<int>> results;
      results.reserve(in_flight);
      const double ns = bench::time_ns([&] {
        for (std::size_t i = 0; i < in_flight; ++i) results.push_back(pool.submit(square, static_cast<int>(i & 0xff)));
        for (auto& res : results) (void)res.get();
      });
      per_task.push_back(ns / static_cast<double>(in_flight));
    }
    const auto s = bench::summarize(per_task);
    bench::row(std::to_string(workers) + " worker(s)", s, "us", 1e3);
    std::printf("  %-44s %.0f tasks/s\n", "", 1e9 / s.median);
  }
  return 0;
}
