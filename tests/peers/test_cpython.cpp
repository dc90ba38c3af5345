// SPDX-License-Identifier: MIT
// CPython's fork tests, ported to forksafe:
//   Lib/test/test_posix.py    test_register_at_fork (os.register_at_fork)
//   Lib/test/test_threading.py, test_os.py   the fork tests
//   Lib/test/test_fork1.py (and fork_wait.py)
//   Lib/test/test_logging.py  test_post_fork_child_no_deadlock
//   Lib/test/test_concurrent_futures/  the process pool's crash, limit,
//                             shutdown and deadlock tests
//
// os.register_at_fork becomes atfork_registry::instance().add(); threading's
// and logging's locks become forksafe's mutexes; a child run for its value
// becomes fork_call; ProcessPoolExecutor becomes process_pool. Where
// forksafe's contract differs from Python's (a crashed worker does not break
// the pool; a result that is not plain data does not compile), the test
// checks forksafe's and says so.

#include <forksafe/atfork_registry.hpp>
#include <forksafe/fork_safe_mutex.hpp>
#include <forksafe/process_pool.hpp>
#include <forksafe/process_result.hpp>

#include "peer_support.hpp"

#include <algorithm> // std::sort
#include <array>     // large results
#include <atomic>    // counters, flags
#include <cerrno>    // EPERM
#include <csignal>   // SIGTERM
#include <cstdlib>   // std::atexit, std::exit
#include <cstring>   // std::memset
#include <future>    // std::future: an argument that cannot cross
#include <mutex>     // std::mutex: the negative controls; std::lock_guard
#include <stdexcept> // std::runtime_error, std::logic_error
#include <string>    // std::string: what must not cross
#include <thread>    // threads that hold locks or fork
#include <vector>    // threads, handles

#include <dirent.h>    // /proc/self/task
#include <fcntl.h>     // O_NONBLOCK, open
#include <poll.h>      // a task announces it runs
#include <pthread.h>   // the error-checking mutex of the negative control
#include <sys/prctl.h> // PR_SET_PDEATHSIG: the naive pool's workers
#include <sys/wait.h>  // waitpid
#include <unistd.h>    // _exit, getpid, pipe

using namespace std::chrono_literals;
using forksafe::atfork_registry;
using forksafe::child_error;
using forksafe::fork_call;
using forksafe::fork_policy;
using forksafe::process_pool;
using forksafe_test::scaled;
using forksafe_test::error_of;
using peers::hang_caught;
using peers::notes;
using peers::run_hanging_scenario;
using peers::run_scenario;

namespace {

// A pipe, closed when the test ends. Made before a pool, it is inherited by
// the pool's workers: a task can wait on it (a gate) or write to it.
struct test_pipe {
  int fds[2] = {-1, -1};
  explicit test_pipe(int flags = 0) { REQUIRE(::pipe2(fds, flags) == 0); }
  ~test_pipe() {
    ::close(fds[0]);
    ::close(fds[1]);
  }
  test_pipe(const test_pipe&) = delete; // one pair of descriptors
  test_pipe& operator=(const test_pipe&) = delete;
  [[nodiscard]] int read_end() const { return fds[0]; }
  [[nodiscard]] int write_end() const { return fds[1]; }
  std::string drain() const {
    std::string s;
    char c;
    while (::read(fds[0], &c, 1) == 1) s += c;
    return s;
  }
};

// In a worker: blocks until a byte can be read from `fd`.
void wait_for_byte(int fd) {
  char c;
  while (::read(fd, &c, 1) < 0 && errno == EINTR) {
  }
}

int threads_in_this_process() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/task")) {
    while (const dirent* e = ::readdir(d)) n += e->d_name[0] != '.' ? 1 : 0;
    ::closedir(d);
  }
  return n;
}

} // namespace

// ---- test_posix: test_register_at_fork -----------------------------------------

// Python rejects non-callables with TypeError at run time; here they do not
// compile. Python also rejects None; forksafe takes nullptr as "no handler".
template <class Prepare, class Parent, class Child>
concept registrable = requires(Prepare p, Parent pa, Child c) {
  atfork_registry::instance().add(p, pa, c);
};
static_assert(!registrable<int, std::nullptr_t, std::nullptr_t>, "before=2");
static_assert(!registrable<std::nullptr_t, std::nullptr_t, const char*>, "after_in_child='three'");
static_assert(!registrable<std::nullptr_t, const char*, std::nullptr_t>, "after_in_parent=b'Five'");
static_assert(!registrable<int (*)(), std::nullptr_t, std::nullptr_t>, "a prepare returns void or bool");
static_assert(registrable<std::nullptr_t, std::nullptr_t, std::nullptr_t>, "None: no handler, accepted");

TEST_CASE("CPython test_posix test_register_at_fork: before hooks newest first; after-in-parent and after-in-child in "
          "registration order") {
  test_pipe p(O_NONBLOCK);
  const int w = p.write_end();
  auto put = [w](const char* byte) { return [w, byte] { (void)!::write(w, byte, 1); }; };
  auto a = atfork_registry::instance().add(put("A"), nullptr, nullptr);
  auto c = atfork_registry::instance().add(nullptr, put("C"), nullptr);
  auto e = atfork_registry::instance().add(nullptr, nullptr, put("E"));
  auto bdf = atfork_registry::instance().add(put("B"), put("D"), put("F"));
  CHECK(forksafe_test::run_in_child([] {}).exited_with(0)); // the child's hooks ran before it ended
  const std::string data = p.drain();
  REQUIRE(data.size() == 6);
  CHECK(data.substr(0, 2) == "BA");
  std::string after = data.substr(2);
  std::sort(after.begin(), after.end());
  CHECK(after == "CDEF");
  CHECK(data.find('C') < data.find('D'));
  CHECK(data.find('E') < data.find('F'));
}

// ---- test_threading -------------------------------------------------------------

// Issue #13817: a fork deadlocked on the lock of the ad-hoc TLS, held by
// another thread. Here a thread keeps taking the table's lock while 16
// threads fork; each child takes it too, then exits 50.
TEST_CASE("CPython test_threading test_reinit_tls_after_fork: 16 threads fork while another keeps a table's lock busy; "
          "every child takes it and exits 50") {
  forksafe::fork_safe_mutex table_lock;
  int table[16] = {};
  std::atomic<bool> stop{false};
  std::thread user([&] {
    for (int i = 0; !stop; ++i) {
      std::lock_guard g(table_lock);
      table[i % 16] += 1;
    }
  });
  std::atomic<int> right{0};
  std::vector<std::thread> forkers;
  for (int t = 0; t < 16; ++t) {
    forkers.emplace_back([&, t] {
      auto r = fork_call({.timeout = scaled(20s)}, [&, t]() -> int {
        {
          std::lock_guard g(table_lock);
          (void)table[t];
        }
        ::_exit(50);
      });
      const auto err = error_of(r);
      if (err && err->exited() && err->exit_code() == 50) right.fetch_add(1);
    });
  }
  for (auto& f : forkers) f.join();
  stop = true;
  user.join();
  CHECK(right == 16);
}

TEST_CASE("CPython test_threading test_reinit_tls_after_fork, negative control: a plain mutex another thread holds at "
          "the fork hangs the child") {
  std::mutex table_lock;
  std::atomic<bool> held{false}, forked{false};
  std::thread holder([&] {
    std::lock_guard g(table_lock);
    held = true;
    while (!forked) std::this_thread::sleep_for(1ms);
  });
  while (!held) std::this_thread::yield();
  auto r = fork_call({.timeout = 1500ms}, [&]() -> int {
    std::lock_guard g(table_lock); // held by a thread that is not in this process
    ::_exit(50);
  });
  forked = true;
  holder.join();
  const auto err = error_of(r);
  REQUIRE(err.has_value());
  CHECK(err->timed_out());
}

TEST_CASE("CPython test_threading test_clear_threads_states_after_fork: a child of a process with 16 more threads has "
          "one thread") {
  std::atomic<bool> release{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&] {
      while (!release) std::this_thread::sleep_for(1ms);
    });
  }
  CHECK(threads_in_this_process() >= 17);
  CHECK(fork_call([] { return threads_in_this_process(); }).get() == 1);
  release = true;
  for (auto& t : threads) t.join();
}

namespace {
struct orphaned_locks {
  bool poisoned;     // poison: the child knows the holder did not survive
  bool poison_threw; // and try_lock() says so
  bool reset_free;   // reset: the lock is free for the child
};
} // namespace

// Python: is_alive() must be False in the child for a thread that did not
// survive the fork (#18418). forksafe keeps no thread objects; what it knows
// of a vanished thread is the lock it held.
TEST_CASE("CPython test_threading test_is_alive_after_fork: in the child, a lock held by a thread that did not survive "
          "the fork is known as such, 20 times") {
  forksafe::basic_fork_safe_mutex<fork_policy::poison> p;
  forksafe::basic_fork_safe_mutex<fork_policy::reset> r;
  int right = 0;
  for (int i = 0; i < 20; ++i) {
    std::atomic<bool> held{false}, go{false};
    std::thread t([&] {
      p.lock();
      r.lock();
      held = true;
      while (!go) std::this_thread::sleep_for(100us);
      r.unlock();
      p.unlock();
    });
    while (!held) std::this_thread::yield();
    const orphaned_locks seen = fork_call([&] {
                                  orphaned_locks s{};
                                  s.poisoned = p.poisoned();
                                  try {
                                    (void)p.try_lock();
                                  } catch (const forksafe::fork_poisoned&) {
                                    s.poison_threw = true;
                                  }
                                  s.reset_free = r.try_lock();
                                  return s;
                                }).get();
    go = true;
    t.join();
    right += seen.poisoned && seen.poison_threw && seen.reset_free ? 1 : 0;
  }
  CHECK(right == 20);
}

namespace {
struct own_locks {
  bool unlocked_all; // unlock() in the child, of locks the forking thread held
  bool free_after;   // and then free there
  bool not_poisoned;
};

// Locks of every policy, held by the thread that forks.
own_locks fork_holding_own_locks() {
  forksafe::fork_safe_mutex q;
  forksafe::basic_fork_safe_mutex<fork_policy::reset> r;
  forksafe::basic_fork_safe_mutex<fork_policy::poison> p;
  q.lock();
  r.lock();
  p.lock();
  const own_locks seen = fork_call([&] {
                           own_locks s{};
                           s.not_poisoned = !p.poisoned();
                           q.unlock();
                           r.unlock();
                           p.unlock();
                           s.unlocked_all = true;
                           s.free_after = q.try_lock() && r.try_lock() && p.try_lock();
                           return s;
                         }).get();
  p.unlock();
  r.unlock();
  q.unlock();
  return seen;
}
} // namespace

// Python: in the child, the forking thread is the main thread. Here: it keeps
// its identity, so the locks it held are its own there, whichever thread it was.
TEST_CASE("CPython test_threading test_main_thread_after_fork and _from_nonmain_thread: the forking thread owns its "
          "locks in the child") {
  const own_locks from_main = fork_holding_own_locks();
  CHECK(from_main.unlocked_all);
  CHECK(from_main.free_after);
  CHECK(from_main.not_poisoned);
  own_locks from_worker{};
  std::thread worker([&] { from_worker = fork_holding_own_locks(); });
  worker.join();
  CHECK(from_worker.unlocked_all);
  CHECK(from_worker.free_after);
  CHECK(from_worker.not_poisoned);
}

// ---- test_threading test_fork_at_exit, test_os test_fork_at_finalization ---------

namespace {
const peers::notes* exit_notes = nullptr;
std::atomic<int> exit_prepares{0};
forksafe::atfork_handle exit_counter;

// Forks from inside exit(): the registry still works (it is never
// destroyed) and the child's value arrives. Ends the process with the verdict.
[[noreturn]] void fork_while_exiting(const char* when) {
  const int before = exit_prepares;
  auto r = fork_call([] { return 42; });
  const int value = r.get();
  const bool ok = value == 42 && exit_prepares == before + 1;
  if (!ok) exit_notes->add("%s: value %d (42), prepares %d (1)\n", when, value, exit_prepares - before);
  ::_exit(ok ? 0 : 1);
}

void fork_in_atexit_handler() { fork_while_exiting("atexit"); }

struct forks_when_destroyed {
  ~forks_when_destroyed() { fork_while_exiting("static destructor"); }
};
} // namespace

// Python forks from an atexit handler after threading._shutdown() and the
// child works; it refuses at interpreter finalization ("can't fork at
// interpreter shutdown"). forksafe refuses neither.
TEST_CASE("CPython test_threading test_fork_at_exit: a fork from an atexit handler runs the registry and delivers its "
          "value") {
  const auto s = run_scenario([](const notes& out) {
    exit_notes = &out;
    exit_counter = atfork_registry::instance().add([] { exit_prepares.fetch_add(1); }, nullptr, nullptr);
    std::atexit(fork_in_atexit_handler);
    std::exit(3); // the handler ends the process with its verdict
  });
  CHECK_SCENARIO_OK(s);
}

TEST_CASE("CPython test_os test_fork_at_finalization: a fork from a static destructor during exit still works (Python "
          "refuses)") {
  const auto s = run_scenario([](const notes& out) {
    exit_notes = &out;
    exit_counter = atfork_registry::instance().add([] { exit_prepares.fetch_add(1); }, nullptr, nullptr);
    static forks_when_destroyed at_finalization; // destroyed by exit()
    std::exit(3);
  });
  CHECK_SCENARIO_OK(s);
}

// ---- test_fork1 -------------------------------------------------------------------

// fork_wait.py: 4 threads keep updating; the child, after a while, finds
// that nothing changed: only the forking thread came along. (Python sleeps
// 2 s; 50 ms here: a thread that survived would have moved its counter.)
TEST_CASE("CPython test_fork1 test_wait: threads that keep counting in the parent stand still in the child") {
  std::atomic<long> counters[4] = {};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (auto& c : counters) {
    threads.emplace_back([&] {
      while (!stop) {
        c.fetch_add(1);
        std::this_thread::sleep_for(100us);
      }
    });
  }
  for (auto& c : counters) {
    while (c.load() == 0) std::this_thread::yield(); // every thread alive
  }
  const int moved = fork_call([&] {
                      long before[4];
                      for (int i = 0; i < 4; ++i) before[i] = counters[i].load();
                      std::this_thread::sleep_for(50ms);
                      int n = 0;
                      for (int i = 0; i < 4; ++i) n += counters[i].load() != before[i] ? 1 : 0;
                      return n;
                    }).get();
  stop = true;
  for (auto& t : threads) t.join();
  CHECK(moved == 0);
}

namespace {
enum module_state { absent, partial, complete };

// test_threaded_import_lock_fork's importer: takes the lock, publishes a
// partial module, announces itself, finishes the module a moment later.
template <class Mutex>
struct importer {
  Mutex import_lock;
  module_state state = absent; // guarded by import_lock
  std::atomic<bool> started{false};
  std::atomic<bool> release{false}; // when set: let go now

  std::thread start(std::chrono::milliseconds hold_at_most) {
    return std::thread([this, hold_at_most] {
      std::lock_guard g(import_lock);
      state = partial;
      started = true;
      const auto until = std::chrono::steady_clock::now() + hold_at_most;
      while (!release && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(100us);
      state = complete;
    });
  }
};
} // namespace

// PyOS_BeforeFork takes the import lock, so the fork waits for the import.
// A quiesce lock does the same: the child never sees the module half-built.
TEST_CASE("CPython test_fork1 test_threaded_import_lock_fork: a fork waits for a thread inside a quiesce critical "
          "section; the child never sees its half-done work") {
  importer<forksafe::fork_safe_mutex> imp;
  std::thread t = imp.start(10ms);
  while (!imp.started) std::this_thread::yield();
  const module_state seen = fork_call({.timeout = scaled(20s)}, [&] {
                              std::lock_guard g(imp.import_lock);
                              return imp.state;
                            }).get();
  t.join();
  CHECK(seen == complete);
}

TEST_CASE("CPython test_fork1 test_threaded_import_lock_fork, negative control: with a plain mutex held at the fork "
          "the child hangs on it") {
  importer<std::mutex> imp;
  std::thread t = imp.start(std::chrono::hours(1)); // holds until told: the fork surely happens meanwhile
  while (!imp.started) std::this_thread::yield();
  auto r = fork_call({.timeout = 1500ms}, [&] {
    std::lock_guard g(imp.import_lock);
    return imp.state;
  });
  imp.release = true;
  t.join();
  const auto err = error_of(r);
  REQUIRE(err.has_value());
  CHECK(err->timed_out());
}

// CPython bpo-9573: releasing the import lock, held 0 to 4 levels deep by the
// forking thread, raised RuntimeError in the child. Here: 0 to 4 locks of
// every policy, held by the forking thread, unlock normally in the child.
TEST_CASE("CPython test_fork1 test_nested_import_lock_fork: locks the forking thread holds, 0 to 4 of them, unlock "
          "normally in the child") {
  forksafe::fork_safe_mutex q0, q1;
  forksafe::basic_fork_safe_mutex<fork_policy::reset> r;
  forksafe::basic_fork_safe_mutex<fork_policy::poison> p;
  auto lock_level = [&](int level, bool lock) {
    auto one = [lock](auto& m) {
      if (lock) {
        m.lock();
      } else {
        m.unlock();
      }
    };
    if (level > 0) one(q0);
    if (level > 1) one(r);
    if (level > 2) one(p);
    if (level > 3) one(q1);
  };
  for (int level = 0; level <= 4; ++level) {
    lock_level(level, true);
    const int code = fork_call([&] {
                       try {
                         lock_level(level, false);
                         const bool all_free = q0.try_lock() && r.try_lock() && p.try_lock() && q1.try_lock();
                         return all_free ? 42 : 1;
                       } catch (const forksafe::fork_poisoned&) {
                         return 2;
                       }
                     }).get();
    lock_level(level, false);
    CHECK_MESSAGE(code == 42, "level ", level);
  }
}

TEST_CASE("CPython test_fork1 test_nested_import_lock_fork, negative control: an error-checking pthread mutex held by "
          "the forking thread refuses unlock in the child (EPERM)") {
  pthread_mutexattr_t attr;
  ::pthread_mutexattr_init(&attr);
  ::pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
  pthread_mutex_t m;
  ::pthread_mutex_init(&m, &attr);
  ::pthread_mutexattr_destroy(&attr);
  ::pthread_mutex_lock(&m);
  // glibc's child thread has a new TID; the mutex remembers the old one.
  const int err = fork_call([&] { return ::pthread_mutex_unlock(&m); }).get();
  ::pthread_mutex_unlock(&m);
  ::pthread_mutex_destroy(&m);
  CHECK(err == EPERM);
}

// ---- test_logging: test_post_fork_child_no_deadlock (bpo-6721, bpo-36533) ---------

namespace {
// logging's locks: the module lock, a handler's lock, and the lock of the
// stream handler it emits through.
template <class Mutex>
struct logging_locks {
  Mutex module_lock, handler_lock, sub_handler_lock;
  int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  ~logging_locks() { ::close(devnull); }
  logging_locks() = default;
  logging_locks(const logging_locks&) = delete; // owns a descriptor
  logging_locks& operator=(const logging_locks&) = delete;

  // test_logger.info(): the logger's locks, then the handler's emit.
  bool log(const char* message) {
    std::lock_guard m(module_lock);
    std::lock_guard h(handler_lock);
    std::lock_guard s(sub_handler_lock);
    return ::write(devnull, message, std::strlen(message)) > 0;
  }
};

// The test's lock holder: takes the module lock and the handler's lock,
// says "ready to fork", waits for the fork (at most `wait_at_most`, as
// CPython waits 0.5 s), lets go.
template <class Mutex>
int child_logs_after_fork(logging_locks<Mutex>& locks, std::chrono::milliseconds wait_at_most,
                          std::chrono::milliseconds child_timeout, bool& timed_out) {
  std::atomic<bool> ready{false}, fork_happened{false};
  std::thread holder([&] {
    std::lock_guard m(locks.module_lock);
    std::lock_guard h(locks.handler_lock);
    ready = true;
    const auto until = std::chrono::steady_clock::now() + wait_at_most;
    while (!fork_happened && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(100us);
  });
  while (!ready) std::this_thread::yield();
  auto r =
      fork_call({.timeout = child_timeout}, [&] { return locks.log("Child process did not deadlock. \\o/") ? 0 : 1; });
  fork_happened = true;
  (void)locks.log("Parent process returned from fork. \\o/");
  holder.join();
  const auto err = error_of(r);
  timed_out = err && err->timed_out();
  return err ? -1 : r.get();
}
} // namespace

// CPython re-initialises logging's locks in the child (_at_fork_reinit): the
// reset policy. The holder keeps its locks until after the fork.
TEST_CASE("CPython test_logging test_post_fork_child_no_deadlock: a child logs through locks another thread held at "
          "the fork (reset)") {
  logging_locks<forksafe::basic_fork_safe_mutex<fork_policy::reset>> locks;
  bool timed_out = false;
  CHECK(child_logs_after_fork(locks, std::chrono::hours(1), scaled(20s), timed_out) == 0);
  CHECK_FALSE(timed_out);
}

// The quiesce policy instead: the fork waits until the holder lets go (it
// waits for the fork for 200 ms at most, as CPython's holder waits 0.5 s).
TEST_CASE("CPython test_logging test_post_fork_child_no_deadlock: a child logs through locks another thread held when "
          "fork was called (quiesce)") {
  logging_locks<forksafe::fork_safe_mutex> locks;
  bool timed_out = false;
  CHECK(child_logs_after_fork(locks, 200ms, scaled(20s), timed_out) == 0);
  CHECK_FALSE(timed_out);
}

TEST_CASE(
    "CPython test_logging test_post_fork_child_no_deadlock, negative control: with plain mutexes the child deadlocks") {
  logging_locks<std::mutex> locks;
  bool timed_out = false;
  (void)child_logs_after_fork(locks, std::chrono::hours(1), 1500ms, timed_out);
  CHECK(timed_out);
}

// ---- test_concurrent_futures: the process pool ------------------------------------

namespace {
int mul(int a, int b) { return a * b; }
int twice(int x) { return 2 * x; }
} // namespace

// Python's BrokenProcessPool: one killed worker fails every pending future
// and the pool refuses new work. forksafe: only the task that was running
// in the killed worker fails, with the signal's name; the worker is
// replaced, the queued and the later tasks run.
TEST_CASE("CPython test_process_pool test_killed_child: a worker killed mid-task fails that task alone; queued and "
          "later tasks complete") {
  test_pipe started;
  const int started_fd = started.write_end();
  process_pool pool(1); // a worker resets every signal handler: SIGTERM (p.terminate()) ends it
  auto sleeper = pool.submit([started_fd] {
    (void)!::write(started_fd, "s", 1);
    for (;;) ::pause();
    return 0;
  });
  std::vector<forksafe::process_result<int>> queued;
  for (int i = 0; i < 5; ++i) queued.push_back(pool.submit(twice, i));
  // Running, not merely handed to the worker: a worker killed by someone
  // else before it took its task is replaced and the task runs again there.
  pollfd running{started.read_end(), POLLIN, 0};
  REQUIRE(::poll(&running, 1, static_cast<int>(scaled(20s).count())) == 1);
  ::kill(sleeper.pid(), SIGTERM);
  const auto err = error_of(sleeper);
  REQUIRE(err.has_value());
  CHECK(err->signaled());
  CHECK(err->signal_name() == "SIGTERM");
  for (int i = 0; i < 5; ++i) CHECK(queued[static_cast<std::size_t>(i)].get() == 2 * i);
  CHECK(pool.submit([](int a, int b) { return a * b; }, 2, 8).get() == 16); // pow(2, 8) in Python
}

TEST_CASE("CPython test_process_pool test_traceback: a task's exception arrives with its type and message") {
  process_pool pool(1);
  auto r = pool.submit([]() -> int { throw std::runtime_error("123"); });
  const auto err = error_of(r);
  REQUIRE(err.has_value());
  CHECK(err->threw());
  CHECK(err->exception_type() == "std::runtime_error");
  CHECK(err->exception_what() == "123");
}

TEST_CASE("CPython test_process_pool test_traceback_when_child_process_terminates_abruptly: _exit(99) in a task is "
          "reported as exit code 99; the pool goes on") {
  process_pool pool(1);
  auto r = pool.submit([]() -> int { ::_exit(99); });
  const auto err = error_of(r);
  REQUIRE(err.has_value());
  CHECK(err->exited());
  CHECK(err->exit_code() == 99);
  CHECK(std::string(err->what()).find("exited with code 99") != std::string::npos);
  CHECK(pool.submit(mul, 6, 7).get() == 42);
}

// Python refuses max_tasks_per_child with the fork start method
// (ValueError); forksafe's workers are forks and honour it.
TEST_CASE("CPython test_process_pool test_max_tasks_per_child: with a limit of 3 a worker runs three tasks, then a "
          "fresh one takes over") {
  process_pool pool(1, {.max_tasks_per_worker = 3});
  const pid_t original = pool.submit([] { return ::getpid(); }).get();
  CHECK(pool.submit([] { return ::getpid(); }).get() == original);
  CHECK(pool.submit([] { return ::getpid(); }).get() == original);
  const pid_t fresh = pool.submit([] { return ::getpid(); }).get();
  CHECK(fresh != original);
  CHECK(pool.size() == 1);
}

TEST_CASE("CPython test_process_pool test_max_tasks_per_child_pending_tasks_gh115634: workers retiring at their limit "
          "with a backlog queued: every task runs") {
  const auto s = run_scenario([](const notes& out) {
    int failures = 0;
    struct shape {
      int workers, max_tasks, tasks;
    };
    for (const shape c : {shape{1, 2, 6}, shape{2, 2, 8}}) {
      process_pool pool(static_cast<std::size_t>(c.workers),
                        {.max_tasks_per_worker = static_cast<std::size_t>(c.max_tasks)});
      std::vector<forksafe::process_result<int>> results;
      for (int i = 0; i < c.tasks; ++i) results.push_back(pool.submit(mul, i, 2));
      for (int i = 0; i < c.tasks; ++i) {
        const int v = results[static_cast<std::size_t>(i)].get();
        if (v != i * 2)
          out.add("%d workers, limit %d: task %d gave %d (%d)\n", c.workers, c.max_tasks, i, v, i * 2), ++failures;
      }
    }
    return failures;
  });
  CHECK_SCENARIO_OK(s);
}

namespace {
// The pool design gh-115634 and the deadlock tests caught: pre-forked
// workers take task numbers from one pipe and answer on another; a worker
// that retires or dies is not replaced, and the caller waits for every
// answer with no deadline. A worker answers `task * 2`, retires after
// `max_tasks`, and kills itself on task `crash_task`.
int naive_pool_run(int workers, int max_tasks, int tasks, int crash_task) {
  int task_pipe[2], answer_pipe[2];
  if (::pipe(task_pipe) != 0 || ::pipe(answer_pipe) != 0) return 2;
  const pid_t parent = ::getpid();
  for (int w = 0; w < workers; ++w) {
    if (::fork() == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL); // no orphan when the sandbox is killed
      if (::getppid() != parent) ::_exit(0);
      for (int done = 0; done < max_tasks; ++done) {
        int task = 0;
        if (::read(task_pipe[0], &task, sizeof task) != sizeof task) ::_exit(1);
        if (task == crash_task) ::kill(::getpid(), SIGKILL);
        const int answer = task * 2;
        (void)!::write(answer_pipe[1], &answer, sizeof answer);
      }
      ::_exit(0); // retires, not replaced
    }
  }
  for (int t = 0; t < tasks; ++t) (void)!::write(task_pipe[1], &t, sizeof t);
  for (int t = 0; t < tasks; ++t) {
    int answer = 0;
    if (::read(answer_pipe[0], &answer, sizeof answer) != sizeof answer)
      return 3; // the caller keeps a write end: never EOF
  }
  return 0;
}
} // namespace

TEST_CASE("CPython test_process_pool test_max_tasks_per_child_pending_tasks_gh115634, negative control: a pool that "
          "does not replace retiring workers leaves the backlog waiting for ever") {
  const auto s = run_hanging_scenario([](const notes&) { return naive_pool_run(1, 2, 6, -1); }, 1500ms);
  INFO("sandbox ", s.outcome.describe());
  CHECK(hang_caught(s.outcome));
}

TEST_CASE("CPython test_process_pool test_max_tasks_early_shutdown: shutdown right after submitting, one task per "
          "worker: every result arrives") {
  const auto s = run_scenario([](const notes& out) {
    std::vector<forksafe::process_result<int>> results;
    {
      process_pool pool(3, {.max_tasks_per_worker = 1, .shutdown_deadline = scaled(30s)});
      for (int i = 0; i < 6; ++i) results.push_back(pool.submit(mul, i, i));
      pool.shutdown();
    }
    int failures = 0;
    for (int i = 0; i < 6; ++i) {
      const auto err = error_of(results[static_cast<std::size_t>(i)]);
      if (err) {
        out.add("task %d: %s\n", i, err->what()), ++failures;
      } else if (results[static_cast<std::size_t>(i)].get() != i * i) {
        out.add("task %d: wrong value\n", i), ++failures;
      }
    }
    return failures;
  });
  CHECK_SCENARIO_OK(s);
}

TEST_CASE("CPython test_process_pool test_shutdown_no_wait_max_tasks_gh119592: shutdown begun while the only worker "
          "runs its last allowed task: the queued tasks still run") {
  const auto s = run_scenario([](const notes& out) {
    int gate[2];
    if (::pipe(gate) != 0) return 2;
    const int wait_fd = gate[0];
    std::vector<forksafe::process_result<int>> results;
    process_pool pool(1, {.max_tasks_per_worker = 1, .shutdown_deadline = scaled(30s)});
    for (int i = 0; i < 3; ++i) {
      results.push_back(pool.submit(
          [wait_fd](int v) {
            if (v == 0) wait_for_byte(wait_fd);
            return v;
          },
          i));
    }
    while (results[0].pid() < 0) std::this_thread::sleep_for(1ms); // the worker is inside task 0
    std::thread stopper([&] { pool.shutdown(); });
    std::this_thread::sleep_for(20ms); // let shutdown begin (either order must work)
    (void)!::write(gate[1], "g", 1);
    stopper.join();
    int failures = 0;
    for (int i = 0; i < 3; ++i) {
      const auto err = error_of(results[static_cast<std::size_t>(i)]);
      if (err) {
        out.add("task %d: %s\n", i, err->what()), ++failures;
      } else if (results[static_cast<std::size_t>(i)].get() != i) {
        out.add("task %d: wrong value\n", i), ++failures;
      }
    }
    return failures;
  });
  CHECK_SCENARIO_OK(s);
}

// ---- test_concurrent_futures/test_shutdown ---------------------------------------

// Python: 50 tasks sleeping 0.1 s; here 20 tasks sleeping 10 ms on 2 workers.
TEST_CASE("CPython test_shutdown test_hang_issue12364: shutdown with running and queued tasks waits for all of them; "
          "none hangs") {
  const auto s = run_scenario([](const notes& out) {
    std::vector<forksafe::process_result<int>> results;
    process_pool pool(2, {.shutdown_deadline = scaled(30s)});
    for (int i = 0; i < 20; ++i) {
      results.push_back(pool.submit(
          [](int v) {
            std::this_thread::sleep_for(10ms);
            return v;
          },
          i));
    }
    pool.shutdown();
    int failures = 0;
    for (int i = 0; i < 20; ++i) {
      const auto err = error_of(results[static_cast<std::size_t>(i)]);
      if (err) out.add("task %d: %s\n", i, err->what()), ++failures;
    }
    return failures;
  });
  CHECK_SCENARIO_OK(s);
}

// Python's shutdown(cancel_futures=True) cancels what has not started and
// lets the running ones finish. forksafe's shutdown always lets both finish,
// within its deadline; past it, the task still running is killed
// (timed_out) and those still queued are cancelled.
TEST_CASE("CPython test_shutdown test_cancel_futures: a shutdown past its deadline kills the running task and cancels "
          "the queued ones") {
  process_pool pool(1, {.shutdown_deadline = 100ms});
  auto running = pool.submit([] {
    for (;;) ::pause();
    return 0;
  });
  std::vector<forksafe::process_result<int>> queued;
  for (int i = 0; i < 5; ++i) queued.push_back(pool.submit(twice, i));
  while (running.pid() < 0) std::this_thread::sleep_for(1ms);
  pool.shutdown();
  const auto err = error_of(running);
  REQUIRE(err.has_value());
  CHECK(err->timed_out());
  int cancelled = 0;
  for (auto& q : queued) {
    const auto e = error_of(q);
    if (e && !e->cancelled()) MESSAGE("a queued task: ", e->what());
    cancelled += e && e->cancelled() ? 1 : 0;
  }
  CHECK(cancelled == 5);
}

TEST_CASE("CPython test_shutdown test_run_after_shutdown and test_submit_after_interpreter_shutdown: submitting after "
          "shutdown throws std::logic_error") {
  process_pool pool(1);
  CHECK(pool.submit(mul, 2, 5).get() == 10);
  pool.shutdown();
  CHECK_THROWS_AS((void)pool.submit(mul, 2, 5), std::logic_error);
}

TEST_CASE(
    "CPython test_shutdown test_hang_gh94440: a task whose handle was dropped just before shutdown does not hang it") {
  const auto s = run_scenario([](const notes&) {
    process_pool pool(1, {.shutdown_deadline = scaled(30s)});
    if (pool.submit(twice, 1).get() != 2) return 1;
    (void)pool.submit(twice, 2); // dropped at once: Python's submit(int).cancel()
    pool.shutdown();
    return 0;
  });
  CHECK_SCENARIO_OK(s);
}

TEST_CASE("CPython test_shutdown test_interpreter_shutdown: destroying the pool lets a queued task, whose handle is "
          "gone, run to the end") {
  test_pipe p(O_NONBLOCK);
  const int w = p.write_end();
  {
    process_pool pool(2, {.shutdown_deadline = scaled(30s)});
    (void)pool.submit([w] {
      std::this_thread::sleep_for(20ms);
      (void)!::write(w, "apple", 5);
    });
  }
  CHECK(p.drain() == "apple");
}

TEST_CASE("CPython test_shutdown test_processes_terminate and test_del_shutdown: after shutdown every worker is gone "
          "and reaped") {
  test_pipe gate;
  const int wait_fd = gate.read_end();
  std::vector<pid_t> workers;
  {
    process_pool pool(3);
    std::vector<forksafe::process_result<int>> busy;
    for (int i = 0; i < 3; ++i) {
      busy.push_back(pool.submit([wait_fd] {
        wait_for_byte(wait_fd);
        return 0;
      }));
    }
    for (auto& b : busy) {
      while (b.pid() < 0) std::this_thread::sleep_for(1ms);
      workers.push_back(b.pid()); // three tasks blocked: three workers
    }
    REQUIRE(::write(gate.write_end(), "ggg", 3) == 3);
    for (auto& b : busy) CHECK(b.get() == 0);
  }
  std::sort(workers.begin(), workers.end());
  CHECK(std::adjacent_find(workers.begin(), workers.end()) == workers.end());
  for (pid_t w : workers) CHECK(forksafe_test::process_is_dead(w));
  CHECK(forksafe_test::count_zombie_children() == 0);
}

// Python: max_tasks_per_child=1, a task ending abnormally between two good
// ones, shutdown(wait=False): once an exception, once a hang (2 and 4 workers).
TEST_CASE("CPython test_shutdown test_shutdown_gh_132969: one task per worker, a failing task between two good ones: "
          "values and error arrive, shutdown returns") {
  const auto s = run_scenario([](const notes& out) {
    int failures = 0;
    for (std::size_t workers : {2U, 4U}) {
      process_pool pool(workers, {.max_tasks_per_worker = 1, .shutdown_deadline = scaled(30s)});
      auto good = [](int n) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10 * n));
        return n;
      };
      auto f1 = pool.submit(good, 1);
      auto f2 = pool.submit([](int) -> int { throw std::invalid_argument("failing task"); }, 2);
      auto f3 = pool.submit(good, 3);
      const auto e2 = error_of(f2);
      if (f1.get() != 1) out.add("%zu workers: f1\n", workers), ++failures;
      if (!e2 || !e2->threw() || e2->exception_what() != "failing task")
        out.add("%zu workers: f2\n", workers), ++failures;
      if (f3.get() != 3) out.add("%zu workers: f3\n", workers), ++failures;
      pool.shutdown();
    }
    return failures;
  });
  CHECK_SCENARIO_OK(s);
}

// ---- test_concurrent_futures/test_deadlock ---------------------------------------

// Python checks that each failure reaches result() within a timeout instead
// of deadlocking the executor: a crash (BrokenProcessPool), sys.exit
// (SystemExit), an exception (RuntimeError). Each on a fresh pool of 2.
TEST_CASE("CPython test_deadlock test_crash_during_func_exec_on_worker, test_exit_during_func_exec_on_worker, "
          "test_error_during_func_exec_on_worker: each failure reaches its caller") {
  const auto s = run_scenario([](const notes& out) {
    int failures = 0;
    {
      process_pool pool(2);
      auto r = pool.submit([] { return forksafe_test::load_through_null(); });
      const auto e = error_of(r);
      if (!e || !e->signaled() || e->signal_name() != "SIGSEGV")
        out.add("crash: %s\n", e ? e->what() : "no error"), ++failures;
    }
    {
      process_pool pool(2);
      auto r = pool.submit([]() -> int { std::exit(1); });
      const auto e = error_of(r);
      if (!e || !e->exited() || e->exit_code() != 1) out.add("exit: %s\n", e ? e->what() : "no error"), ++failures;
    }
    {
      process_pool pool(2);
      auto r = pool.submit([]() -> int { throw std::runtime_error("error in func"); });
      const auto e = error_of(r);
      if (!e || !e->threw() || e->exception_type() != "std::runtime_error")
        out.add("error: %s\n", e ? e->what() : "no error"), ++failures;
    }
    return failures;
  });
  CHECK_SCENARIO_OK(s);
}

TEST_CASE("CPython test_deadlock test_crash_during_func_exec_on_worker, negative control: a pool that waits for a "
          "crashed worker's answer waits for ever") {
  const auto s = run_hanging_scenario([](const notes&) { return naive_pool_run(2, 1000, 4, 0); }, 1500ms);
  INFO("sandbox ", s.outcome.describe());
  CHECK(hang_caught(s.outcome));
}

// Python's pickling failures (a task, argument or result that cannot be
// pickled, or whose pickling crashes or exits) surface at run time, and used
// to deadlock the executor. Here what crosses is checked at compile time:
// plain data (strings and containers too) crosses, and what holds a lock, a
// future or an address cannot be submitted.
namespace {
inline const std::string unpicklable = "x";
} // namespace
static_assert(!forksafe::pool_task<decltype([](int) { return 0; }), std::future<int>>,
              "test_error_at_task_pickle: an argument that is not plain data");
static_assert(!forksafe::pool_task<decltype([] { return std::vector<std::future<int>>(); })>,
              "test_error_during_result_pickle_on_worker: a result that is not plain data");
static_assert(forksafe::pool_task<decltype([] { return std::vector<std::string>(); })>, "a list of strings crosses");
static_assert(forksafe::pool_task<decltype([](std::string s) { return s.size(); }), std::string>,
              "a string argument crosses");
static_assert(!forksafe::pool_task<decltype([s = unpicklable] { return s.size(); })>,
              "a callable that captures what is not plain bytes (pass it as an argument)");
static_assert(!forksafe::pool_task<decltype([] { return std::mutex(); })>, "a lock result (not copyable at all)");
static_assert(!forksafe::trivially_serializable<std::mutex>, "can't pickle _thread.lock objects");
static_assert(forksafe::pool_task<decltype([](int a) { return std::array<int, 4>{a}; }), int>, "plain data crosses");

namespace {
struct big_result {
  std::array<unsigned char, 1 << 20> bytes; // 1 MiB: built in shared memory
};
} // namespace

// The run-time analogue of test_crash_during_result_pickle_on_worker and
// test_crash_big_data: a worker dies while its large result is half built.
TEST_CASE("CPython test_deadlock test_crash_during_result_pickle_on_worker and test_crash_big_data: a worker dying "
          "while its 1 MiB result is half built delivers nothing torn") {
  const auto s = run_scenario([](const notes& out) {
    int failures = 0;
    process_pool pool(2);
    auto crashing = pool.submit([] {
      big_result r;
      std::memset(r.bytes.data(), 0xAB, r.bytes.size() / 2);
      if (forksafe_test::load_through_null() == 0) std::memset(r.bytes.data(), 0, r.bytes.size()); // not reached
      return r;
    });
    auto whole = pool.submit([] {
      big_result r;
      std::memset(r.bytes.data(), 0x5A, r.bytes.size());
      return r;
    });
    const auto e = error_of(crashing);
    if (!e || !e->signaled()) out.add("the crashing task: %s\n", e ? e->what() : "delivered a value"), ++failures;
    const big_result& w = whole.get();
    for (unsigned char b : w.bytes) {
      if (b != 0x5A) {
        out.add("the next large result is not whole\n"), ++failures;
        break;
      }
    }
    return failures;
  });
  CHECK_SCENARIO_OK(s);
}

TEST_CASE("CPython test_deadlock test_shutdown_deadlock: a worker that crashes after shutdown began fails its task; "
          "shutdown returns") {
  const auto s = run_scenario([](const notes& out) {
    forksafe::process_result<int> r;
    {
      process_pool pool(2, {.shutdown_deadline = scaled(30s)});
      r = pool.submit([] {
        std::this_thread::sleep_for(50ms);
        return forksafe_test::load_through_null();
      });
      pool.shutdown();
    }
    const auto e = error_of(r);
    if (!e || !e->signaled()) {
      out.add("the task: %s\n", e ? e->what() : "delivered a value");
      return 1;
    }
    return 0;
  });
  CHECK_SCENARIO_OK(s);
}

TEST_CASE("CPython test_deadlock test_gh105829_should_not_deadlock_if_wakeup_pipe_full: 100 tasks submitted before any "
          "is collected; all right") {
  const auto s = run_scenario([](const notes& out) {
    process_pool pool(2);
    std::vector<forksafe::process_result<int>> results;
    for (int i = 0; i < 100; ++i) results.push_back(pool.submit(twice, i));
    int wrong = 0;
    for (int i = 0; i < 100; ++i) wrong += results[static_cast<std::size_t>(i)].get() == 2 * i ? 0 : 1;
    if (wrong != 0) out.add("%d of 100 wrong\n", wrong);
    return wrong;
  });
  CHECK_SCENARIO_OK(s);
}
