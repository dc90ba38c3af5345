// SPDX-License-Identifier: MIT
// No fork starves: guard() against busy third-party locks, the quiesce gate
// under long and queued critical sections, bounded waits that go on (fork())
// or give up (fork_call) with what held them back named, honest timeouts and
// the slow-fork reports. Every test forks for real; each pattern has its
// negative control: the try-lock-only registry, plain pthread_atfork with
// blocking locks, or an unbounded wait, shown starving or hung and caught by
// a deadline. Work is bounded by fork counts; only deadlines involve time.

#include <forksafe/atfork_registry.hpp>
#include <forksafe/fork_call.hpp>
#include <forksafe/fork_safe_mutex.hpp>
#include <forksafe/process_pool.hpp>
#include <forksafe/process_result.hpp>

#include "support/expect_error.hpp"
#include "support/fork_harness.hpp"

#include <algorithm>    // std::count
#include <atomic>       // stop flags, counters
#include <chrono>       // sections, deadlines
#include <cstring>      // std::strstr
#include <mutex>        // std::mutex, std::recursive_mutex: third-party locks
#include <shared_mutex> // std::shared_lock
#include <string>       // reports
#include <thread>       // lock holders
#include <vector>       // threads

#include <fcntl.h>    // O_CLOEXEC
#include <sys/wait.h> // waitpid: the probe
#include <unistd.h>   // fork, pipe, dup2

using namespace std::chrono_literals;
using forksafe::atfork_registry;
using forksafe::child_error;
using forksafe_test::outcome;
using forksafe_test::run_in_child;
using forksafe_test::run_in_child_expected_to_hang;
using forksafe_test::scaled;

namespace {

// Threads that run `body(i)` in a loop until destroyed.
struct load {
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  std::atomic<long> rounds{0};

  template <class Body>
  load(int n, Body body) {
    for (int i = 0; i < n; ++i) {
      threads.emplace_back([this, body, i] {
        while (!stop.load(std::memory_order_relaxed)) {
          body(i);
          rounds.fetch_add(1, std::memory_order_relaxed);
        }
      });
    }
    while (rounds.load() < n) std::this_thread::yield(); // every thread is busy before the first fork
  }
  ~load() {
    stop = true;
    for (auto& t : threads) t.join();
  }
  load(const load&) = delete; // owns threads
  load& operator=(const load&) = delete;
};

// Forks `forks` children that each take the locks with `child`; exit 0 when
// all of them ended with 0. Runs inside a sandbox child.
template <class Child>
int fork_children(int forks, Child child) {
  for (int i = 0; i < forks; ++i) {
    if (!run_in_child(child, 30s).exited_with(0)) return 1;
  }
  return 0;
}

// The third-party pattern: one thread holds A, pauses, takes B; the two
// registered as the two libraries of the README would.
enum class pause_kind { yield, one_us, hundred_us };
void pause(pause_kind p) {
  switch (p) {
  case pause_kind::yield: std::this_thread::yield(); break;
  case pause_kind::one_us: std::this_thread::sleep_for(1us); break;
  case pause_kind::hundred_us: std::this_thread::sleep_for(100us); break;
  }
}

struct two_libraries {
  std::mutex a, b;
  pause_kind p;
  void round() {
    std::lock_guard la(a);
    pause(p);
    std::lock_guard lb(b);
  }
};

// Registers `m` with a try-lock prepare only: what the registry had before
// guard() (the negative control).
forksafe::atfork_handle try_lock_only(std::mutex& m) {
  return atfork_registry::instance().add([&m] { return m.try_lock(); }, [&m] { m.unlock(); }, [&m] { m.unlock(); });
}

outcome third_party_forks(pause_kind p, bool use_guard, int forks, std::chrono::milliseconds deadline) {
  auto body = [p, use_guard, forks] {
    two_libraries libs{{}, {}, p};
    forksafe::atfork_handle ga =
        use_guard ? atfork_registry::instance().guard(libs.a, "library A") : try_lock_only(libs.a);
    forksafe::atfork_handle gb =
        use_guard ? atfork_registry::instance().guard(libs.b, "library B") : try_lock_only(libs.b);
    load busy(1, [&](int) { libs.round(); });
    return fork_children(forks, [&] {
      std::scoped_lock both(libs.a, libs.b); // free in the child: the fork held both
      return 0;
    });
  };
  return use_guard ? run_in_child(body, deadline) : run_in_child_expected_to_hang(body, deadline);
}

} // namespace

// ---- guard(): third-party locks, std::lock's algorithm ----------------------

TEST_CASE("guard: two library mutexes against a thread taking A, yielding, then B: 100 forks complete") {
  CHECK(third_party_forks(pause_kind::yield, true, 100, 60s).exited_with(0));
}

TEST_CASE("guard: the same with a 1 µs and a 100 µs sleep between A and B: 100 forks complete each") {
  CHECK(third_party_forks(pause_kind::one_us, true, 100, 60s).exited_with(0));
  CHECK(third_party_forks(pause_kind::hundred_us, true, 100, 60s).exited_with(0));
}

TEST_CASE("guard, negative control: try-lock-only prepares starve against a 100 µs sleep between A and B") {
  // Each pass samples the moment both are free: between the thread's unlock
  // of A and its next lock of A. 50 forks do not complete in 2 s.
  const auto o = third_party_forks(pause_kind::hundred_us, false, 50, 2s);
  INFO("sandbox ", o.describe());
  CHECK(o.how == forksafe_test::kind::timed_out);
}

TEST_CASE("guard: fork_call from 4 threads and a pool worker's replacement under the same load") {
  const auto o = run_in_child(
      [] {
        two_libraries libs{{}, {}, pause_kind::hundred_us};
        auto ga = atfork_registry::instance().guard(libs.a, "library A");
        auto gb = atfork_registry::instance().guard(libs.b, "library B");
        load busy(1, [&](int) { libs.round(); });
        std::atomic<int> bad{0};
        std::vector<std::thread> callers;
        for (int t = 0; t < 4; ++t) {
          callers.emplace_back([&] {
            for (int i = 0; i < 25; ++i) {
              if (forksafe::fork_call([] { return 7; }).get() != 7) ++bad;
            }
          });
        }
        for (auto& c : callers) c.join();
        forksafe::process_pool pool(1);
        auto crash = pool.submit([] {
          std::abort();
          return 0;
        });
        const auto e = forksafe_test::error_of(crash);
        if (!e || !e->signaled()) ++bad;
        if (pool.submit([](int x) { return x * x; }, 9).get() != 81) ++bad; // runs on the replacement
        return bad.load();
      },
      120s);
  CHECK(o.exited_with(0));
}

TEST_CASE("guard: a std::recursive_mutex is remade in the child, where unlocking it would fail") {
  std::recursive_mutex m;
  auto g = atfork_registry::instance().guard(m, "recursive");
  const auto o = run_in_child([&] {
    if (!m.try_lock()) return 1; // remade: free, and this thread may own it
    m.unlock();
    return 0;
  });
  CHECK(o.exited_with(0));
}

TEST_CASE("guard: a lock the forking thread itself holds is left to it, in parent and child") {
  std::mutex m;
  auto g = atfork_registry::instance().guard(m, "held by the forker");
  std::lock_guard held(m);
  const auto o = run_in_child([&] {
    m.unlock(); // still this thread's in the child
    return m.try_lock() ? 0 : 1;
  });
  CHECK(o.exited_with(0));
}

TEST_CASE("guard: destroying the guard while a fork blocks on its lock waits for that fork, never a crash") {
  const auto o = run_in_child(
      [] {
        auto* m = new std::mutex;
        auto* g = new forksafe::atfork_handle(atfork_registry::instance().guard(*m, "dying"));
        std::atomic<bool> holding{false};
        std::thread holder([&] {
          m->lock();
          holding = true;
          std::this_thread::sleep_for(200ms);
          m->unlock();
          delete g; // the fork may be blocked on it: waits until the fork left the entry
          delete m;
        });
        while (!holding) std::this_thread::yield();
        const auto child = run_in_child([] { return 0; });
        holder.join();
        return child.exited_with(0) ? 0 : 1;
      },
      60s);
  CHECK(o.exited_with(0));
}

TEST_CASE("atfork_handlers: a prepare_until without a try_prepare is refused") {
  forksafe::atfork_handlers h;
  h.prepare_until = [](std::chrono::steady_clock::time_point) { return true; };
  CHECK_THROWS_AS((void)atfork_registry::instance().add(std::move(h)), std::invalid_argument);
}

// ---- quiesce: long, queued and out-of-phase critical sections ---------------

namespace {
// Each of `threads` threads loops taking `lock_of(i)` for `section`; the
// sandbox forks `forks` children that each lock every lock.
template <class Locks, class LockOf>
int quiesce_forks(Locks& locks, LockOf lock_of, int threads, std::chrono::microseconds section, int forks) {
  load busy(threads, [&](int i) {
    std::lock_guard l(lock_of(i));
    std::this_thread::sleep_for(section);
  });
  return fork_children(forks, [&] {
    for (auto& m : locks) {
      if (!m.try_lock()) return 1; // free in the child: the fork waited for every section
      m.unlock();
    }
    return 0;
  });
}
} // namespace

TEST_CASE("quiesce: 4 threads queued on one mutex with 5 ms sections: 30 forks complete") {
  const auto o = run_in_child(
      [] {
        forksafe::fork_safe_mutex locks[1];
        return quiesce_forks(
            locks, [&](int) -> auto& { return locks[0]; }, 4, 5ms, 30);
      },
      120s);
  CHECK(o.exited_with(0));
}

TEST_CASE("quiesce: 4 threads on their own locks, 20 ms sections out of phase: 20 forks complete") {
  const auto o = run_in_child(
      [] {
        forksafe::fork_safe_mutex locks[4];
        return quiesce_forks(
            locks, [&](int i) -> auto& { return locks[i]; }, 4, 20ms, 20);
      },
      120s);
  CHECK(o.exited_with(0));
}

TEST_CASE("quiesce, negative control: the same 4 out-of-phase holders on try-lock-only std::mutex entries starve") {
  const auto o = run_in_child_expected_to_hang(
      [] {
        std::mutex locks[4];
        forksafe::atfork_handle h[4];
        for (int i = 0; i < 4; ++i) h[i] = try_lock_only(locks[i]);
        return quiesce_forks(
            locks, [&](int i) -> auto& { return locks[i]; }, 4, 20ms, 20);
      },
      2s);
  INFO("sandbox ", o.describe());
  CHECK(o.how == forksafe_test::kind::timed_out);
}

TEST_CASE("quiesce: 4 staggered readers of a shared mutex and a writer, with fork_call from 4 threads") {
  const auto o = run_in_child(
      [] {
        forksafe::fork_safe_shared_mutex m;
        load readers(4, [&](int i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(5 * i));
          std::shared_lock l(m);
          std::this_thread::sleep_for(20ms);
        });
        load writer(1, [&](int) {
          std::lock_guard l(m);
          std::this_thread::sleep_for(1ms);
        });
        std::atomic<int> bad{0};
        std::vector<std::thread> callers;
        for (int t = 0; t < 4; ++t) {
          callers.emplace_back([&] {
            for (int i = 0; i < 5; ++i) {
              const bool ok = forksafe::fork_call([&] {
                                if (!m.try_lock()) return false;
                                m.unlock();
                                return true;
                              }).get();
              if (!ok) ++bad;
            }
          });
        }
        for (auto& c : callers) c.join();
        return bad.load();
      },
      120s);
  CHECK(o.exited_with(0));
}

namespace {
// Thread 1 holds quiesce A and wants plain X; thread 2 holds X and wants
// quiesce B. A fork that takes every quiesce lock first, holding back
// whoever holds none, would wait for A for ever: thread 1 waits for X, held
// by thread 2, which waits to take B.
template <class Fork>
int plain_lock_cycle(Fork fork_once, int forks) {
  forksafe::fork_safe_mutex a, b;
  std::mutex x;
  load one(1, [&](int) {
    std::lock_guard la(a);
    std::this_thread::sleep_for(200us);
    std::lock_guard lx(x);
  });
  load two(1, [&](int) {
    std::lock_guard lx(x);
    std::this_thread::sleep_for(200us);
    std::lock_guard lb(b);
  });
  for (int i = 0; i < forks; ++i) {
    if (fork_once(a, b) != 0) return 1;
  }
  return 0;
}
} // namespace

TEST_CASE("quiesce: a cycle through a plain mutex (A -> X, X -> B) lets held-back threads through: 20 forks") {
  const auto o = run_in_child(
      [] {
        return plain_lock_cycle(
            [](auto& a, auto& b) {
              return run_in_child(
                         [&] {
                           std::scoped_lock both(a, b);
                           return 0;
                         },
                         30s)
                             .exited_with(0)
                         ? 0
                         : 1;
            },
            20);
      },
      120s);
  CHECK(o.exited_with(0));
}

TEST_CASE("quiesce, negative control: taking A and B in pthread_atfork with blocking locks deadlocks on that cycle") {
  const auto o = run_in_child_expected_to_hang(
      [] {
        return plain_lock_cycle(
            [](auto& a, auto& b) {
              // The naive cure: lock everything before fork, whoever holds what.
              static auto* pa = &a;
              static auto* pb = &b;
              pa = &a;
              pb = &b;
              static const int once =
                  ::pthread_atfork([] { pa->lock(), pb->lock(); }, [] { pb->unlock(), pa->unlock(); },
                                   [] { pb->unlock(), pa->unlock(); });
              (void)once;
              return run_in_child([] { return 0; }, 30s).exited_with(0) ? 0 : 1;
            },
            20);
      },
      2s);
  INFO("sandbox ", o.describe());
  CHECK(o.how == forksafe_test::kind::timed_out);
}

// ---- the prepare timeout -------------------------------------------------------

namespace {
// fork(), the child runs `body` and _exits with its result; waits for it.
template <class Body>
outcome plain_fork(Body body) {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(body());
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return {forksafe_test::kind::exited, WEXITSTATUS(status)};
  return {forksafe_test::kind::signaled, WTERMSIG(status)};
}
} // namespace

namespace {
// Two threads walk hand over hand round a ring of quiesce locks, for ever:
// each always holds one (it takes the next before it lets go of the last),
// so no moment comes when all are free.
struct ring_walk {
  forksafe::fork_safe_mutex locks[4];
  std::atomic<bool> stop{false};
  std::atomic<int> started{0};
  std::vector<std::thread> walkers;
  ring_walk() {
    for (int w = 0; w < 2; ++w) {
      walkers.emplace_back([this, w] {
        int i = w * 2;
        locks[i].lock();
        ++started;
        while (!stop.load(std::memory_order_relaxed)) {
          const int next = (i + 1) % 4;
          locks[next].lock();
          locks[i].unlock();
          i = next;
          std::this_thread::sleep_for(50us);
        }
        locks[i].unlock();
      });
    }
    while (started.load() < 2) std::this_thread::yield();
  }
  ~ring_walk() {
    stop = true;
    for (auto& t : walkers) t.join();
  }
  ring_walk(const ring_walk&) = delete; // owns threads
  ring_walk& operator=(const ring_walk&) = delete;
};
} // namespace

TEST_CASE("prepare timeout: a ring walked hand over hand; fork() goes on, the held lock is poisoned in the child") {
  const auto o = run_in_child(
      [] {
        atfork_registry::instance().set_prepare_timeout(300ms);
        ring_walk ring;
        int poisoned = 0;
        for (int i = 0; i < 5; ++i) {
          // A plain fork(), which cannot fail: it goes on. (forksafe's own
          // forks, run_in_child's among them, give up instead.)
          const auto c = plain_fork([&] {
            int seen = 0;
            for (auto& m : ring.locks) {
              try {
                if (!m.try_lock()) return 100; // neither free nor poisoned: a hang in waiting
                m.unlock();
              } catch (const forksafe::fork_poisoned&) {
                if (!m.poisoned()) return 101;
                m.clear_poison();
                if (!m.try_lock()) return 102;
                m.unlock();
                ++seen;
              }
            }
            return seen;
          });
          // A walker held at least one lock when fork() went on.
          if (c.how != forksafe_test::kind::exited || c.value >= 100 || c.value < 1) return 1;
          poisoned += c.value;
        }
        return poisoned >= 5 ? 0 : 2;
      },
      120s);
  CHECK(o.exited_with(0));
}

TEST_CASE("prepare timeout, negative control: with a timeout too long to matter, the same ring stalls the fork") {
  const auto o = run_in_child_expected_to_hang(
      [] {
        atfork_registry::instance().set_prepare_timeout(std::chrono::hours(1));
        ring_walk ring;
        return plain_fork([] { return 0; }).exited_with(0) ? 0 : 1;
      },
      2s);
  INFO("sandbox ", o.describe());
  CHECK(o.how == forksafe_test::kind::timed_out);
}

TEST_CASE("prepare timeout: fork() past it goes on without a guarded lock never released, and says so on stderr") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  const auto o = run_in_child(
      [&] {
        ::dup2(fds[1], 2);
        atfork_registry::instance().set_prepare_timeout(200ms);
        std::mutex m;
        auto g = atfork_registry::instance().guard(m, "a lock never released");
        std::atomic<bool> release{false};
        std::thread holder([&] {
          std::lock_guard l(m);
          while (!release) std::this_thread::sleep_for(1ms);
        });
        while (m.try_lock()) m.unlock(); // until the holder has it
        const pid_t pid = ::fork();      // goes on after 200 ms
        if (pid == 0) ::_exit(0);
        int status = 0;
        ::waitpid(pid, &status, 0);
        release = true;
        holder.join();
        return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
      },
      60s);
  ::close(fds[1]);
  char buf[2048] = {};
  const auto n = ::read(fds[0], buf, sizeof buf - 1);
  ::close(fds[0]);
  CHECK(o.exited_with(0));
  REQUIRE(n > 0);
  const std::string text(buf);
  INFO(text);
  CHECK(text.rfind("forksafe: fork() could not be prepared within ", 0) == 0);
  CHECK(text.find("went on without 'a lock never released'") != std::string::npos);
}

// ---- honest timeouts --------------------------------------------------------------

namespace {
// A thread takes a quiesce lock and keeps it until the thread that made this
// (the one about to fork) is seen asleep, in the fork's wait for it, then for
// `extra` more, or, with extra < 0, until destroyed. So the fork is known to
// wait at least `extra` for it, whatever the machine's speed.
struct holder_past_fork {
  forksafe::fork_safe_mutex m;
  std::atomic<bool> holding{false};
  std::atomic<bool> release{false};
  std::thread t;
  explicit holder_past_fork(std::chrono::milliseconds extra) {
    const pid_t forker = forksafe_test::current_thread_id();
    t = std::thread([this, extra, forker] {
      std::lock_guard l(m);
      holding = true;
      if (extra.count() < 0) {
        while (!release) std::this_thread::sleep_for(1ms);
        return;
      }
      (void)forksafe_test::wait_until_blocked(forker);
      std::this_thread::sleep_for(extra);
    });
    while (!holding) std::this_thread::yield();
  }
  ~holder_past_fork() {
    release = true;
    t.join();
  }
  holder_past_fork(const holder_past_fork&) = delete; // owns a thread
  holder_past_fork& operator=(const holder_past_fork&) = delete;
};
} // namespace

TEST_CASE("fork_call: a timeout that runs out while the fork is prepared says so, and forks nothing") {
  holder_past_fork busy(-1ms); // held until the test is done
  auto r = forksafe::fork_call({.timeout = 200ms}, [] { return 1; });
  const auto e = forksafe_test::error_of(r);
  REQUIRE(e);
  INFO(e->what());
  CHECK(e->prepare_timed_out());
  CHECK_FALSE(e->timed_out());
  CHECK(e->pid() == -1);
  CHECK(e->blocker().find("forksafe quiesce locks") != std::string::npos);
  CHECK(std::string(e->what()).rfind("no child was forked: the fork could not be prepared within ", 0) == 0);
  CHECK(r.pid() == -1);
}

TEST_CASE("fork_call: a child that returns at once after a slow preparation delivers its value") {
  holder_past_fork busy(300ms);
  // The timeout is generous (scaled): the preparation's 300 ms count toward
  // it, the child's own run does not come near it.
  auto r = forksafe::fork_call({.timeout = scaled(10s)}, [] { return 42; });
  CHECK(r.get() == 42);
}

TEST_CASE("fork_call: a child that overruns says how long it ran") {
  auto r = forksafe::fork_call({.timeout = 100ms}, [] {
    std::this_thread::sleep_for(30s);
    return 0;
  });
  const auto e = forksafe_test::error_of(r);
  REQUIRE(e);
  CHECK(e->timed_out());
  CHECK(std::string(e->what()).find(" timed out after running ") != std::string::npos);
}

// ---- diagnostics ---------------------------------------------------------------

TEST_CASE("on_slow_fork: a slow fork is reported with the entry that refused, its refusals and the wait") {
  const auto o = run_in_child(
      [] {
        std::mutex m;
        auto g = atfork_registry::instance().guard(m, std::string(200, 'n')); // any length: cut in reports
        std::atomic<int> reports{0};
        std::string name;
        unsigned refusals = 0;
        std::chrono::nanoseconds waited{};
        atfork_registry::instance().on_slow_fork(
            [&](const forksafe::fork_report& r) {
              ++reports;
              waited = r.waited;
              if (!r.blockers.empty()) {
                name = r.blockers[0].name;
                refusals = r.blockers[0].refusals;
              }
            },
            50ms);
        {
          std::atomic<bool> holding{false};
          const pid_t forker = forksafe_test::current_thread_id();
          std::thread holder([&] {
            std::lock_guard l(m);
            holding = true;
            (void)forksafe_test::wait_until_blocked(forker); // the fork waits for it...
            std::this_thread::sleep_for(100ms);              // ...at least 100 ms
          });
          while (!holding) std::this_thread::yield();
          if (!run_in_child([] { return 0; }).exited_with(0)) return 1;
          holder.join();
        }
        if (!run_in_child([] { return 0; }).exited_with(0)) return 2; // not slow: not reported
        atfork_registry::instance().on_slow_fork(nullptr, 0ms);
        if (reports != 1) return 3;
        if (name != std::string(63, 'n')) return 4;
        if (refusals < 1) return 5;
        return waited >= 50ms ? 0 : 6;
      },
      60s);
  CHECK(o.exited_with(0));
}

TEST_CASE("on_slow_fork: called from inside a fork handler it throws std::logic_error") {
  const auto o = run_in_child([] {
    std::atomic<int> result{0};
    auto h = atfork_registry::instance().add(
        [&] {
          try {
            atfork_registry::instance().on_slow_fork(nullptr, 0ms);
          } catch (const std::logic_error&) {
            result = 1;
          }
        },
        nullptr, nullptr);
    (void)run_in_child([] { return 0; });
    return result.load() == 1 ? 0 : 1;
  });
  CHECK(o.exited_with(0));
}

namespace {
#ifndef SLOW_FORK_PROBE_PATH
#error "the build passes the path of tests/slow_fork_probe"
#endif
struct probe_run {
  int status = -1;
  std::string err;
};

// Runs the probe with `env` (NAME=value, or nullptr) added to the
// environment; returns its exit status and what it wrote to stderr.
probe_run run_probe(const char* env) {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], 2);
    ::unsetenv("FORKSAFE_SLOW_FORK_MS");
    ::unsetenv("FORKSAFE_PREPARE_TIMEOUT_MS");
    if (env != nullptr) ::putenv(const_cast<char*>(env));
    ::execl(SLOW_FORK_PROBE_PATH, SLOW_FORK_PROBE_PATH, static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[1]);
  probe_run r;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) != 0;) {
    if (n > 0) r.err.append(buf, static_cast<std::size_t>(n));
    if (n < 0 && errno != EINTR) break;
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}
} // namespace

TEST_CASE("FORKSAFE_SLOW_FORK_MS: a fork that waited longer prints one line naming what held it back") {
  const auto r = run_probe("FORKSAFE_SLOW_FORK_MS=50");
  INFO(r.err);
  CHECK(r.status == 0);
  CHECK(r.err.rfind("forksafe: fork() waited ", 0) == 0);
  CHECK(r.err.find("held back by 'probe lock' refused ") != std::string::npos);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}

TEST_CASE("FORKSAFE_SLOW_FORK_MS: unset, or above the wait, nothing is printed") {
  const auto unset = run_probe(nullptr);
  CHECK(unset.status == 0);
  CHECK(unset.err.empty());
  const auto high = run_probe("FORKSAFE_SLOW_FORK_MS=3600000");
  CHECK(high.status == 0);
  CHECK(high.err.empty());
}

TEST_CASE("FORKSAFE_SLOW_FORK_MS: garbage is ignored with one warning, never a crash") {
  for (const char* bad : {"FORKSAFE_SLOW_FORK_MS=soon", "FORKSAFE_SLOW_FORK_MS=-5", "FORKSAFE_SLOW_FORK_MS=12ms",
                          "FORKSAFE_SLOW_FORK_MS=99999999999999999999"}) {
    const auto r = run_probe(bad);
    INFO(bad, ": ", r.err);
    CHECK(r.status == 0);
    CHECK(r.err.rfind("forksafe: ignoring FORKSAFE_SLOW_FORK_MS=", 0) == 0);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }
}

TEST_CASE(
    "FORKSAFE_PREPARE_TIMEOUT_MS: a fork that cannot be prepared in time goes on, and the line says without what") {
  // The probe's lock is held 100 ms past the moment the fork is seen waiting.
  const auto r = run_probe("FORKSAFE_PREPARE_TIMEOUT_MS=20");
  INFO(r.err);
  CHECK(r.status == 0);
  CHECK(r.err.rfind("forksafe: fork() could not be prepared within ", 0) == 0);
  CHECK(r.err.find("went on without 'probe lock'") != std::string::npos);
  const auto bad = run_probe("FORKSAFE_PREPARE_TIMEOUT_MS=later");
  INFO(bad.err);
  CHECK(bad.status == 0);
  CHECK(bad.err.rfind("forksafe: ignoring FORKSAFE_PREPARE_TIMEOUT_MS=", 0) == 0);
}
