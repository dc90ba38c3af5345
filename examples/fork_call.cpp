// SPDX-License-Identifier: MIT
//
// fork_call: run a callable in a forked child and get its value back, or a
// child_error that says how the child ended: crashed, threw, or ran past its
// timeout (then it is killed; nothing here can hang).
//
// The callable may capture anything (the child is a copy of this process);
// only the result crosses back, so it must be trivially_serializable: its
// bytes are its value. A struct of numbers is. A std::string, a future or a
// lock is not, and returning one is a compile error, not a run-time surprise:
//
//     auto r = forksafe::fork_call([] { return std::string("hello"); });
//     // clang++ 14: error: no matching function for call to 'fork_call'
//     //   note: because '...' (aka 'std::basic_string<char>') does not satisfy 'trivially_serializable'
//
// Exits 0 when the value came back and each failure was reported as what it was.

#include <forksafe/child_error.hpp>            // child_error: how a child ended without a value
#include <forksafe/fork_call.hpp>              // fork_call, fork_options
#include <forksafe/trivially_serializable.hpp> // trivially_serializable

#include <algorithm> // std::max
#include <chrono>    // timeouts
#include <csignal>   // std::raise, SIGSEGV: the crash
#include <cstdio>    // std::printf
#include <future>    // std::future: what cannot cross
#include <stdexcept> // std::runtime_error: what a child throws
#include <string>    // std::string: rejected as a result, below
#include <thread>    // std::this_thread::sleep_for: the child that overruns
#include <vector>    // the input: read in the child, never serialized

using namespace std::chrono_literals;

namespace {

struct summary { // plain numbers: its bytes are its value
  int count;
  long sum;
  int max;
};
static_assert(forksafe::trivially_serializable<summary>);
static_assert(forksafe::trivially_serializable<std::string>); // crosses in its wire form: a length, then the bytes
static_assert(!forksafe::trivially_serializable<std::vector<std::future<int>>>); // futures cannot cross

// Waits for a call that must fail; prints how it failed, returns whether that was `expected`.
template <class T>
bool failed_as(const char* label, forksafe::process_result<T> r,
               bool (forksafe::child_error::*expected)() const noexcept) {
  try {
    r.get();
  } catch (const forksafe::child_error& e) {
    std::printf("%-8s %s\n", label, e.what());
    return (e.*expected)();
  }
  return false;
}

} // namespace

int main() {
  const std::vector<int> data{3, 1, 4, 1, 5, 9, 2, 6};
  auto r = forksafe::fork_call({.timeout = 10s}, [&data] {
    summary s{0, 0, 0};
    for (int v : data) {
      ++s.count;
      s.sum += v;
      s.max = std::max(s.max, v);
    }
    return s;
  });
  const summary& s = r.get(); // waits; the value lives in r
  std::printf("value:   the child summed %d numbers: sum %ld, max %d\n", s.count, s.sum, s.max);

  const auto crash = [] { return std::raise(SIGSEGV); }; // as a stray pointer would
  const auto fail = [] { throw std::runtime_error("no input"); };
  const auto overrun = [] { std::this_thread::sleep_for(60s); }; // past its 200 ms: killed
  using forksafe::child_error, forksafe::fork_call;
  int reported = 0;
  reported += failed_as("crash:", fork_call({.timeout = 10s}, crash), &child_error::signaled);
  reported += failed_as("threw:", fork_call({.timeout = 10s}, fail), &child_error::threw);
  reported += failed_as("timeout:", fork_call({.timeout = 200ms}, overrun), &child_error::timed_out);
  return s.count == 8 && s.sum == 31 && s.max == 9 && reported == 3 ? 0 : 1;
}
