// SPDX-License-Identifier: MIT
// The ODR test, translation unit A (see odr.hpp).

#include "odr.hpp"
#include "odr_headers_a.hpp" // every public header, in the list's order

#include <doctest/doctest.h>

#include <atomic> // the holder's handshake
#include <chrono> // hold time
#include <thread> // the thread that holds the mutex at the fork

const void* odr::registry_in_a() { return &forksafe::atfork_registry::instance(); }
std::uint64_t odr::generation_in_a() { return forksafe::fork_generation(); }
bool odr::try_lock_in_a(forksafe::fork_safe_mutex& m) { return m.try_lock(); }
void odr::unlock_in_a(forksafe::fork_safe_mutex& m) { m.unlock(); }

TEST_CASE("odr: both translation units use the one atfork_registry") {
  CHECK(odr::registry_in_a() == odr::registry_in_b());
}

TEST_CASE(
    "odr: a fork_call from one translation unit waits out a critical section; its child locks through the other") {
  using namespace std::chrono_literals;
  forksafe::fork_safe_mutex m;
  std::atomic<bool> locked{false};
  std::atomic<bool> held{false};
  std::thread holder([&] {
    locked = odr::try_lock_in_a(m);
    held = true;
    if (!locked) return;
    std::this_thread::sleep_for(50ms); // quiesce: fork_call's fork waits for this
    odr::unlock_in_a(m);
  });
  while (!held) std::this_thread::yield();
  CHECK(odr::value_from_child_in_b(m, 42) == 42); // -1: the child found the mutex held
  holder.join();
  CHECK(locked.load());
}
