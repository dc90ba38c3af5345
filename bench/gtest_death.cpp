// SPDX-License-Identifier: MIT
//
// bench/gtest_death.cpp: googletest's own death tests, timed, as the anchor
// bench_death_test runs in the same run. `gtest_death STYLE N` runs N
// EXPECT_EXIT(std::_Exit(3), ExitedWithCode(3), "") in the given
// death_test_style ("threadsafe": each re-executes this binary; "fast": a
// plain fork) and prints one line: "gtest STYLE ns: t1 t2 ... tN".

#include <gtest/gtest.h>

#include <chrono>  // the timings
#include <cstdio>  // std::printf
#include <cstdlib> // std::_Exit, std::atoi
#include <string>  // the style
#include <vector>  // the samples

namespace {
int runs = 0;
std::string style;
} // namespace

TEST(GtestDeath, ExitsWithCode3) {
  std::vector<long long> ns;
  for (int i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_EXIT(std::_Exit(3), ::testing::ExitedWithCode(3), "");
    ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
  }
  std::printf("gtest %s ns:", style.c_str());
  for (const long long t : ns) std::printf(" %lld", t);
  std::printf("\n");
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // The re-executed child of a threadsafe death test gets gtest's internal
  // flag and no positional arguments: it runs the one death test and exits.
  if (argc >= 3) {
    style = argv[1];
    runs = std::atoi(argv[2]);
    GTEST_FLAG_SET(death_test_style, style);
  }
  return RUN_ALL_TESTS();
}
