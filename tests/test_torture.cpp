// SPDX-License-Identifier: MIT
// Torture: real forks under load, every hang caught by a deadline.
//  - 4 threads contend on fork-safe mutexes of every policy, a shared mutex
//    and a condition variable, while another thread forks 2,000 children
//    through fork_call that each lock every one of them and return a value.
//  - fork storms: 4 threads calling fork_call at once while 2 threads add
//    and remove registry handlers.
//  - the pool under 10,000 mixed tasks.
//  - an EINTR storm over every blocking call forksafe has: fork_call, the
//    pool, every mutex, the condition variable, the registry's retry.
// The figures each test prints (MESSAGE) are what the README's "What
// forksafe survives" reports.

#include <forksafe/forksafe.hpp>

#include <cstdlib>   // std::abort
#include <stdexcept> // std::runtime_error
#include <string>    // std::to_string

#include "support/eintr_storm.hpp"
#include "support/expect_error.hpp"
#include "support/fork_harness.hpp"

#include <atomic>             // stop flags, counters
#include <cerrno>             // EINTR
#include <chrono>             // timeouts
#include <condition_variable> // std::cv_status
#include <csignal>            // SIGALRM, pthread_sigmask: quiet threads
#include <future>             // std::future_status
#include <mutex>              // lock guards
#include <shared_mutex>       // std::shared_lock
#include <thread>             // contenders, stormers
#include <vector>             // threads

#include <poll.h>   // ppoll: the storm's control; poll on native_handle()
#include <unistd.h> // read: a task waits on a gate

using namespace std::chrono_literals;
using forksafe::child_error;
using forksafe::fork_call;
using forksafe::fork_policy;
using forksafe::process_pool;
using forksafe_test::count_open_fds;
using forksafe_test::count_zombie_children;
using forksafe_test::eintr_storm;
using forksafe_test::elapsed_seconds;
using forksafe_test::error_of;
// The timeout of a call that must end. The negative control's 200 ms is not
// scaled: there a hang is expected.
using forksafe_test::must_end;
using forksafe_test::scaled_poll_ms;
using forksafe_test::scaled_seconds;

namespace {

using clock_type = std::chrono::steady_clock;

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
      const long v = forksafe::fork_call({.timeout = must_end}, [&e, i] { return e.child_checks(i); }).get();
      (v == i * 7 + 3 ? right : wrong) += 1;
    } catch (const forksafe::child_error& err) {
      (err.timed_out() ? stuck : other) += 1;
    }
  }
  e.stop = true;
  for (auto& t : contenders) t.join();
  MESSAGE("torture: ", forks, " children, ", e.rounds.load(), " contended critical sections: ", right, " right, ",
          wrong, " wrong, ", stuck, " stuck, ", other, " other");
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
          const int v = forksafe::fork_call({.timeout = must_end}, [t, i] { return t * 1000 + i; }).get();
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

TEST_CASE(
    "torture: the same load on std::mutex leaves children stuck, caught by fork_call's timeout (negative control)") {
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
          const int v = forksafe::fork_call({.timeout = must_end}, [&, t, i] {
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
    case 't':
      results.push_back(pool.submit([] {
        ::pause();
        return 0;
      }));
      break;
    case 's': results.push_back(pool.submit([] { return forksafe_test::load_through_null(); })); break;
    case 'a': results.push_back(pool.submit([]() -> int { std::abort(); })); break;
    case 'e':
      results.push_back(pool.submit([](int x) -> int { throw std::runtime_error(std::to_string(x)); }, i));
      break;
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

// ---------------------------------------------------------------------------
// EINTR: a signal every 200 µs, handled without SA_RESTART, so every blocking
// system call forksafe makes is interrupted again and again.
// ---------------------------------------------------------------------------

namespace {

// A thread that never takes the storm's signal, so it lands on the test's
// thread, which is the one blocking.
template <class Body>
std::thread quiet_thread(Body body) {
  sigset_t alarm;
  sigemptyset(&alarm);
  sigaddset(&alarm, SIGALRM);
  sigset_t old;
  pthread_sigmask(SIG_BLOCK, &alarm, &old);
  std::thread t(std::move(body));
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return t;
}

// The test's thread blocks in lock(): it must get the lock only after the
// holder let it go, however often the wait is interrupted. The holder lets
// go once it has seen the test's thread asleep in lock() (not after a sleep
// that assumed it got there), then 60 ms later: the storm's time to strike.
template <class Mutex, class Lock, class Hold>
bool blocks_until_released(Mutex& m, Lock lock, Hold hold) {
  std::atomic<bool> holding{false};
  std::atomic<bool> released{false};
  const pid_t locker = forksafe_test::current_thread_id();
  std::thread holder = quiet_thread([&] {
    hold(m, [&] {
      holding = true;
      (void)forksafe_test::wait_until_blocked(locker);
      std::this_thread::sleep_for(60ms);
      released = true;
    });
  });
  while (!holding) std::this_thread::yield();
  lock(m);
  const bool after = released.load();
  holder.join();
  return after;
}

template <class Mutex>
bool exclusive_waits_out_exclusive(Mutex& m) {
  return blocks_until_released(
      m, [](Mutex& x) { std::lock_guard g(x); },
      [](Mutex& x, auto body) {
        std::lock_guard g(x);
        body();
      });
}

} // namespace

TEST_CASE("torture: an EINTR storm interrupts every blocking call; each retries and keeps its contract") {
  const int fds_before = count_open_fds();
  const eintr_storm storm;

  // Control: the storm does interrupt a blocking call.
  const timespec fifty_ms{0, 50'000'000};
  errno = 0;
  CHECK(::ppoll(nullptr, 0, &fifty_ms, nullptr) == -1);
  CHECK(errno == EINTR);

  SUBCASE("fork_call: fork, wait_for, wait_until, get, kill, and the destructor's kill and reap") {
    for (int i = 0; i < 20; ++i) {
      const forksafe_test::gate g; // the child answers only once the waits below have timed out
      auto r = fork_call({.timeout = must_end}, [&g, i] {
        g.wait();
        return i;
      });
      const auto t = clock_type::now();
      CHECK(r.wait_for(5ms) == std::future_status::timeout);
      CHECK(elapsed_seconds(t) >= 0.005);
      CHECK(r.wait_until(clock_type::now() + 1ms) == std::future_status::timeout);
      g.open();
      CHECK(r.get() == i);
    }
    auto killed = fork_call({.timeout = must_end}, [] {
      std::this_thread::sleep_for(must_end);
      return 0;
    });
    killed.kill(SIGUSR1); // not SIGTERM: the child has doctest's SIGTERM handler
    CHECK_THROWS_AS((void)killed.get(), child_error);
    const auto t = clock_type::now();
    {
      auto dropped = fork_call({.timeout = must_end}, [] {
        std::this_thread::sleep_for(must_end);
        return 0;
      });
    }
    CHECK(elapsed_seconds(t) < scaled_seconds(5.0)); // killed and reaped, not waited for (10 s, scaled)
    auto timed = fork_call({.timeout = 50ms}, [] {
      std::this_thread::sleep_for(must_end);
      return 0;
    });
    const auto e = error_of(timed);
    REQUIRE_MESSAGE(e, "a value from a child that sleeps 10 s");
    CHECK(e->timed_out());
  }

  SUBCASE("process_pool: start, submit, wait_for, get, native_handle, shutdown") {
    int right = 0;
    {
      const forksafe_test::gate g; // made before the pool: its workers inherit it
      process_pool pool(2, {.task_timeout = must_end});
      std::vector<forksafe::process_result<int>> results;
      for (int i = 0; i < 200; ++i) results.push_back(pool.submit([](int x) { return x + 3; }, i));
      auto slow = pool.submit([fd = g.fds[0]] { // answers once the wait below has timed out
        char c;
        while (::read(fd, &c, 1) < 0 && errno == EINTR) {
        }
        return -1;
      });
      const auto t = clock_type::now();
      CHECK(slow.wait_for(5ms) == std::future_status::timeout);
      CHECK(elapsed_seconds(t) >= 0.005);
      g.open();
      pollfd p{slow.native_handle(), POLLIN, 0};
      int polled = 0;
      while ((polled = ::poll(&p, 1, scaled_poll_ms(10s))) < 0 && errno == EINTR) {
      }
      CHECK(polled == 1);
      CHECK(slow.get() == -1);
      for (int i = 0; i < 200; ++i) right += results[static_cast<std::size_t>(i)].get() == i + 3 ? 1 : 0;
      (void)pool.submit([] {
        std::this_thread::sleep_for(50ms);
        return 0;
      }); // running at shutdown
    }
    CHECK(right == 200);
  }

  SUBCASE("fork_safe_mutex, every policy: lock() waits until the holder unlocks") {
    forksafe::fork_safe_mutex q;
    forksafe::basic_fork_safe_mutex<forksafe::fork_policy::reset> r;
    forksafe::basic_fork_safe_mutex<forksafe::fork_policy::poison> p;
    CHECK(exclusive_waits_out_exclusive(q));
    CHECK(exclusive_waits_out_exclusive(r));
    CHECK(exclusive_waits_out_exclusive(p));
  }

  SUBCASE("fork_safe_shared_mutex: lock_shared waits out a writer, lock waits out a reader") {
    forksafe::fork_safe_shared_mutex m;
    CHECK(blocks_until_released(
        m, [](auto& x) { std::shared_lock g(x); },
        [](auto& x, auto body) {
          std::lock_guard g(x);
          body();
        }));
    CHECK(blocks_until_released(
        m, [](auto& x) { std::lock_guard g(x); },
        [](auto& x, auto body) {
          std::shared_lock g(x);
          body();
        }));
  }

  SUBCASE("fork_safe_condition_variable: wait_for lasts its whole timeout, not cut short by signals; a predicate wait "
          "sees the notify") {
    forksafe::fork_safe_mutex m;
    forksafe::fork_safe_condition_variable cv;
    std::unique_lock lock(m);
    // Nobody notifies: a signal handler that ran is no wake-up, so one call
    // lasts the whole 50 ms (a spurious return per signal would make a
    // wait_for loop that never ends).
    const auto t = clock_type::now();
    CHECK(cv.wait_for(lock, 50ms) == std::cv_status::timeout);
    CHECK(elapsed_seconds(t) >= 0.050);
    bool ready = false;
    std::thread notifier = quiet_thread([&] {
      std::this_thread::sleep_for(40ms);
      std::lock_guard g(m);
      ready = true;
      cv.notify_all();
    });
    CHECK(cv.wait_for(lock, must_end, [&] { return ready; }));
    lock.unlock();
    notifier.join();
  }

  SUBCASE("atfork_registry: a prepare that refuses makes fork() back off and retry through the storm") {
    int refusals = 0;
    auto h = forksafe::atfork_registry::instance().add([&] { return ++refusals > 5; }, nullptr, nullptr);
    CHECK(fork_call({.timeout = must_end}, [] { return 9; }).get() == 9);
    CHECK(refusals == 6);
  }

  // doctest runs the test once per SUBCASE: each pass has its own storm.
  MESSAGE("EINTR storm: ", eintr_storm::ticks(), " SIGALRMs handled during this pass");
  CHECK(eintr_storm::ticks() > 0);
  CHECK(count_open_fds() == fds_before);
  CHECK(count_zombie_children() == 0);
}
