// SPDX-License-Identifier: MIT
//
// bench/bench.hpp: the timing helper every forksafe benchmark uses. No
// framework: take samples, report median / p10 / p90 and a ratio against the
// anchor measured in the same run. `--smoke` shrinks every run (CI uses it
// to prove the benchmarks still work, not to judge their figures).

#ifndef FORKSAFE_BENCH_BENCH_HPP
#define FORKSAFE_BENCH_BENCH_HPP

#include <algorithm> // std::sort
#include <chrono>    // steady_clock
#include <cstdio>    // std::printf
#include <cstring>   // std::strcmp
#include <string>    // labels
#include <vector>    // samples

namespace bench {

using clock = std::chrono::steady_clock;

/// Summary of samples, in nanoseconds.
struct stats {
  double median = 0, p10 = 0, p90 = 0, p99 = 0, max = 0;
  std::size_t n = 0;
};

inline stats summarize(std::vector<double> ns) {
  stats s;
  if (ns.empty()) return s;
  std::sort(ns.begin(), ns.end());
  auto at = [&](double q) { return ns[static_cast<std::size_t>(q * static_cast<double>(ns.size() - 1))]; };
  s.median = at(0.5);
  s.p10 = at(0.1);
  s.p90 = at(0.9);
  s.p99 = at(0.99);
  s.max = ns.back();
  s.n = ns.size();
  return s;
}

/// Nanoseconds `f` takes, once.
template <class F>
double time_ns(F&& f) {
  const auto t0 = clock::now();
  f();
  return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now() - t0).count());
}

/// True when the program was given --smoke.
inline bool smoke(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) return true;
  }
  return false;
}

/// Picks the full or the smoke-run size.
inline std::size_t size(bool smoke_run, std::size_t full, std::size_t small) { return smoke_run ? small : full; }

inline void title(const char* text) { std::printf("\n%s\n", text); }

/// One table row; `unit_scale` divides nanoseconds (1000 for µs). With an
/// anchor, prints this row's median over the anchor's.
inline void row(const std::string& name, const stats& s, const char* unit, double unit_scale,
                const stats* anchor = nullptr, const char* target = "") {
  std::printf("  %-44s median %10.3f %s  (p10 %10.3f, p90 %10.3f, n=%zu)", name.c_str(), s.median / unit_scale, unit,
              s.p10 / unit_scale, s.p90 / unit_scale, s.n);
  if (anchor != nullptr && anchor->median > 0) std::printf("  ratio %.3f", s.median / anchor->median);
  if (*target != '\0') std::printf("  [target %s]", target);
  std::printf("\n");
}

/// Prints a value that is not a timing (a size, a count).
inline void fact(const std::string& name, const std::string& value) {
  std::printf("  %-44s %s\n", name.c_str(), value.c_str());
}

} // namespace bench

#endif // FORKSAFE_BENCH_BENCH_HPP
