// SPDX-License-Identifier: MIT
// fork_safe_condition_variable: waits and notifies with each policy's mutex,
// and a child that never hangs on waiters that existed before the fork,
// with std::condition_variable's hang as the negative control.

#include <forksafe/doctest.hpp> // FORKSAFE_CHECK_HANGS: the negative control
#include <forksafe/fork_safe_condition_variable.hpp>
#include <forksafe/fork_safe_mutex.hpp>

#include "support/fork_harness.hpp"
#include "support/identity_only.hpp"

#include <atomic>             // woken waiters
#include <chrono>             // timeouts
#include <condition_variable> // std::cv_status; std::condition_variable, the negative control
#include <mutex>              // lock_guard, unique_lock
#include <thread>             // waiters and notifiers
#include <vector>             // thread groups

using namespace std::chrono_literals;
using forksafe::basic_fork_safe_mutex;
using forksafe::fork_policy;
using forksafe_test::kind;
using forksafe_test::run_in_child;
using forksafe_test::run_in_child_expected_to_hang;

using quiesce_mutex = basic_fork_safe_mutex<fork_policy::quiesce>;
using reset_mutex = basic_fork_safe_mutex<fork_policy::reset>;
using poison_mutex = basic_fork_safe_mutex<fork_policy::poison>;

static_assert(forksafe_test::identity_only<forksafe::fork_safe_condition_variable>);

// Returns once `n` threads wait on a condition variable with `m`: each
// counted itself in `waiting` (guarded by `m`) when it first evaluated its
// predicate, under `m`, and it lets `m` go only inside wait(). So once this
// thread holds `m` and sees `n`, all of them are in wait().
template <class Mutex>
void all_waiting(Mutex& m, const int& waiting, int n) {
  for (;;) {
    {
      const std::lock_guard<Mutex> g(m);
      if (waiting == n) return;
    }
    std::this_thread::yield();
  }
}

TEST_CASE_TEMPLATE("fork_safe_condition_variable: wait, wait_for, wait_until, notify_one, notify_all", M, quiesce_mutex,
                   reset_mutex, poison_mutex) {
  M m;
  forksafe::fork_safe_condition_variable cv;
  int stage = 0;
  int waiting = 0; // guarded by m: waiters that evaluated their predicate once
  std::vector<std::thread> waiters;
  std::atomic<int> woke{0};
  for (int i = 0; i < 3; ++i) {
    waiters.emplace_back([&] {
      std::unique_lock lk(m);
      cv.wait(lk, [&, counted = false]() mutable {
        if (!counted) ++waiting;
        counted = true;
        return stage >= 1;
      });
      woke.fetch_add(1);
    });
  }
  all_waiting(m, waiting, 3);
  {
    std::lock_guard g(m);
    stage = 1;
  }
  cv.notify_all();
  for (auto& t : waiters) t.join();
  CHECK(woke == 3);

  std::unique_lock lk(m);
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(cv.wait_for(lk, 20ms) == std::cv_status::timeout);
  CHECK(std::chrono::steady_clock::now() - t0 >= 20ms);
  CHECK_FALSE(cv.wait_until(lk, std::chrono::system_clock::now() + 5ms, [] { return false; }));
  CHECK(cv.wait_for(lk, 1s, [&] { return stage == 1; }));

  std::thread notifier([&] {
    std::this_thread::sleep_for(5ms);
    std::lock_guard g(m); // only once the wait below released m: the notify finds it waiting
    stage = 2;
    cv.notify_one();
  });
  CHECK(cv.wait_until(lk, std::chrono::steady_clock::now() + forksafe_test::scaled(5s), [&] { return stage == 2; }));
  lk.unlock();
  notifier.join();
}

TEST_CASE("fork_safe_condition_variable: a child never hangs on waiters that existed before the fork" *
          doctest::test_suite("memcheck")) {
  forksafe::fork_safe_mutex m;
  auto* cv = new forksafe::fork_safe_condition_variable;
  bool done = false;
  int waiting = 0; // guarded by m
  std::vector<std::thread> waiters;
  for (int i = 0; i < 3; ++i) {
    waiters.emplace_back([&] {
      std::unique_lock lk(m);
      cv->wait(lk, [&, counted = false]() mutable {
        if (!counted) ++waiting;
        counted = true;
        return done;
      });
    });
  }
  all_waiting(m, waiting, 3); // all three are waiting: known, not assumed from a sleep
  const auto child = run_in_child(
      [&] {
        cv->notify_one();
        cv->notify_all();
        std::unique_lock lk(m);
        if (cv->wait_for(lk, 10ms) != std::cv_status::timeout) return 1;
        bool flag = false;
        std::thread t([&] {
          std::lock_guard g(m);
          flag = true;
          cv->notify_one();
        });
        cv->wait(lk, [&] { return flag; });
        lk.unlock();
        t.join();
        delete cv;
        return 0;
      },
      5s);
  CHECK(child.exited_with(0));
  {
    std::lock_guard g(m);
    done = true;
  }
  cv->notify_all();
  for (auto& t : waiters) t.join();
  delete cv;
}

TEST_CASE("fork_safe_condition_variable: destroying a std::condition_variable in a child with inherited waiters hangs "
          "(negative control)") {
  std::mutex m;
  auto* cv = new std::condition_variable;
  bool done = false;
  int waiting = 0; // guarded by m
  std::thread waiter([&] {
    std::unique_lock lk(m);
    cv->wait(lk, [&, counted = false]() mutable {
      if (!counted) ++waiting;
      counted = true;
      return done;
    });
  });
  // The waiter is in wait() before the fork: known, so the hang is certain
  // (after a 20 ms sleep a loaded machine might not have got it there, and
  // the child's delete would find no waiter and return).
  all_waiting(m, waiting, 1);
  FORKSAFE_CHECK_HANGS(delete cv, 500ms);
  {
    std::lock_guard g(m);
    done = true;
  }
  cv->notify_all();
  waiter.join();
  delete cv;
}
