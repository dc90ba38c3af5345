// SPDX-License-Identifier: MIT
// Torture: real forks under load, every hang caught by a deadline.
//  - 4 threads contend on fork-safe mutexes of every policy, a shared mutex
//    and a condition variable, while another thread forks 2,000 children
//    through fork_call that each lock every one of them and return a value.
//  - fork storms: 4 threads calling fork_call at once while 2 threads add
//    and remove registry handlers.
// The figures each test prints (MESSAGE) are what the README's "What
// forksafe survives" reports.

#include <forksafe/forksafe.hpp>

#include <cstdlib> // std::abort
#include <stdexcept> // std::runtime_error
#include <string> // std::to_string

#include "support/fork_harness.hpp"

#include <atomic>  // stop flags, counters
#include <chrono>  // timeouts
#include <mutex>   // lock guards
#include <shared_mutex> // std::shared_lock
#include <thread>  // contenders, stormers
#include <vector>  // threads

using namespace std::chrono_literals;
using forksafe::fork_policy;

namespace {

// The timeout of a fork_call that must end: it only turns a hang into a
// failure, so it is generous and scaled (a loaded sanitizer build must never
// trip it). The negative control's 200 ms is not: there a hang is expected.
const forksafe::fork_options must_end{.timeout = forksafe_test::scaled(10s)};

// Data guarded in two steps, so a child that got a lock while an update was
// half done would see a != b.
struct guarded {
  long a = 0;
  long b = 0;
  void update() {
    ++a;
    std::this_thread::yield();
    ++b;
  }
  [[nodiscard]] bool whole() const { return a == b; }
};

struct everything {
  forksafe::fork_safe_mutex quiesce;
  forksafe::basic_fork_safe_mutex<fork_policy::reset> reset;
  forksafe::basic_fork_safe_mutex<fork_policy::poison> poison;
  forksafe::fork_safe_shared_mutex shared;
  forksafe::basic_fork_safe_shared_mutex<fork_policy::reset> shared_reset;
  forksafe::fork_safe_condition_variable cv;
  guarded by_quiesce, by_shared;
  long by_reset = 0, by_poison = 0, by_shared_reset = 0;
  std::atomic<bool> stop{false};
  std::atomic<long> rounds{0};

  void contend(int who) {
    while (!stop.load(std::memory_order_relaxed)) {
      switch ((rounds.fetch_add(1, std::memory_order_relaxed) + who) % 6) {
      case 0: {
        std::unique_lock lk(quiesce);
        by_quiesce.update();
        cv.notify_all();
        break;
      }
      case 1: {
        std::lock_guard g(reset);
        ++by_reset;
        break;
      }
      case 2: {
        std::lock_guard g(poison);
        ++by_poison;
        break;
      }
      case 3: {
        std::lock_guard g(shared);
        by_shared.update();
        break;
      }
      case 4: {
        std::shared_lock g(shared);
        (void)by_shared.whole();
        break;
      }
      default: {
        std::unique_lock lk(quiesce);
        cv.wait_for(lk, 50us);
        std::lock_guard g(shared_reset);
        ++by_shared_reset;
        break;
      }
      }
    }
  }

  // In the child: take every lock; the value says what was found.
  long child_checks(long i) {
    long bad = 0;
    {
      std::unique_lock lk(quiesce);
      bad += by_quiesce.whole() ? 0 : 1;
      cv.notify_all(); // no hang on waiters that existed before the fork
      (void)cv.wait_for(lk, 1us);
    }
    {
      std::lock_guard g(shared);
      bad += by_shared.whole() ? 0 : 10;
    }
    { std::shared_lock g(shared); }
    { std::lock_guard g(reset); }
    { std::lock_guard g(shared_reset); }
    try {
      poison.lock();
    } catch (const forksafe::fork_poisoned&) {
      poison.clear_poison();
      poison.lock();
    }
    poison.unlock();
    return bad == 0 ? i * 7 + 3 : -bad;
  }
};

} // namespace

TEST_CASE("torture: 2,000 fork_call children lock every fork-safe mutex while 4 threads contend") {
  const int forks = 2000;
  everything e;
  std::vector<std::thread> contenders;
  for (int t = 0; t < 4; ++t) contenders.emplace_back([&e, t] { e.contend(t); });
  int right = 0, wrong = 0, stuck = 0, other = 0;
  for (long i = 0; i < forks; ++i) {
    try {
      const long v = forksafe::fork_call(must_end, [&e, i] { return e.child_checks(i); }).get();
      (v == i * 7 + 3 ? right : wrong) += 1;
    } catch (const forksafe::child_error& err) {
      (err.timed_out() ? stuck : other) += 1;
    }
  }
  e.stop = true;
  for (auto& t : contenders) t.join();
  MESSAGE("torture: ", forks, " children, ", e.rounds.load(), " contended critical sections: ", right,
          " right, ", wrong, " wrong, ", stuck, " stuck, ", other, " other");
  CHECK(right == forks);
  CHECK(stuck == 0);
  CHECK(forksafe_test::count_zombie_children() == 0);
}

TEST_CASE("torture: fork storms, 4 threads calling fork_call while 2 threads add and remove handlers") {
  const int per_thread = 250;
  std::atomic<bool> stop{false};
  std::atomic<long> registrations{0}, prepares{0}, parents{0};
  std::vector<std::thread> stormers;
  for (int t = 0; t < 2; ++t) {
    stormers.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        auto h = forksafe::atfork_registry::instance().add([&] { prepares.fetch_add(1); },
                                                          [&] { parents.fetch_add(1); }, nullptr);
        registrations.fetch_add(1, std::memory_order_relaxed);
        std::this_thread::yield();
      }
    });
  }
  const int fds_before = forksafe_test::count_open_fds();
  std::atomic<int> right{0}, wrong{0};
  std::vector<std::thread> forkers;
  for (int t = 0; t < 4; ++t) {
    forkers.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        try {
          const int v = forksafe::fork_call(must_end, [t, i] { return t * 1000 + i; }).get();
          (v == t * 1000 + i ? right : wrong).fetch_add(1);
        } catch (const std::exception&) {
          wrong.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : forkers) t.join();
  stop = true;
  for (auto& t : stormers) t.join();
  MESSAGE("fork storm: ", 4 * per_thread, " fork_calls from 4 threads, ", registrations.load(),
          " registrations meanwhile; ", right.load(), " right, ", wrong.load(), " wrong");
  CHECK(right == 4 * per_thread);
  CHECK(wrong == 0);
  CHECK(prepares.load() == parents.load()); // every prepared handler got its parent call
  CHECK(forksafe_test::count_open_fds() == fds_before);
  CHECK(forksafe_test::count_zombie_children() == 0);
}

TEST_CASE("torture: the same load on std::mutex leaves children stuck, caught by fork_call's timeout (negative control)") {
  std::mutex m;
  guarded data;
  std::atomic<bool> stop{false};
  std::vector<std::thread> contenders;
  for (int t = 0; t < 4; ++t) {
    contenders.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        std::lock_guard g(m);
        data.update();
      }
    });
  }
  const int forks = 30;
  int right = 0, stuck = 0;
  for (int i = 0; i < forks; ++i) {
    try {
      right += forksafe::fork_call({.timeout = 200ms}, [&m] {
                 std::lock_guard g(m);
                 return 1;
               }).get();
    } catch (const forksafe::child_error& err) {
      stuck += err.timed_out() ? 1 : 0;
    }
  }
  stop = true;
  for (auto& t : contenders) t.join();
  MESSAGE("std::mutex under the same load: ", stuck, " of ", forks, " children stuck, ", right, " finished");
  CHECK(stuck > 0);
  CHECK(right + stuck == forks);
  CHECK(forksafe_test::count_zombie_children() == 0);
}

TEST_CASE("torture: 8 threads x 200 fork_calls contend on fork-safe mutexes their children lock too") {
  forksafe::fork_safe_mutex a;
  forksafe::basic_fork_safe_mutex<fork_policy::reset> b;
  guarded by_a;
  long by_b = 0;
  std::atomic<int> right{0}, wrong{0}, stuck{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        {
          std::lock_guard g(a); // the parent's threads contend...
          by_a.update();
        }
        {
          std::lock_guard g(b);
          ++by_b;
        }
        try {
          const int v = forksafe::fork_call(must_end, [&, t, i] {
                          std::lock_guard ga(a); // ...and each child locks the same mutexes
                          std::lock_guard gb(b);
                          return by_a.whole() ? t * 1000 + i : -1;
                        }).get();
          (v == t * 1000 + i ? right : wrong).fetch_add(1);
        } catch (const forksafe::child_error& e) {
          (e.timed_out() ? stuck : wrong).fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  MESSAGE("8 threads x 200 fork_calls on shared fork-safe mutexes: ", right.load(), " right, ", wrong.load(),
          " wrong, ", stuck.load(), " stuck");
  CHECK(right == 1600);
  CHECK(stuck == 0);
  CHECK(forksafe_test::count_zombie_children() == 0);
}

TEST_CASE("torture: the pool under 10,000 mixed tasks, each accounted for exactly once with the right outcome") {
  const int tasks = 10000;
  // The timeout must end the tasks that never return and no other: each of
  // the 9,990 others gets a second (scaled) from dispatch, generous on a
  // loaded machine, where 100 ms was not. A task over it holds its worker
  // for the whole timeout, so there are 10 of them (100 such would hold the
  // two workers for 50 s).
  forksafe::process_pool pool(2, {.task_timeout = forksafe_test::scaled(1s)});
  // Every 1,000 tasks: 1 over its timeout; every 100: 2 crash with SIGSEGV,
  // 1 aborts, 6 throw, the rest return.
  auto kind_of = [](int i) {
    const int k = i % 100;
    return i % 1000 == 0 ? 't' : k == 1 || k == 2 ? 's' : k == 3 ? 'a' : k >= 4 && k <= 9 ? 'e' : 'v';
  };
  std::vector<forksafe::process_result<int>> results;
  results.reserve(tasks);
  for (int i = 0; i < tasks; ++i) {
    switch (kind_of(i)) {
    case 't': results.push_back(pool.submit([] { ::pause(); return 0; })); break;
    case 's': results.push_back(pool.submit([] { return forksafe_test::load_through_null(); })); break;
    case 'a': results.push_back(pool.submit([]() -> int { std::abort(); })); break;
    case 'e': results.push_back(pool.submit([](int x) -> int { throw std::runtime_error(std::to_string(x)); }, i)); break;
    default: results.push_back(pool.submit([](int x) { return x * 3; }, i)); break;
    }
  }
  int right = 0, wrong = 0;
  for (int i = 0; i < tasks; ++i) {
    const char k = kind_of(i);
    try {
      const int v = results[static_cast<std::size_t>(i)].get();
      (k == 'v' && v == i * 3 ? right : wrong) += 1;
    } catch (const forksafe::child_error& e) {
      const bool as_expected = (k == 't' && e.timed_out()) || (k == 's' && e.signal_name() == "SIGSEGV") ||
                               (k == 'a' && e.signal_name() == "SIGABRT") ||
                               (k == 'e' && e.threw() && e.exception_what() == std::to_string(i));
      (as_expected ? right : wrong) += 1;
    }
  }
  MESSAGE("pool torture: ", tasks, " tasks (10 over timeout, 200 SIGSEGV, 100 abort, 600 throw): ", right,
          " accounted for rightly, ", wrong, " wrongly");
  CHECK(right == tasks);
  CHECK(wrong == 0);
}
