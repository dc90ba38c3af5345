// SPDX-License-Identifier: MIT
// process_pool: values back from pre-forked workers; every way a task can
// end reaches its caller alone while the pool goes on; nothing leaks. Faults
// too: every signal sent to a worker mid-task, workers killed while idle, a
// task that takes its worker's descriptors or forks and leaves, the pool
// under rlimits and foreign reapers. Each must end in the documented
// outcome and leave no zombie or descriptor behind.

#include <forksafe/process_pool.hpp>

#include "support/expect_error.hpp"
#include "support/fork_harness.hpp"
#include "support/signal_outcomes.hpp"

#include <array>     // large results
#include <atomic>    // counters
#include <cerrno>    // errno: a task's read of the gate
#include <chrono>    // timeouts, elapsed times
#include <csignal>   // signals, sigaction
#include <cstdlib>   // std::abort, std::atoi
#include <cstring>   // std::memset: the leak control
#include <fstream>   // /proc/self/task/*/children
#include <future>    // std::async: a task's inner thread pool
#include <memory>    // the leak control
#include <optional>  // a pool destroyed on purpose
#include <stdexcept> // std::logic_error
#include <string>    // rejected results
#include <thread>    // submitting threads
#include <vector>    // handles

#include <dirent.h>      // /proc/self/task/*/children, /proc/self/fd
#include <dlfcn.h>       // dlopen: code loaded after the pool started
#include <fcntl.h>       // open: filler descriptors
#include <poll.h>        // native_handle; waiting for a task to start
#include <sys/eventfd.h> // eventfd: a task's own, in its worker's numbers
#include <sys/wait.h>    // waitpid: a foreign reaper
#include <unistd.h>      // _exit, getpid, close, pipe, read, write

using namespace std::chrono_literals;
using forksafe::child_error;
using forksafe::process_pool;
using forksafe_test::check_outcome;
using forksafe_test::close_all_from;
using forksafe_test::count_open_fds;
using forksafe_test::count_zombie_children;
using forksafe_test::default_dispositions;
using forksafe_test::elapsed_seconds;
using forksafe_test::error_of;
using forksafe_test::every_signal;
using forksafe_test::expected_name;
using forksafe_test::scaled_poll_ms;
using forksafe_test::scaled_seconds;
using forksafe_test::scoped_signal;

namespace {

using clock_type = std::chrono::steady_clock;

int square(int x) { return x * x; }

// Pids of this process's children (from /proc/self/task/*/children).
std::vector<pid_t> child_pids() {
  std::vector<pid_t> pids;
  DIR* tasks = ::opendir("/proc/self/task");
  if (tasks == nullptr) return pids;
  while (const dirent* t = ::readdir(tasks)) {
    if (t->d_name[0] == '.') continue;
    std::ifstream children(std::string("/proc/self/task/") + t->d_name + "/children");
    for (long pid; children >> pid;) pids.push_back(static_cast<pid_t>(pid));
  }
  ::closedir(tasks);
  return pids;
}

} // namespace

// ---- what may be submitted, at compile time -------------------------------

static_assert(forksafe::pool_task<int (*)(int), int>);
static_assert(forksafe::pool_task<decltype([](int a, double b) { return a * b; }), int, double>);
static_assert(forksafe::pool_task<decltype([] { return std::string("yes"); })>);
static_assert(forksafe::pool_task<decltype([](std::string s) { return s.size(); }), std::string>);
static_assert(forksafe::pool_task<decltype([](const std::vector<int>& v) { return v.size(); }), std::vector<int>>);
static_assert(!forksafe::pool_task<decltype([] { return std::future<int>(); })>);
static_assert(!forksafe::pool_task<decltype([](int) { return 0; }), std::vector<std::future<int>>>);
// A lambda's captures cannot be listed: one that captures a std::string does
// not cross (pass the string as an argument instead).
inline const std::string captured = "x";
static_assert(!forksafe::pool_task<decltype([s = captured] { return s.size(); })>);
static_assert(forksafe::pool_task<decltype([](const std::string& s) { return s.size(); }), std::string>);

// ---- values -----------------------------------------------------------------

TEST_CASE("process_pool: returns values from function pointers and lambdas with value captures" *
          doctest::test_suite("memcheck")) {
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

TEST_CASE("process_pool: a process task that uses an inner thread pool and returns a plain sum") {
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

TEST_CASE("process_pool: results of 1 MiB arrive whole" * doctest::test_suite("memcheck")) {
  process_pool pool(2);
  using big = std::array<unsigned char, 1 << 20>;
  auto r = pool.submit(
      [](int seed) {
        big b;
        for (std::size_t i = 0; i < b.size(); ++i)
          b[i] = static_cast<unsigned char>((i * 31 + static_cast<std::size_t>(seed)) & 0xff);
        return b;
      },
      7);
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
  const auto e_segv = error_of(segv);
  REQUIRE(e_segv);
  CHECK(e_segv->signaled());
  CHECK(e_segv->signal_name() == "SIGSEGV");
  const auto e_abort = error_of(aborts);
  REQUIRE(e_abort);
  CHECK(e_abort->signal_name() == "SIGABRT");
  const auto e_exit = error_of(exits);
  REQUIRE(e_exit);
  CHECK(e_exit->exited());
  CHECK(e_exit->exit_code() == 3);
  CHECK(pool.submit(square, 12).get() == 144);
}

TEST_CASE("process_pool: a task that throws arrives with its type and message; its worker lives" *
          doctest::test_suite("memcheck")) {
  process_pool pool(1);
  const pid_t worker = pool.submit([] { return ::getpid(); }).get();
  const auto e = error_of(pool.submit([]() -> int { throw std::out_of_range("index 9"); }));
  REQUIRE(e);
  CHECK(e->threw());
  CHECK(e->exception_type() == "std::out_of_range");
  CHECK(e->exception_what() == "index 9");
  CHECK(pool.submit([] { return ::getpid(); }).get() == worker);
}

TEST_CASE("process_pool: a task over its timeout is killed with its worker and fails as timed out; the pool goes on" *
          doctest::test_suite("memcheck")) {
  // One timeout for both tasks: it must fire for the one that never ends and
  // never for `next`, on a fresh worker on a loaded machine: generous, scaled.
  process_pool pool(1, {.task_timeout = forksafe_test::scaled(1s)});
  auto slow = pool.submit([] {
    ::pause();
    return 1;
  });
  auto next = pool.submit(square, 4);
  const auto e = error_of(slow);
  REQUIRE(e);
  CHECK(e->timed_out());
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
  CHECK(::poll(&p, 1, scaled_poll_ms(5s)) == 1);
  const auto e = error_of(r);
  REQUIRE(e);
  CHECK(e->signal_name() == "SIGTERM");
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

TEST_CASE("process_pool: shutdown finishes queued tasks; a stuck task is killed at the deadline, never a hang" *
          doctest::test_suite("memcheck")) {
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
  const auto e = error_of(stuck);
  REQUIRE(e);
  CHECK(e->timed_out());
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
      const auto e = error_of(r);
      timed_out = e && e->timed_out();
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

TEST_CASE("process_pool: a forked child that uses or destroys its copy of the pool leaves the owner's pool alone" *
          doctest::test_suite("memcheck")) {
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
    pool.reset();          // must neither join the supervisor (not here), nor stop or kill the owner's workers
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
          const auto e = error_of(pool.submit([] { return forksafe_test::load_through_null(); }));
          if (!e) return 23;
          if (e->signal_name() != "SIGSEGV") return 24;
          if (pool.submit(square, 7).get() != 49) return 25;
        }
        // Fires for the task that never ends, must not for the next one on a
        // fresh worker of a loaded machine: generous, scaled.
        process_pool pool(1, {.task_timeout = forksafe_test::scaled(1s)});
        const auto e = error_of(pool.submit([] {
          ::pause();
          return 0;
        }));
        if (!e) return 26;
        if (!e->timed_out()) return 27;
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
  if (!FORKSAFE_TEST_ASAN && !FORKSAFE_TEST_TSAN)
    CHECK(rss_growth < 512); // sanitizers keep memory of their own (see test_fork_call.cpp)
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
    using big = std::array<unsigned char, 4096>;                  // and a large result's memfd mapping
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
  const auto e_queued = error_of(queued);
  REQUIRE_MESSAGE(e_queued, "the queued task ran");
  CHECK(e_queued->cancelled());
  CHECK_FALSE(e_queued->lost());
  CHECK(e_queued->pid() == -1);
  CHECK(std::string(e_queued->what()) == "the task never ran: it was still queued when the pool shut down");
  const auto e_running = error_of(running);
  REQUIRE_MESSAGE(e_running, "the running task returned");
  CHECK(e_running->timed_out());
}

// ---- faults: signals to workers, descriptors taken from them, grandchildren --
// The figures printed (MESSAGE) are what the README's "What forksafe
// survives" reports.

TEST_CASE("process_pool: every signal sent to a worker mid-task fails that task alone, named; the pool goes on") {
  const default_dispositions dfl;
  const int fds_before = count_open_fds();
  int started[2];
  REQUIRE(::pipe(started) == 0); // before the pool: every worker, and every replacement, inherits it
  std::vector<std::string> wrong;
  int sent = 0;
  {
    // The task returns only once this gate opens, after the signal was sent:
    // the signal is known to find it running (a 150 ms sleep assumed this
    // thread got from the task's start to kill() sooner). Made before the
    // pool, like `started`; closed after it, before the descriptors are counted.
    const forksafe_test::gate go;
    // Ends stopped workers (it must fire); room for a loaded machine (it
    // must not fire for the others): generous, scaled.
    process_pool pool(1, {.task_timeout = forksafe_test::scaled(1s)});
    const int tell = started[1];
    const int wait_on = go.fds[0];
    for (int sig : every_signal()) {
      auto r = pool.submit(
          [](int fd, int gate_fd) {
            (void)!::write(fd, "s", 1);
            char c;
            while (::read(gate_fd, &c, 1) < 0 && errno == EINTR) {
            }
            return 7;
          },
          tell, wait_on);
      pollfd p{started[0], POLLIN, 0};
      char c;
      if (::poll(&p, 1, scaled_poll_ms(5s)) != 1 || ::read(started[0], &c, 1) != 1) {
        wrong.push_back(expected_name(sig) + ": the task never started");
        continue;
      }
      r.kill(sig); // the worker runs this task now
      go.open();   // an ignored signal lets the value through; a stopped worker cannot read
      ++sent;
      // Workers share the test's process group, which may be orphaned.
      if (auto what = check_outcome(
              sig, [&] { return r.get(); }, true);
          !what.empty())
        wrong.push_back(what);
      // A worker that died or stopped left its byte: take it, so that the
      // next task waits for its own. No task runs now (get() returned).
      pollfd left{go.fds[0], POLLIN, 0};
      while (::poll(&left, 1, 0) == 1 && ::read(go.fds[0], &c, 1) == 1) {
      }
    }
    int right = 0;
    for (int i = 0; i < 20; ++i) right += pool.submit([](int x) { return x * 2; }, i).get() == i * 2 ? 1 : 0;
    CHECK(right == 20);
  }
  ::close(started[0]);
  ::close(started[1]);
  for (const auto& w : wrong) FAIL_CHECK(w);
  CHECK(wrong.empty());
  CHECK(count_open_fds() == fds_before);
  CHECK(count_zombie_children() == 0);
  MESSAGE("signals to pool workers mid-task: ", sent, " sent, ", sent - static_cast<int>(wrong.size()),
          " tasks ended as the signal's default action says; 20 tasks after them all right");
}

TEST_CASE("process_pool: workers killed while idle lose no task; later tasks run on their replacements" *
          doctest::test_suite("memcheck")) {
  const default_dispositions dfl;
  process_pool pool(2);
  REQUIRE(pool.submit([] { return 1; }).get() == 1); // the workers are up
  int killed = 0;
  for (int round = 0; round < 20; ++round) {
    std::vector<pid_t> workers = child_pids();
    for (pid_t worker : workers) killed += ::kill(worker, round % 2 == 0 ? SIGTERM : SIGKILL) == 0 ? 1 : 0;
    // Dead before anything is submitted (a worker still on a CPU could take a
    // task before the signal lands: then its death fails that task, rightly).
    for (pid_t worker : workers) {
      while (!forksafe_test::process_is_dead(worker)) std::this_thread::yield();
    }
    // Submitted at once: some go to a worker that is dead but not yet buried.
    std::vector<forksafe::process_result<int>> results;
    for (int i = 0; i < 4; ++i) results.push_back(pool.submit([](int x) { return x + 1; }, i));
    int right = 0;
    std::string failures;
    for (int i = 0; i < 4; ++i) {
      try {
        right += results[static_cast<std::size_t>(i)].get() == i + 1 ? 1 : 0;
      } catch (const child_error& e) {
        failures += std::string(e.what()) + "; ";
      }
    }
    INFO("round ", round, ": ", failures);
    CHECK(right == 4);
  }
  MESSAGE("idle pool workers killed: ", killed, " (SIGTERM and SIGKILL, 20 rounds), 80 tasks submitted right after");
}

// Not in the memcheck suite: it closes every descriptor, memcheck's own among them.
TEST_CASE("process_pool: a task that closes all its worker's descriptors still delivers; the pool goes on") {
  const int fds_before = count_open_fds();
  {
    process_pool pool(1);
    CHECK(pool.submit([] {
                close_all_from(0);
                return 5;
              })
              .get() == 5);
    // The next tasks, small and large (a large result needs the worker's
    // socket), run right whether on that worker or on a replacement.
    for (int i = 0; i < 5; ++i) {
      CHECK(pool.submit([](int x) { return x * 3; }, i).get() == i * 3);
      const auto big = pool.submit(
                               [](int x) {
                                 std::array<int, 4096> a{};
                                 a.back() = x;
                                 return a;
                               },
                               i)
                           .get();
      CHECK(big.back() == i);
    }
  }
  CHECK(count_open_fds() == fds_before);
  CHECK(count_zombie_children() == 0);
}

TEST_CASE(
    "process_pool: a task that puts eventfds where its worker's descriptors were: the worker retires, never writes") {
  // Every eventfd shares one inode: only kcmp tells the worker's own from
  // the task's. A worker that wrote into the task's eventfd would wake the
  // task's event loop and leave its own result uncollected.
  process_pool pool(1);
  const pid_t first = pool.submit([] { return ::getpid(); }).get();
  // Nobody waits in get() while it ends, so the worker tells the supervisor
  // through its event descriptor: the write it must not make.
  auto replacing = pool.submit([] {
    // Every eventfd below 64 (the worker's own, among those it
    // inherited; its private copies sit at 64 and up) is replaced
    // by a new one at the same number; the socket is left alone.
    DIR* d = ::opendir("/proc/self/fd");
    std::vector<int> eventfds;
    while (const dirent* e = d != nullptr ? ::readdir(d) : nullptr) {
      char target[64] = {};
      const std::string link = std::string("/proc/self/fd/") + e->d_name;
      if (::readlink(link.c_str(), target, sizeof target - 1) > 0 && std::string(target) == "anon_inode:[eventfd]" &&
          std::atoi(e->d_name) < 64) {
        eventfds.push_back(std::atoi(e->d_name));
      }
    }
    if (d != nullptr) ::closedir(d);
    for (int fd : eventfds) {
      const int fresh = ::eventfd(0, EFD_CLOEXEC);
      ::dup2(fresh, fd);
      ::close(fresh);
    }
    return static_cast<int>(eventfds.size());
  });
  // Until the outcome is known without anyone waiting: wait_for(0s) only
  // looks, it never waits on the slot, so the task ends with nobody in get()
  // on any machine (a 200 ms sleep assumed it ended in that time). The limit
  // is a fallback for a worker that wrote instead of retiring: get() below
  // then collects the answer itself and the replacement check fails.
  const auto until = clock_type::now() + forksafe_test::scaled(10s);
  while (replacing.wait_for(0s) != std::future_status::ready && clock_type::now() < until) {
    std::this_thread::sleep_for(1ms);
  }
  CHECK(replacing.get() > 0);
  const pid_t after = pool.submit([] { return ::getpid(); }).get();
  CHECK(after != first); // replaced: it did not trust descriptors that are no longer its own
  CHECK(pool.submit([](int x) { return x * 4; }, 3).get() == 12);
}

TEST_CASE("process_pool: a task that forks a grandchild and returns delays neither its result nor shutdown" *
          doctest::test_suite("memcheck")) {
  const int fds_before = count_open_fds();
  pid_t grandchild = -1;
  // The grandchild holds the worker's descriptors for 3 s and shutdown may
  // take 5 s; all done in under 2 s means neither waited for it. The three
  // scaled alike, so that stays true of a slow build and says nothing of
  // the machine's speed.
  const auto holds_for = forksafe_test::scaled(3s);
  const auto start = clock_type::now();
  {
    process_pool pool(1, {.shutdown_deadline = forksafe_test::scaled(5s)});
    grandchild = pool.submit(
                         [](std::chrono::milliseconds hold) {
                           const pid_t g = ::fork();
                           if (g == 0) {
                             std::this_thread::sleep_for(hold); // holds every descriptor the worker had
                             return pid_t{0};                   // back into the pool's code: must write nothing
                           }
                           return g;
                         },
                         holds_for)
                     .get();
    REQUIRE(grandchild > 0);
    for (int i = 0; i < 5; ++i) CHECK(pool.submit([](int x) { return x - 1; }, i).get() == i - 1);
  }
  CHECK(elapsed_seconds(start) < scaled_seconds(2.0));
  CHECK(count_open_fds() == fds_before);
  CHECK(count_zombie_children() == 0);
  ::kill(grandchild, SIGKILL); // the worker's child, reparented: not ours to reap
}

// ---- under rlimits and foreign reapers (fork_call's are in test_fork_call.cpp)

TEST_CASE("process_pool: a pool that cannot fork (RLIMIT_NPROC) throws system_error(EAGAIN) and leaks nothing") {
  const auto outcome = forksafe_test::run_in_child([] {
    if (const int rc = forksafe_test::allow_no_more_processes()) return rc;
    const int fds = count_open_fds();
    const int maps = forksafe_test::count_shared_maps();
    if (const int rc = forksafe_test::expect_system_error([] { process_pool pool(2); }, EAGAIN)) return 30 + rc;
    if (count_open_fds() != fds) return 40;
    if (forksafe_test::count_shared_maps() != maps) return 41;
    return count_zombie_children() == 0 ? 0 : 42;
  });
  CHECK(outcome == forksafe_test::outcome{forksafe_test::kind::exited, 0});
}

TEST_CASE("process_pool: with descriptors exhausted (RLIMIT_NOFILE) the pool and a large result throw EMFILE, leaking "
          "nothing") {
  const auto outcome = forksafe_test::run_in_child([] {
    const int fds = count_open_fds();
    std::vector<int> fillers = forksafe_test::fill_descriptor_table();
    if (fillers.size() < 8) return 20;
    int rc = forksafe_test::expect_system_error([] { process_pool pool(1); }, EMFILE);
    if (rc != 0) rc += 30;
    for (int i = 0; i < 8 && rc == 0; ++i) { // room for a pool of one: eventfds, socket, pidfd
      ::close(fillers.back());
      fillers.pop_back();
    }
    if (rc == 0) {
      process_pool pool(1);
      // Take the slots left; a large result's memfd then cannot be made.
      for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) fillers.push_back(fd);
      rc = forksafe_test::expect_system_error([&] { (void)pool.submit([] { return std::array<int, 4096>{}; }); },
                                              EMFILE);
      if (rc != 0) rc += 40;
      if (rc == 0 && pool.submit([](int x) { return x + 1; }, 1).get() != 2) rc = 50; // small results need none
    }
    for (int fd : fillers) ::close(fd);
    if (rc != 0) return rc;
    if (count_open_fds() != fds) return 60;
    return count_zombie_children() == 0 ? 0 : 61;
  });
  CHECK(outcome == forksafe_test::outcome{forksafe_test::kind::exited, 0});
}

TEST_CASE("process_pool: the pool with SIGCHLD ignored, and with a foreign handler reaping every child, goes on") {
  for (const bool ignore : {true, false}) {
    INFO((ignore ? "SIGCHLD ignored" : "a SIGCHLD handler that calls waitpid(-1) until none is left"));
    struct sigaction action {};
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    action.sa_handler = ignore ? SIG_IGN : +[](int) {
      const int saved = errno;
      while (::waitpid(-1, nullptr, WNOHANG) > 0) {
      }
      errno = saved;
    };
    const scoped_signal restore(SIGCHLD, action);
    process_pool pool(1);
    CHECK(pool.submit([](int x) { return x * 5; }, 3).get() == 15);
    const auto e = error_of(pool.submit([] { return forksafe_test::load_through_null(); }));
    REQUIRE_MESSAGE(e, "a value from a task that crashed");
    // Reaped by someone else: how it ended is unknown (lost), unless the
    // pool's waitid won the race (then: SIGSEGV). Never a hang.
    CHECK((e->lost() || e->signal_name() == "SIGSEGV"));
    int right = 0;
    for (int i = 0; i < 20; ++i) right += pool.submit([](int x) { return x * 5; }, i).get() == i * 5 ? 1 : 0;
    CHECK(right == 20);
  }
  CHECK(count_zombie_children() == 0);
}
