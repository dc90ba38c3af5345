// SPDX-License-Identifier: MIT
//
// The program every consumer test (tests/consumers/run.sh) builds, whichever
// way it takes forksafe. A thread is in the middle of a critical section of a
// fork_safe_mutex (the guarded value is 41, on its way to 42) when fork_call
// forks; the child locks the same mutex and returns the value. With the
// default policy, quiesce, the fork waits until the critical section ends, so
// the child neither hangs on the mutex nor sees the half-done update. Exits 0
// only if the child returned 42.
//
// Built with -DCONSUMER_NEGATIVE_CONTROL the mutex is a std::mutex, held
// until the fork is done: the child hangs on it, fork_call's timeout kills it,
// and the program exits 1. run.sh uses that to show the check can fail.
//
// CONSUMER_EXPECTED_VERSION, when given, is the version the package says it
// has (pkg-config, CMake, meson), checked against the headers' own.
// CONSUMER_CXX23, when given, says the consumer asked for C++23: the package's
// flags must not have set the standard back to C++20.

#include <forksafe/fork_safe_mutex.hpp> // forksafe::fork_safe_mutex
#include <forksafe/process_result.hpp>  // forksafe::fork_call

#include <atomic>    // the handshake between main and the writer thread
#include <chrono>    // hold time, fork_call timeout
#include <cstdio>    // std::printf, std::fprintf
#include <exception> // std::exception: what fork_call's get() throws
#include <mutex>     // std::lock_guard (and std::mutex for the negative control)
#include <thread>    // std::thread, std::this_thread

#ifdef CONSUMER_EXPECTED_VERSION
static_assert(FORKSAFE_VERSION == CONSUMER_EXPECTED_VERSION,
              "the package's version differs from FORKSAFE_VERSION in forksafe/detail/config.hpp: "
              "keep meson.build, CMakeLists.txt and config.hpp in step");
#endif

#if defined(CONSUMER_CXX23) && __cplusplus <= 202002L
#error "the consumer asked for C++23 but compiles as C++20 or older: the package's flags set the standard"
#endif

namespace {

#ifdef CONSUMER_NEGATIVE_CONTROL
constexpr bool negative_control = true;
using mutex_type = std::mutex;
#else
constexpr bool negative_control = false;
using mutex_type = forksafe::fork_safe_mutex;
#endif

} // namespace

int main() {
  using namespace std::chrono_literals;
  mutex_type m;
  int value = 0; // guarded by m
  std::atomic<bool> held{false};
  std::atomic<bool> forked{false};

  std::thread writer([&] {
    std::lock_guard lock(m);
    value = 41; // half-way through an update
    held = true;
    // quiesce makes fork_call wait for this section, so it must end by itself;
    // the negative control holds the std::mutex until the child exists.
    const auto until = std::chrono::steady_clock::now() + 200ms;
    while (!forked && (negative_control || std::chrono::steady_clock::now() < until)) {
      std::this_thread::sleep_for(1ms);
    }
    value = 42;
  });
  while (!held) std::this_thread::yield();

  int result = -1;
  try {
    // A child that hangs on the mutex is killed at the timeout and get() throws.
    const forksafe::fork_options options{.timeout = negative_control ? 2s : 60s};
    result = forksafe::fork_call(options, [&] {
               std::lock_guard lock(m);
               return value;
             }).get();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer: fork_call failed: %s\n", e.what());
  }
  forked = true;
  writer.join();

  std::printf("consumer: the child returned %d (expected 42), __cplusplus %ld\n", result, __cplusplus);
  return result == 42 ? 0 : 1;
}
