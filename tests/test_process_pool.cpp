// SPDX-License-Identifier: MIT
// process_pool: values back from pre-forked workers; every way a task can
// end reaches its caller alone while the pool goes on; nothing leaks.

#include <forksafe/process_pool.hpp>

#include "support/fork_harness.hpp"

#include <array>     // large results
#include <atomic>    // counters
#include <cerrno>    // errno: a task's read of the gate
#include <cstdlib>   // std::abort
#include <cstring>   // std::memset: the leak control
#include <future>    // std::async: the seed's inner pool
#include <memory>    // the leak control
#include <optional>  // a pool destroyed on purpose
#include <stdexcept> // std::logic_error
#include <string>    // rejected results
#include <thread>    // submitting threads
#include <vector>    // handles

#include <dlfcn.h>  // dlopen: code loaded after the pool started
#include <poll.h>   // native_handle
#include <unistd.h> // _exit, getpid

using namespace std::chrono_literals;
using forksafe::child_error;
using forksafe::process_pool;

namespace {

int square(int x) { return x * x; }

} // namespace

// ---- what may be submitted, at compile time -------------------------------

static_assert(forksafe::pool_task<int (*)(int), int>);
static_assert(forksafe::pool_task<decltype([](int a, double b) { return a * b; }), int, double>);
static_assert(!forksafe::pool_task<decltype([] { return std::string("no"); })>);
static_assert(!forksafe::pool_task<decltype([](std::string s) { return s.size(); }), std::string>);
static_assert(!forksafe::pool_task<decltype([](const std::vector<int>& v) { return v.size(); }), std::vector<int>>);
static_assert(!forksafe::pool_task<decltype([] { return std::future<int>(); })>);
// A lambda that captures a std::string is not trivially_serializable.
inline const std::string captured = "x";
static_assert(!forksafe::pool_task<decltype([s = captured] { return s.size(); })>);

// ---- values -----------------------------------------------------------------

TEST_CASE("process_pool: returns values from function pointers and lambdas with value captures") {
  process_pool pool(2);
  CHECK(pool.size() == 2);
  CHECK(pool.submit(square, 7).get() == 49);
  int base = 100; // not const: a constant would not need capturing
  CHECK(pool.submit([base](int x) { return base + x; }, 5).get() == 105);
  auto r = pool.submit([] { return std::pair<int, double>(3, 1.5); });
  CHECK(r.get() == std::pair<int, double>(3, 1.5));
  bool ran = false;
  pool.submit([] {}).get(); // void
  ran = true;
  CHECK(ran);
}

TEST_CASE("process_pool: runs in worker processes, not in the caller") {
  process_pool pool(1);
  const pid_t worker = pool.submit([] { return ::getpid(); }).get();
  CHECK(worker != ::getpid());
  CHECK(pool.submit([] { return ::getpid(); }).get() == worker); // the worker is reused
}

TEST_CASE("process_pool: the seed's shape, a process task that uses an inner thread pool and returns a plain sum") {
  process_pool pool(2);
  auto outer = [](int n) {
    std::vector<std::future<int>> inner; // futures stay inside the worker
    for (int i = 0; i < n; ++i) inner.push_back(std::async(std::launch::async, [i] { return i * i; }));
    int sum = 0;
    for (auto& f : inner) sum += f.get();
    return sum; // only plain data crosses back
  };
  std::vector<forksafe::process_result<int>> results;
  for (int n = 1; n <= 4; ++n) results.push_back(pool.submit(outer, n));
  CHECK(results[0].get() == 0);
  CHECK(results[1].get() == 1);
  CHECK(results[2].get() == 5);
  CHECK(results[3].get() == 14);
}

TEST_CASE("process_pool: results of 1 MiB arrive whole") {
  process_pool pool(2);
  using big = std::array<unsigned char, 1 << 20>;
  auto r = pool.submit([](int seed) {
    big b;
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<unsigned char>((i * 31 + static_cast<std::size_t>(seed)) & 0xff);
    return b;
  }, 7);
  const big& b = r.get();
  bool whole = true;
  for (std::size_t i = 0; i < b.size(); ++i) whole = whole && b[i] == static_cast<unsigned char>((i * 31 + 7) & 0xff);
  CHECK(whole);
  CHECK(pool.submit(square, 3).get() == 9); // and small ones after it
}

// ---- every way a task can end -------------------------------------------------

TEST_CASE("process_pool: a task that kills its worker fails alone; the worker is replaced; others complete") {
  process_pool pool(2);
  std::vector<forksafe::process_result<int>> before, after;
  for (int i = 0; i < 20; ++i) before.push_back(pool.submit(square, i));
  auto segv = pool.submit([] { return forksafe_test::load_through_null(); });
  auto aborts = pool.submit([]() -> int { std::abort(); });
  auto exits = pool.submit([]() -> int { ::_exit(3); });
  for (int i = 0; i < 20; ++i) after.push_back(pool.submit(square, i));

  for (int i = 0; i < 20; ++i) {
    CHECK(before[static_cast<std::size_t>(i)].get() == i * i);
    CHECK(after[static_cast<std::size_t>(i)].get() == i * i);
  }
  try {
    (void)segv.get();
    FAIL("no error");
  } catch (const child_error& e) {
    CHECK(e.signaled());
    CHECK(e.signal_name() == "SIGSEGV");
  }
  try {
    (void)aborts.get();
    FAIL("no error");
  } catch (const child_error& e) {
    CHECK(e.signal_name() == "SIGABRT");
  }
  try {
    (void)exits.get();
    FAIL("no error");
  } catch (const child_error& e) {
    CHECK(e.exited());
    CHECK(e.exit_code() == 3);
  }
  CHECK(pool.submit(square, 12).get() == 144);
}

TEST_CASE("process_pool: a task that throws arrives with its type and message; its worker lives") {
  process_pool pool(1);
  const pid_t worker = pool.submit([] { return ::getpid(); }).get();
  try {
    (void)pool.submit([]() -> int { throw std::out_of_range("index 9"); }).get();
    FAIL("no error");
  } catch (const child_error& e) {
    CHECK(e.threw());
    CHECK(e.exception_type() == "std::out_of_range");
    CHECK(e.exception_what() == "index 9");
  }
  CHECK(pool.submit([] { return ::getpid(); }).get() == worker);
}

TEST_CASE("process_pool: a task over its timeout is killed with its worker and fails as timed out; the pool goes on") {
  // One timeout for both tasks: it must fire for the one that never ends and
  // never for `next`, on a fresh worker on a loaded machine: generous, scaled.
  process_pool pool(1, {.task_timeout = forksafe_test::scaled(1s)});
  auto slow = pool.submit([] {
    ::pause();
    return 1;
  });
  auto next = pool.submit(square, 4);
  try {
    (void)slow.get();
    FAIL("no error");
  } catch (const child_error& e) {
    CHECK(e.timed_out());
  }
  CHECK(next.get() == 16);
}

TEST_CASE("process_pool: max_tasks_per_worker replaces a worker after that many tasks") {
  process_pool pool(1, {.max_tasks_per_worker = 2});
  std::vector<pid_t> pids;
  for (int i = 0; i < 6; ++i) pids.push_back(pool.submit([] { return ::getpid(); }).get());
  CHECK(pids[0] == pids[1]);
  CHECK(pids[1] != pids[2]);
  CHECK(pids[2] == pids[3]);
  CHECK(pids[3] != pids[4]);
}

TEST_CASE("process_pool: kill() and native_handle() on a pool task") {
  process_pool pool(1);
  auto r = pool.submit([] {
    ::pause();
    return 0;
  });
  while (r.pid() < 0) std::this_thread::sleep_for(1ms); // dispatched
  r.kill(SIGTERM);
  pollfd p{r.native_handle(), POLLIN, 0};
  CHECK(::poll(&p, 1, static_cast<int>(forksafe_test::scaled(5s).count())) == 1);
  try {
    (void)r.get();
    FAIL("no error");
  } catch (const child_error& e) {
    CHECK(e.signal_name() == "SIGTERM");
  }
}

// ---- load, shutdown, leaks ----------------------------------------------------

TEST_CASE("process_pool: 8 threads submit 500 tasks each onto 2 workers; every value right") {
  process_pool pool(2);
  std::atomic<int> right{0}, wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::vector<forksafe::process_result<int>> mine;
      for (int i = 0; i < 500; ++i) mine.push_back(pool.submit([](int a, int b) { return a * 1000 + b; }, t, i));
      for (int i = 0; i < 500; ++i) {
        (mine[static_cast<std::size_t>(i)].get() == t * 1000 + i ? right : wrong).fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(right == 4000);
  CHECK(wrong == 0);
}

TEST_CASE("process_pool: shutdown finishes queued tasks; a stuck task is killed at the deadline, never a hang") {
  std::vector<forksafe::process_result<int>> done;
  forksafe::process_result<int> stuck;
  {
    // The deadline must pass the ten queued tasks on a loaded machine and
    // still end the stuck one: generous, scaled.
    process_pool pool(1, {.shutdown_deadline = forksafe_test::scaled(1s)});
    for (int i = 0; i < 10; ++i) done.push_back(pool.submit(square, i));
    stuck = pool.submit([] {
      ::pause();
      return 0;
    });
    pool.shutdown();
    CHECK_THROWS_AS((void)pool.submit(square, 1), std::logic_error);
  }
  for (int i = 0; i < 10; ++i) CHECK(done[static_cast<std::size_t>(i)].get() == i * i);
  try {
    (void)stuck.get();
    FAIL("no error");
  } catch (const child_error& e) {
    CHECK(e.timed_out());
  }
}

TEST_CASE("process_pool: destroying the pool while another thread waits in get() ends the wait, never a crash") {
  int ended = 0;
  for (int i = 0; i < 200; ++i) {
    std::optional<process_pool> pool(std::in_place, 1, forksafe::pool_options{.shutdown_deadline = 1ms});
    auto r = pool->submit([] {
      std::this_thread::sleep_for(10s);
      return 0;
    });
    std::atomic<bool> timed_out{false};
    std::atomic<pid_t> waiter_id{0};
    std::thread waiter([&] {
      waiter_id = forksafe_test::current_thread_id();
      try {
        (void)r.get();
      } catch (const child_error& e) {
        timed_out = e.timed_out();
      }
    });
    while (waiter_id.load() == 0) std::this_thread::yield();
    // The waiter is in get(), asleep on the task's slot: seen, not assumed
    // from a 1 ms sleep.
    (void)forksafe_test::wait_until_blocked(waiter_id.load());
    pool.reset(); // kills the busy worker at the deadline, ends the workers
    waiter.join();
    ended += timed_out ? 1 : 0;
  }
  CHECK(ended == 200);
}

TEST_CASE("process_pool: two threads shutting down one pool at once both return; nothing is joined twice") {
  for (int i = 0; i < 20; ++i) {
    process_pool pool(1);
    auto r = pool.submit(square, i);
    std::thread other([&] { pool.shutdown(); });
    pool.shutdown();
    other.join();
    CHECK(r.get() == i * i);
  }
}

TEST_CASE("process_pool: a forked child that uses or destroys its copy of the pool leaves the owner's pool alone") {
  // The task runs until the gate opens, after the forked child is done: it is
  // known to run while the child acts (a 200 ms sleep assumed the child took
  // less). Made before the pool: its worker inherits it.
  const forksafe_test::gate g;
  std::optional<process_pool> pool(std::in_place, 1);
  auto running = pool->submit([fd = g.fds[0]] {
    char c;
    while (::read(fd, &c, 1) < 0 && errno == EINTR) {
    }
    return 5;
  });
  const auto child = forksafe_test::run_in_child([&] {
    int code = 0;
    try {
      (void)pool->submit(square, 2);
      code = 1; // submitting from a forked process must be refused
    } catch (const std::logic_error&) {
    }
    try {
      (void)running.get(); // would take the owner's answer out of the shared slot
      code = 2;
    } catch (const std::logic_error&) {
    }
    running.kill(SIGKILL); // must not reach the owner's worker
    pool.reset(); // must neither join the supervisor (not here), nor stop or kill the owner's workers
    return code;
  });
  CHECK(child.exited_with(0));
  CHECK_FALSE(running.ready()); // the child's kill did not reach the worker
  g.open();
  CHECK(running.get() == 5);
  // The same worker runs the next task: nothing told it to exit.
  const pid_t worker = running.pid();
  CHECK(pool->submit([] { return ::getpid(); }).get() == worker);
  pool.reset();
  CHECK(forksafe_test::count_zombie_children() == 0);
}

TEST_CASE("process_pool: without pidfds (pidfd_open refused), crashes, timeouts and shutdown still end") {
  // Without a pidfd a worker's end wakes nothing: the supervisor must look.
  const auto outcome = forksafe_test::run_in_child(
      [] {
        if (!forksafe_test::refuse_pidfd_open()) return 20;
        if (forksafe::detail::open_pidfd(::getpid()) >= 0) return 21; // control: the filter binds
        {
          process_pool pool(1); // no task timeout: nothing but the worker's end can end the task
          if (pool.submit(square, 6).get() != 36) return 22;
          try {
            (void)pool.submit([] { return forksafe_test::load_through_null(); }).get();
            return 23;
          } catch (const child_error& e) {
            if (e.signal_name() != "SIGSEGV") return 24;
          }
          if (pool.submit(square, 7).get() != 49) return 25;
        }
        // Fires for the task that never ends, must not for the next one on a
        // fresh worker of a loaded machine: generous, scaled.
        process_pool pool(1, {.task_timeout = forksafe_test::scaled(1s)});
        try {
          (void)pool.submit([] {
                      ::pause();
                      return 0;
                    }).get();
          return 26;
        } catch (const child_error& e) {
          if (!e.timed_out()) return 27;
        }
        return pool.submit(square, 8).get() == 64 ? 0 : 28;
      },
      20s);
  CHECK(outcome.exited_with(0));
}

TEST_CASE("process_pool: 10,000 tasks leave the memory they found") {
  process_pool pool(2);
  int wrong = 0;
  long rss_warm = 0;
  for (int i = 0; i < 11'000; ++i) {
    if (i == 1'000) rss_warm = forksafe_test::resident_kib(); // after first-use allocations
    wrong += pool.submit(square, i % 1000).get() == (i % 1000) * (i % 1000) ? 0 : 1;
  }
  const long rss_growth = forksafe_test::resident_kib() - rss_warm;
  MESSAGE("10,000 pool tasks after 1,000 to warm up: resident set grew by ", rss_growth, " KiB");
  CHECK(wrong == 0);
  if (!FORKSAFE_TEST_ASAN && !FORKSAFE_TEST_TSAN) CHECK(rss_growth < 512); // sanitizers keep memory of their own (see test_process_result.cpp)
}

TEST_CASE("test support: the resident-set measure sees a leak of 128 bytes per operation (it can fail)") {
  std::vector<std::unique_ptr<char[]>> leaked;
  leaked.reserve(11'000);
  long rss_warm = 0;
  for (int i = 0; i < 11'000; ++i) {
    if (i == 1'000) rss_warm = forksafe_test::resident_kib();
    leaked.emplace_back(new char[128]);
    std::memset(leaked.back().get(), i, 128); // touched, so resident
  }
  const long rss_growth = forksafe_test::resident_kib() - rss_warm;
  CHECK(rss_growth >= 512);
}

TEST_CASE("process_pool: 100 pools created and destroyed leave no zombie, descriptor or mapping") {
  { process_pool warm(2); } // first-use allocations
  const int fds = forksafe_test::count_open_fds();
  const int shared_maps = forksafe_test::count_shared_maps();
  for (int i = 0; i < 100; ++i) {
    process_pool pool(2);
    CHECK(forksafe_test::count_shared_maps() == shared_maps + 1); // the pool's slots: the counter sees them
    using big = std::array<unsigned char, 4096>;   // and a large result's memfd mapping
    auto r = pool.submit([] { return big{}; });
    (void)r.get();
  }
  CHECK(forksafe_test::count_zombie_children() == 0);
  CHECK(forksafe_test::count_open_fds() == fds);
  CHECK(forksafe_test::count_shared_maps() == shared_maps);
}

#ifdef REGISTRY_LIB_B_PATH
TEST_CASE("process_pool: code dlopen'ed after the pool started is refused, not crashed on") {
  process_pool pool(1);
  void* lib = ::dlopen(REGISTRY_LIB_B_PATH, RTLD_NOW | RTLD_LOCAL);
  REQUIRE(lib != nullptr);
  auto twice = reinterpret_cast<int (*)(int)>(::dlsym(lib, "registry_lib_b_twice"));
  REQUIRE(static_cast<bool>(twice));
  CHECK_THROWS_AS((void)pool.submit(twice, 21), std::invalid_argument);
  CHECK(pool.submit(square, 5).get() == 25);
  ::dlclose(lib);
}
#endif

TEST_CASE("process_pool: a task still queued when shutdown's deadline passes is cancelled: it never ran") {
  forksafe::process_result<int> running, queued;
  {
    process_pool pool(1, {.shutdown_deadline = 200ms});
    running = pool.submit([] {
      std::this_thread::sleep_for(std::chrono::hours(1));
      return 1;
    });
    queued = pool.submit([] { return 2; });
    // The first is in the worker (it has the worker's pid) before shutdown.
    while (running.pid() == -1) std::this_thread::yield();
  } // shutdown: kills the running task at the deadline, cancels the queued one
  try {
    (void)queued.get();
    FAIL("the queued task ran");
  } catch (const child_error& e) {
    CHECK(e.cancelled());
    CHECK_FALSE(e.lost());
    CHECK(e.pid() == -1);
    CHECK(std::string(e.what()) == "the task never ran: it was still queued when the pool shut down");
  }
  try {
    (void)running.get();
    FAIL("the running task returned");
  } catch (const child_error& e) {
    CHECK(e.timed_out());
  }
}
