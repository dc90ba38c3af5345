// SPDX-License-Identifier: MIT
// fork_safe_mutex, fork_safe_shared_mutex: each policy and each row of the
// policy table, forking for real while other threads hold and contend for
// the locks, with std:: negative controls. (fork_safe_condition_variable's
// are in test_fork_safe_condition_variable.cpp.)

#include <forksafe/fork_safe_mutex.hpp>

#include "support/fork_harness.hpp"
#include "support/fork_while_locked.hpp"
#include "support/identity_only.hpp"

#include <atomic>             // flags shared with holder threads
#include <condition_variable> // std::condition_variable_any
#include <mutex>              // lock_guard, unique_lock, scoped_lock
#include <shared_mutex>       // shared_lock
#include <thread>             // holders and contenders
#include <vector>             // thread groups

using namespace std::chrono_literals;
using forksafe::basic_fork_safe_mutex;
using forksafe::basic_fork_safe_shared_mutex;
using forksafe::fork_policy;
using forksafe_test::identity_only;
using forksafe_test::run_in_child;

using quiesce_mutex = basic_fork_safe_mutex<fork_policy::quiesce>;
using reset_mutex = basic_fork_safe_mutex<fork_policy::reset>;
using poison_mutex = basic_fork_safe_mutex<fork_policy::poison>;
using quiesce_shared = basic_fork_safe_shared_mutex<fork_policy::quiesce>;
using reset_shared = basic_fork_safe_shared_mutex<fork_policy::reset>;
using poison_shared = basic_fork_safe_shared_mutex<fork_policy::poison>;

// ---- the standard requirements, at compile time ----------------------------

template <class M>
concept meets_mutex = requires(M m) {
  m.lock();
  { m.try_lock() } -> std::same_as<bool>;
  m.unlock();
};
template <class M>
concept meets_shared_mutex = meets_mutex<M> && requires(M m) {
  m.lock_shared();
  { m.try_lock_shared() } -> std::same_as<bool>;
  m.unlock_shared();
};

static_assert(meets_mutex<quiesce_mutex> && meets_mutex<reset_mutex> && meets_mutex<poison_mutex>);
static_assert(meets_shared_mutex<quiesce_shared> && meets_shared_mutex<reset_shared> &&
              meets_shared_mutex<poison_shared>);
static_assert(identity_only<quiesce_mutex> && identity_only<reset_mutex> && identity_only<poison_mutex>);
static_assert(identity_only<quiesce_shared>);
static_assert(std::is_same_v<forksafe::fork_safe_mutex, quiesce_mutex>);
static_assert(std::is_same_v<forksafe::fork_safe_shared_mutex, quiesce_shared>);
static_assert(sizeof(quiesce_mutex) <= sizeof(std::mutex) && sizeof(reset_mutex) <= sizeof(std::mutex) &&
              sizeof(poison_mutex) <= sizeof(std::mutex));
static_assert(std::is_base_of_v<std::system_error, forksafe::fork_poisoned>);

template <class M>
concept has_clear_poison = requires(M m) {
  m.clear_poison();
};
static_assert(has_clear_poison<poison_mutex> && has_clear_poison<poison_shared>);
// quiesce locks are poisoned in the child of a fork whose prepare timed out.
static_assert(has_clear_poison<quiesce_mutex> && has_clear_poison<quiesce_shared>);
static_assert(!has_clear_poison<reset_mutex>);

TEST_CASE_TEMPLATE("fork_safe_mutex: works with lock_guard, unique_lock, scoped_lock and condition_variable_any" *
                       doctest::test_suite("memcheck"),
                   M, quiesce_mutex, reset_mutex, poison_mutex) {
  M a, b;
  int counter = 0;
  {
    std::lock_guard g(a);
    CHECK_FALSE(a.try_lock());
    ++counter;
  }
  CHECK(a.try_lock());
  a.unlock();
  {
    std::scoped_lock both(a, b);
    ++counter;
  }
  std::condition_variable_any cv;
  bool ready = false;
  std::thread t([&] {
    std::lock_guard g(a);
    ready = true;
    cv.notify_one();
  });
  std::unique_lock lk(a);
  cv.wait(lk, [&] { return ready; });
  lk.unlock();
  t.join();
  CHECK(counter == 2);
}

TEST_CASE_TEMPLATE("fork_safe_mutex: excludes under contention from 4 threads", M, quiesce_mutex, reset_mutex,
                   poison_mutex, quiesce_shared, reset_shared, poison_shared) {
  M m;
  long counter = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        std::lock_guard g(m);
        ++counter;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(counter == 80000);
}

// ---- the policy table: a lock another thread holds at fork() ---------------

// Set by a test right before it forks, for lock holders that let go only
// once the forking thread is seen asleep (in the fork, waiting for them; or,
// when the fork does not wait, in the wait for its child): they look only
// from then on, since before it the forking thread may sleep elsewhere (in
// creating another holder's thread, say).
struct fork_announcement {
  const pid_t forker = forksafe_test::current_thread_id();
  std::atomic<bool> forking{false};
  // In a holder's thread: returns once the fork is under way (or the
  // fallback limit passed, see wait_until_blocked).
  void wait_for_fork() const {
    while (!forking) std::this_thread::yield();
    (void)forksafe_test::wait_until_blocked(forker);
  }
};

// A thread that takes `m`, tells it holds it, and keeps it until released,
// or, given a fork_announcement, until the fork is under way (see there):
// so a fork is known to meet the lock held, where a hold of 30 ms assumed
// the fork came sooner.
template <class M>
struct holder {
  M& m;
  std::atomic<bool> holding{false};
  std::atomic<bool> release{false};
  int data_a = 0, data_b = 0; // updated in two steps under the lock
  std::thread t;
  explicit holder(M& mutex, const fork_announcement* until_fork = nullptr) : m(mutex) {
    t = std::thread([this, until_fork] {
      m.lock();
      data_a = 1;
      holding = true;
      if (until_fork != nullptr) {
        until_fork->wait_for_fork();
      } else {
        while (!release) std::this_thread::sleep_for(100us);
      }
      data_b = 1;
      m.unlock();
    });
    while (!holding) std::this_thread::yield();
  }
  ~holder() {
    release = true;
    t.join();
  }
};

TEST_CASE_TEMPLATE("quiesce: the fork waits for the critical section; the child gets the lock free and the data whole" *
                       doctest::test_suite("memcheck"),
                   M, quiesce_mutex, quiesce_shared) {
  M m;
  fork_announcement fork;
  holder<M> h(m, &fork);
  fork.forking = true;
  const auto child = run_in_child([&] {
    if (!m.try_lock()) return 1;
    return h.data_a == h.data_b ? 0 : 2; // no update was in progress
  });
  CHECK(child.exited_with(0));
}

TEST_CASE_TEMPLATE("reset: the child gets a lock a vanished thread held as free; the parent's stays held" *
                       doctest::test_suite("memcheck"),
                   M, reset_mutex, reset_shared) {
  M m;
  holder<M> h(m);
  const auto child = run_in_child([&] {
    if (!m.try_lock()) return 1;
    m.unlock();
    m.lock();
    m.unlock();
    return h.data_a == 1 && h.data_b == 0 ? 0 : 2; // mid-update, as documented
  });
  CHECK(child.exited_with(0));
  CHECK_FALSE(m.try_lock()); // the parent's holder still has it
}

TEST_CASE_TEMPLATE(
    "poison: the child's lock and try_lock throw fork_poisoned until clear_poison(); the parent is unaffected" *
        doctest::test_suite("memcheck"),
    M, poison_mutex, poison_shared) {
  M m;
  holder<M> h(m);
  const auto child = run_in_child([&] {
    int thrown = 0;
    try {
      m.lock();
    } catch (const forksafe::fork_poisoned& e) {
      thrown += e.code() == std::errc::owner_dead ? 1 : 0;
    }
    try {
      (void)m.try_lock();
    } catch (const forksafe::fork_poisoned&) {
      ++thrown;
    }
    if (thrown != 2 || !m.poisoned()) return 1;
    m.clear_poison();
    if (m.poisoned() || !m.try_lock()) return 2;
    m.unlock();
    return 0;
  });
  CHECK(child.exited_with(0));
  CHECK_FALSE(m.poisoned());
  CHECK_FALSE(m.try_lock());
}

TEST_CASE_TEMPLATE(
    "fork_safe_mutex: a lock the forking thread holds stays held by it in the child and unlocks normally", M,
    quiesce_mutex, reset_mutex, poison_mutex, quiesce_shared, reset_shared, poison_shared) {
  M m;
  m.lock();
  const auto child = run_in_child([&] {
    if (m.try_lock()) return 1; // still held, by this thread
    m.unlock();
    if (!m.try_lock()) return 2;
    m.unlock();
    return 0;
  });
  m.unlock();
  CHECK(child.exited_with(0));
}

TEST_CASE_TEMPLATE("fork_safe_mutex: a lock nobody held is simply free in the child", M, quiesce_mutex, reset_mutex,
                   poison_mutex, quiesce_shared, reset_shared, poison_shared) {
  M m;
  const auto child = run_in_child([&] {
    if (!m.try_lock()) return 1;
    m.unlock();
    return 0;
  });
  CHECK(child.exited_with(0));
}

// ---- shared mutex: readers ---------------------------------------------------

// A thread that takes a read lock on `m`, as holder does a lock.
template <class M>
struct reader {
  M& m;
  std::atomic<bool> holding{false}, release{false};
  std::thread t;
  explicit reader(M& mutex, const fork_announcement* until_fork = nullptr) : m(mutex) {
    t = std::thread([this, until_fork] {
      std::shared_lock lk(m);
      holding = true;
      if (until_fork != nullptr) {
        until_fork->wait_for_fork();
      } else {
        while (!release) std::this_thread::sleep_for(100us);
      }
    });
    while (!holding) std::this_thread::yield();
  }
  ~reader() {
    release = true;
    t.join();
  }
};

TEST_CASE_TEMPLATE("fork_safe_shared_mutex: readers that vanished with the fork never block the child's writer" *
                       doctest::test_suite("memcheck"),
                   M, quiesce_shared, reset_shared) {
  M m;
  // quiesce: the fork waits for both readers; reset: it does not, and they
  // let go only once it has happened, so in the child they vanished.
  fork_announcement fork;
  reader<M> r1(m, &fork), r2(m, &fork);
  fork.forking = true;
  const auto child = run_in_child(
      [&] {
        m.lock(); // would wait forever for two readers that do not exist here
        m.unlock();
        return 0;
      },
      5s);
  CHECK(child.exited_with(0));
}

TEST_CASE("poison: vanished readers poison a shared mutex in the child") {
  poison_shared m;
  reader<poison_shared> r(m);
  const auto child = run_in_child([&] {
    try {
      m.lock_shared();
      return 1;
    } catch (const forksafe::fork_poisoned&) {
    }
    m.clear_poison();
    m.lock();
    m.unlock();
    return 0;
  });
  CHECK(child.exited_with(0));
}

TEST_CASE_TEMPLATE("fork_safe_shared_mutex: read locks the forking thread holds stay held in the child", M,
                   quiesce_shared, reset_shared, poison_shared) {
  M m;
  m.lock_shared();
  m.lock_shared();
  const auto child = run_in_child([&] {
    if (m.try_lock()) return 1; // two read locks still held
    m.unlock_shared();
    if (m.try_lock()) return 2;
    m.unlock_shared();
    if (!m.try_lock()) return 3;
    m.unlock();
    return 0;
  });
  m.unlock_shared();
  m.unlock_shared();
  CHECK(child.exited_with(0));
}

TEST_CASE("quiesce: forking while holding a read lock that a writer waits for does not deadlock") {
  quiesce_shared m;
  m.lock_shared();
  std::atomic<bool> writer_done{false};
  std::atomic<pid_t> writer_id{0};
  std::thread writer([&] {
    writer_id = forksafe_test::current_thread_id();
    m.lock(); // waits for our read lock
    m.unlock();
    writer_done = true;
  });
  // The writer is asleep in lock(), waiting: seen, not assumed from a sleep.
  while (writer_id.load() == 0) std::this_thread::yield();
  (void)forksafe_test::wait_until_blocked(writer_id.load());
  const auto child = run_in_child(
      [&] {
        m.unlock_shared();
        if (!m.try_lock()) return 1; // the waiting writer did not survive
        m.unlock();
        return 0;
      },
      5s);
  m.unlock_shared();
  writer.join();
  CHECK(child.exited_with(0));
  CHECK(writer_done);
}

TEST_CASE("fork_safe_shared_mutex: readers share, a writer excludes, past 32 read locks throws ENOLCK") {
  forksafe::fork_safe_shared_mutex m;
  m.lock_shared();
  CHECK(m.try_lock_shared());
  CHECK_FALSE(m.try_lock());
  m.unlock_shared();
  m.unlock_shared();
  CHECK(m.try_lock());
  CHECK_FALSE(m.try_lock_shared());
  m.unlock();

  std::vector<std::unique_ptr<forksafe::fork_safe_shared_mutex>> many;
  for (int i = 0; i < 33; ++i) many.push_back(std::make_unique<forksafe::fork_safe_shared_mutex>());
  for (int i = 0; i < 32; ++i) many[static_cast<std::size_t>(i)]->lock_shared();
  CHECK_THROWS_AS(many[32]->lock_shared(), std::system_error);
  for (int i = 0; i < 32; ++i) many[static_cast<std::size_t>(i)]->unlock_shared();
  many[32]->lock_shared();
  many[32]->unlock_shared();
}

// ---- the fork-while-locked program: 300 forks --------------------------------

TEST_CASE("fork-while-locked program: with std::mutex the harness catches stuck children (negative control)") {
  std::mutex m;
  const auto r = forksafe_test::run_fork_while_locked(m, 300);
  MESSAGE("std::mutex: ", r.stuck, " of ", r.forks, " children stuck");
  CHECK(r.stuck > 0);
  CHECK(r.stuck + r.exited(0) == r.forks);
}

TEST_CASE_TEMPLATE("fork-while-locked program: 300 forks, no child stuck", M, quiesce_mutex, reset_mutex,
                   quiesce_shared, reset_shared) {
  M m;
  // Every child must end by the deadline: scaled (the negative control's
  // stays short: its stuck children never end).
  const auto r = forksafe_test::run_fork_while_locked(m, 300, forksafe_test::scaled(1000ms));
  CHECK(r.stuck == 0);
  CHECK(r.exited(0) == r.forks);
}

TEST_CASE_TEMPLATE("fork-while-locked program: 300 forks with poison, no child stuck and poison observed", M,
                   poison_mutex, poison_shared) {
  M m;
  const auto r = forksafe_test::run_fork_while_locked(m, 300, forksafe_test::lock_or_report_poison(m),
                                                      forksafe_test::scaled(1000ms)); // every child must end: scaled
  MESSAGE("poison: ", r.exited(3), " of ", r.forks, " children saw fork_poisoned");
  CHECK(r.stuck == 0);
  CHECK(r.exited(3) > 0);
  CHECK(r.exited(0) + r.exited(3) == r.forks);
}

// ---- quiesce against lock-order inversion and starvation -------------------

namespace {
// In a sandbox child: quiesce mutexes A (older, so earlier in the fork list)
// and B; a thread takes both with no pause between rounds, A then B or B
// then A, while this thread forks `forks` children that each take both.
// Exit 0 when every child finished within 5 s (scaled) and the thread, busy
// before the first fork, still makes progress after the last (a thread left
// stuck keeps the sandbox child from ending: its deadline reports it).
forksafe_test::outcome forks_against_two_locks(bool b_first, int forks) {
  return run_in_child(
      [b_first, forks] {
        forksafe::fork_safe_mutex a, b;
        forksafe::fork_safe_mutex& first = b_first ? b : a;
        forksafe::fork_safe_mutex& second = b_first ? a : b;
        std::atomic<bool> stop{false};
        std::atomic<long> rounds{0};
        std::thread t([&] {
          while (!stop.load(std::memory_order_relaxed)) {
            std::lock_guard l1(first);
            std::lock_guard l2(second); // holds one, wants the other
            rounds.fetch_add(1, std::memory_order_relaxed);
          }
        });
        while (rounds.load() == 0) std::this_thread::yield(); // contending from the first fork on
        int bad = 0;
        for (int i = 0; i < forks; ++i) {
          const auto c = run_in_child(
              [&] {
                std::scoped_lock both(a, b);
                return 0;
              },
              5s);
          bad += c.exited_with(0) ? 0 : 1;
        }
        const long after_forks = rounds.load();
        while (rounds.load() == after_forks) std::this_thread::yield(); // counted, not timed
        stop = true;
        t.join();
        return bad == 0 && rounds.load() > 0 ? 0 : 1;
      },
      60s);
}
} // namespace

TEST_CASE("quiesce: a thread taking A then B with no pause between rounds: 1,000 forks, no hang") {
  CHECK(forks_against_two_locks(false, 1000).exited_with(0));
}

TEST_CASE("quiesce: a thread holding B that waits for A, which a failed fork pass had tagged, is woken: 300 forks") {
  // A is older than B, so a pass tags A, finds B busy and backs out. The
  // thread, holding B, met A's tag and sleeps until the gate word changes.
  // If only the end of a fork changed it, neither could go on: the fork
  // retries for ever (it needs B), the thread sleeps for ever (holding B).
  CHECK(forks_against_two_locks(true, 300).exited_with(0));
}

// A handler registered while the program starts is older than the quiesce
// domain (created with the first quiesce lock), so its prepare runs after the
// domain has taken every quiesce lock for the fork: a window in which another
// thread can block on a lock held under the fork's tag.
// The prepare waits until the thread is seen asleep on the lock (or has it
// already), where a 50 ms sleep assumed it got there in that time.
std::atomic<bool> slow_prepare_armed{false};
std::atomic<bool> in_slow_prepare{false};
std::atomic<pid_t> slow_prepare_waiter{0}; // the thread that blocks on the lock
std::atomic<bool> slow_prepare_waiter_done{false};
const forksafe::atfork_handle slow_prepare = forksafe::atfork_registry::instance().add(
    [] {
      if (!slow_prepare_armed) return;
      in_slow_prepare = true;
      // Allocates nothing: this runs inside fork().
      const auto until =
          std::chrono::steady_clock::now() + forksafe_test::scaled(10s); // a fallback, see wait_until_blocked
      while (!slow_prepare_waiter_done && !forksafe_test::thread_is_blocked(slow_prepare_waiter) &&
             std::chrono::steady_clock::now() < until) {
        std::this_thread::yield();
      }
    },
    nullptr, nullptr);

TEST_CASE_TEMPLATE("quiesce: a thread blocked on a lock taken for the fork gets it once fork() returns", M,
                   quiesce_mutex, quiesce_shared) {
  M m;
  std::atomic<bool> got_it{false};
  std::atomic<bool> started{false};
  slow_prepare_waiter_done = false;
  std::thread t([&] {
    slow_prepare_waiter = forksafe_test::current_thread_id();
    started = true;
    while (!in_slow_prepare) std::this_thread::yield();
    std::lock_guard g(m); // taken under the fork's tag right now
    got_it = true;
    slow_prepare_waiter_done = true;
  });
  while (!started) std::this_thread::yield();
  slow_prepare_armed = true;
  const auto child = run_in_child([&] { return m.try_lock() ? 0 : 1; });
  slow_prepare_armed = false;
  in_slow_prepare = false;
  // A hang shows as false, after a generous (scaled) wait.
  const auto until = std::chrono::steady_clock::now() + forksafe_test::scaled(5s);
  while (!got_it && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
  CHECK(got_it);
  t.join();
  CHECK(child.exited_with(0));
}
