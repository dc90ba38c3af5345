// SPDX-License-Identifier: MIT
//
// atfork_registry: fork handlers that can say "not now" and can be removed.
//
// Two "libraries", written apart, each guard their own lock with guard(),
// while a thread takes A, pauses, then, holding A, takes B. Blocking
// handlers (pthread_atfork's way: prepare takes B, then A) can deadlock
// against that thread, and try-lock handlers alone starve against it (both
// locks are almost never free at once); guard() takes the locks with
// std::lock's algorithm: on a refusal it undoes, blocks on the refuser
// holding nothing else, keeps it and tries the rest. Every child finds both
// locks free. fork_generation() is 0 here, 1 in a child, 2 in a grandchild.
// A handler whose atfork_handle was destroyed never runs again. Exits 0 when
// all of that happened.

#include <forksafe/atfork_registry.hpp> // atfork_registry, atfork_handle, fork_generation
#include <forksafe/fork_call.hpp>       // fork_call: fork, run in the child, report (with a timeout)

#include <array>     // the generations a child reports
#include <atomic>    // the stop flag
#include <chrono>    // timeouts
#include <cinttypes> // PRIu64: printing a generation
#include <cstdint>   // std::uint64_t: a generation
#include <cstdio>    // std::printf
#include <mutex>     // std::mutex: each library's own lock
#include <thread>    // the thread that takes A, then B

#include <unistd.h> // alarm: the watchdog

namespace lib_a {
std::mutex m; // guards library A's state
// Taken before every fork, given back in parent and child; the name is for slow-fork reports.
const forksafe::atfork_handle fork_guard = forksafe::atfork_registry::instance().guard(m, "library A");
} // namespace lib_a

namespace lib_b { // written by someone else, who never heard of lib_a
std::mutex m;
const forksafe::atfork_handle fork_guard = forksafe::atfork_registry::instance().guard(m, "library B");
} // namespace lib_b

int main() {
  using namespace std::chrono_literals;
  alarm(60); // watchdog: a fork that deadlocked would end the program (SIGALRM), not hang it
  std::atomic<bool> stop{false};
  std::thread a_then_b([&] {
    while (!stop) {
      {
        std::lock_guard a(lib_a::m);
        std::this_thread::sleep_for(100us);
        std::lock_guard b(lib_b::m); // holds A, wants B
      }                              // and at once takes A again: both are free for a few nanoseconds at a time
    }
  });
  const auto both_locks_free = [] { return lib_a::m.try_lock() && lib_b::m.try_lock(); }; // in each child
  constexpr int forks = 50;
  int both_free = 0;
  for (int i = 0; i < forks; ++i) both_free += forksafe::fork_call({.timeout = 10s}, both_locks_free).get();
  stop = true;
  a_then_b.join();
  std::printf("%d forks while a thread takes A, then B: %d children found both free\n", forks, both_free);

  const auto generations = forksafe::fork_call({.timeout = 10s}, [] {
                             const std::uint64_t grandchild =
                                 forksafe::fork_call({.timeout = 10s}, forksafe::fork_generation).get();
                             return std::array<std::uint64_t, 2>{forksafe::fork_generation(), grandchild};
                           }).get();
  std::printf("fork_generation(): %" PRIu64 " here, %" PRIu64 " in a child, %" PRIu64 " in a grandchild\n",
              forksafe::fork_generation(), generations[0], generations[1]);

  int parent_calls = 0; // the parent handler runs on this thread, the forking one
  {
    const auto counting = forksafe::atfork_registry::instance().add({}, [&] { ++parent_calls; }, {});
    forksafe::fork_call({.timeout = 10s}, [] {}).get(); // runs it
  }                                                     // the handle is destroyed: unregistered
  forksafe::fork_call({.timeout = 10s}, [] {}).get();   // does not
  std::printf("a handler ran on %d of 2 forks: its atfork_handle was destroyed in between\n", parent_calls);

  const bool shown = both_free == forks && forksafe::fork_generation() == 0 && generations[0] == 1 &&
                     generations[1] == 2 && parent_calls == 1;
  return shown ? 0 : 1;
}
