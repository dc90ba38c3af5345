// SPDX-License-Identifier: MIT
// The ODR test, translation unit B (see odr.hpp).

#include "odr.hpp"
#include "odr_headers_b.hpp" // every public header, in reverse order

#include <doctest/doctest.h>

#include <atomic>  // the other thread's result
#include <cstdint> // std::uint64_t
#include <mutex>   // std::lock_guard
#include <thread>  // a second thread for try_lock
#include <utility> // std::pair: both generations from one child

const void* odr::registry_in_b() { return &forksafe::atfork_registry::instance(); }
std::uint64_t odr::generation_in_b() { return forksafe::fork_generation(); }
bool odr::try_lock_in_b(forksafe::fork_safe_mutex& m) { return m.try_lock(); }
void odr::unlock_in_b(forksafe::fork_safe_mutex& m) { m.unlock(); }

int odr::value_from_child_in_b(forksafe::fork_safe_mutex& m, int value) {
  return forksafe::fork_call([&m, value] {
           if (!odr::try_lock_in_a(m)) return -1;
           odr::unlock_in_a(m);
           return value;
         })
      .get();
}

TEST_CASE("odr: a fork_call child sees the fork generation advance by one in both translation units") {
  const std::uint64_t parent = odr::generation_in_b();
  CHECK(odr::generation_in_a() == parent);
  const auto child =
      forksafe::fork_call([] { return std::pair(odr::generation_in_a(), odr::generation_in_b()); }).get();
  CHECK(child.first == parent + 1);
  CHECK(child.second == parent + 1);
}

TEST_CASE("odr: a fork_safe_mutex locked through one translation unit is held for the other") {
  forksafe::fork_safe_mutex m;
  REQUIRE(odr::try_lock_in_b(m));
  std::atomic<bool> other_got_it{true};
  std::thread other([&] { other_got_it = odr::try_lock_in_a(m); }); // try_lock by the owner would be undefined
  other.join();
  CHECK_FALSE(other_got_it.load());
  odr::unlock_in_a(m);
  REQUIRE(odr::try_lock_in_a(m));
  odr::unlock_in_b(m);
}
