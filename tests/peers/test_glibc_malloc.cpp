// SPDX-License-Identifier: MIT
// glibc's async-signal-safe fork tests (malloc/tst-mallocfork, tst-mallocfork2,
// tst-mallocfork3), ported to forksafe: a signal handler forks, sometimes
// while the thread it interrupted is itself inside fork().
//
// An executable of its own: glibc's fork() is async-signal-safe (it skips
// the malloc and stdio locks) only while the process has never had a second
// thread (__libc_single_threaded), and a process that once had one keeps the
// flag cleared, in its forked children too. So no test here starts a thread
// outside a sandbox, and the sandboxes that need a single-threaded process
// check that they are one.

#include <forksafe/atfork_registry.hpp>
#include <forksafe/fork_safe_mutex.hpp>

#include "peer_support.hpp"

#include <atomic>  // the lock holder's handshake
#include <cerrno>  // EINTR
#include <csignal> // sigaction, raise, kill
#include <cstdint> // std::uint64_t: fork generations
#include <cstdlib> // malloc, free, rand_r
#include <mutex>   // std::mutex: the negative controls' lock
#include <thread>  // tst-mallocfork3's signal senders
#include <vector>  // threads

#include <pthread.h>             // pthread_atfork, pthread_barrier_t, pthread_kill
#include <sys/mman.h>            // the barrier shared with the sender processes
#include <sys/prctl.h>           // PR_SET_PDEATHSIG: senders die with their sandbox
#include <sys/single_threaded.h> // __libc_single_threaded
#include <sys/syscall.h>         // SYS_exit_group
#include <sys/wait.h>            // waitpid
#include <unistd.h>              // fork, _Fork, getppid

#if FORKSAFE_TEST_TSAN
// Forking from a signal handler is what these tests are about; TSan's model
// calls any allocation there (its own fork interceptor's included) unsafe.
extern "C" const char* __tsan_default_options() { return "report_signal_unsafe=0"; }
#endif

using namespace std::chrono_literals;
using forksafe::atfork_registry;
using peers::hang_caught;
using peers::notes;
using peers::run_hanging_scenario;
using peers::run_scenario;

namespace {

// waitpid that retries on EINTR (signals arrive all the time here); returns
// the status, or -1.
int wait_status(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return status;
}

void install(int sig, void (*handler)(int)) {
  struct sigaction action {};
  action.sa_handler = handler;
  sigemptyset(&action.sa_mask);
  ::sigaction(sig, &action, nullptr);
}

// A child of a fork without handlers (_Fork, clone) has none of TSan's or
// libc's after-fork fixups: leave without running any interceptor.
[[noreturn]] void raw_exit(int code) {
  ::syscall(SYS_exit_group, code);
  __builtin_unreachable();
}

} // namespace

// ---- malloc/tst-mallocfork (bug 838) -----------------------------------------

namespace {

volatile sig_atomic_t handler_done = 0;
volatile sig_atomic_t handler_fork_status = -1;

// glibc's handler: fork a trivial child and reap it.
void fork_and_reap(int) {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  handler_fork_status = pid < 0 ? -2 : wait_status(pid);
  handler_done = 1;
}

// glibc's choreography: a child sends SIGALRM; the program takes it while
// holding a lock that fork's prepare wants (malloc's arena lock in bug 838).
// `hold` takes the lock, `release` lets it go.
template <class Hold, class Release>
int fork_from_handler_while_holding(Hold hold, Release release, const notes& out) {
  handler_done = 0;
  handler_fork_status = -1;
  install(SIGALRM, fork_and_reap);
  sigset_t alarm_only, old;
  sigemptyset(&alarm_only);
  sigaddset(&alarm_only, SIGALRM);
  ::sigprocmask(SIG_BLOCK, &alarm_only, &old);
  const auto sender = forksafe_test::run_in_child([] { return ::kill(::getppid(), SIGALRM) == 0 ? 0 : 1; });
  if (!sender.exited_with(0)) {
    out.add("the signal sender %s\n", sender.describe().c_str());
    return 1;
  }
  hold();
  sigset_t waiting = old;
  sigdelset(&waiting, SIGALRM);
  while (handler_done == 0) ::sigsuspend(&waiting); // the handler forks here
  release();
  ::sigprocmask(SIG_SETMASK, &old, nullptr);
  if (handler_fork_status != 0) {
    out.add("the handler's fork: status %d (0)\n", static_cast<int>(handler_fork_status));
    return 1;
  }
  return 0;
}

} // namespace

TEST_CASE(
    "glibc tst-mallocfork: a signal handler may fork while the code it interrupted holds a lock the fork quiesces") {
  const auto s = run_scenario([](const notes& out) {
    forksafe::fork_safe_mutex m; // quiesce: every fork takes it, except a holder's own
    std::atomic<int> prepares{0};
    auto counter = atfork_registry::instance().add([&] { prepares.fetch_add(1); }, nullptr, nullptr);
    const int rc = fork_from_handler_while_holding([&] { m.lock(); }, [&] { m.unlock(); }, out);
    if (prepares != 2) out.add("prepare ran %d times (2: the sender's fork and the handler's)\n", prepares.load());
    return rc != 0 || prepares != 2 ? 1 : 0;
  });
  CHECK_SCENARIO_OK(s);
}

TEST_CASE("glibc tst-mallocfork, negative control: a prepare handler that blocks on a lock the interrupted code holds "
          "deadlocks") {
  const auto s = run_hanging_scenario(
      [](const notes& out) {
        static std::mutex arena; // the role of malloc's arena lock before the fix
        ::pthread_atfork([] { arena.lock(); }, [] { arena.unlock(); }, [] { arena.unlock(); });
        return fork_from_handler_while_holding([] { arena.lock(); }, [] { arena.unlock(); }, out);
      },
      1500ms);
  INFO("sandbox ", s.outcome.describe(), "; it noted: ", s.notes);
  CHECK(hang_caught(s.outcome));
}

// ---- malloc/tst-mallocfork2 ----------------------------------------------------

namespace {

enum phase { in_prepare, in_parent, in_child, nowhere };

// What the handlers of one entry did in this process (lock-free atomics:
// safe to read in a signal handler).
std::atomic<int> prepares{0}, parents{0}, childs{0};
// Where the next fork raises SIGUSR1 on its own thread (once), and what the
// handler's nested fork saw.
volatile sig_atomic_t raise_in = nowhere;
volatile sig_atomic_t nested_done = 0, nested_status = -1;
std::atomic<int> nested_prepares{-1}, nested_parents{-1};

void raise_if(phase p) {
  if (raise_in == p) {
    raise_in = nowhere;
    ::raise(SIGUSR1); // delivered before raise() returns: inside this fork
  }
}

// A fork from inside another fork on this thread. It must run no forksafe
// handler: its child exits 1 if a child handler ran there.
void nested_fork(int) {
  const int p = prepares, q = parents, c = childs;
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(childs == c ? 0 : 1);
  nested_status = pid < 0 ? -2 : wait_status(pid);
  nested_prepares = prepares - p;
  nested_parents = parents - q;
  nested_done = 1;
}

const char* const phase_names[] = {"prepare", "parent", "child"};

} // namespace

TEST_CASE("glibc tst-mallocfork2: a signal handler that forks while fork() runs on the same thread does not deadlock; "
          "the nested fork runs no handlers") {
  const auto s = run_scenario([](const notes& out) {
    int failures = 0;
    forksafe::fork_safe_mutex m; // a live quiesce lock: its registry entry takes part
    auto counter = atfork_registry::instance().add([] { ++prepares; }, [] { ++parents; }, [] { ++childs; });
    auto raiser = atfork_registry::instance().add([] { raise_if(in_prepare); }, [] { raise_if(in_parent); },
                                                  [] { raise_if(in_child); });
    install(SIGUSR1, nested_fork);
    for (phase where : {in_prepare, in_parent, in_child}) {
      const char* name = phase_names[where];
      nested_done = 0;
      nested_status = -1;
      nested_prepares = nested_parents = -1;
      const int before = prepares;
      raise_in = where;
      const pid_t pid = ::fork(); // plain, with signals open, like glibc's loop
      if (pid == 0) {
        if (where != in_child) ::_exit(0);
        const bool ok = nested_done == 1 && nested_status == 0 && nested_prepares == 0 && nested_parents == 0;
        if (!ok) {
          out.add("%s: in the child, nested fork done %d, status %d (0), prepares %d parents %d (0 0)\n", name,
                  static_cast<int>(nested_done), static_cast<int>(nested_status), nested_prepares.load(),
                  nested_parents.load());
        }
        ::_exit(ok ? 0 : 1);
      }
      const int status = pid < 0 ? -2 : wait_status(pid);
      if (status != 0) out.add("%s: the forked child ended with status %d (0)\n", name, status), ++failures;
      if (prepares - before != 1) out.add("%s: prepare ran %d times (1)\n", name, prepares - before), ++failures;
      if (where != in_child) {
        const bool ok = nested_done == 1 && nested_status == 0 && nested_prepares == 0 && nested_parents == 0;
        if (!ok) {
          out.add("%s: nested fork done %d, status %d (0), prepares %d parents %d (0 0)\n", name,
                  static_cast<int>(nested_done), static_cast<int>(nested_status), nested_prepares.load(),
                  nested_parents.load());
          ++failures;
        }
      }
    }
    return failures;
  });
  CHECK_SCENARIO_OK(s);
}

TEST_CASE(
    "glibc tst-mallocfork2, negative control: a lock held from prepare to parent deadlocks the handler's nested fork") {
  const auto s = run_hanging_scenario(
      [](const notes&) {
        static std::mutex held; // not recursive, held across the fork
        ::pthread_atfork(
            [] {
              held.lock();
              raise_if(in_prepare);
            },
            [] { held.unlock(); }, [] { held.unlock(); });
        install(SIGUSR1, nested_fork);
        raise_in = in_prepare;
        const pid_t pid = ::fork();
        if (pid == 0) ::_exit(0);
        return wait_status(pid) == 0 ? 0 : 1;
      },
      1500ms);
  INFO("sandbox ", s.outcome.describe());
  CHECK(hang_caught(s.outcome));
}

namespace {

// glibc's random half: sender processes signal the program while it forks,
// frees and mallocs, synchronised by a barrier so that the signals land
// inside those calls.
struct shared_barrier {
  pthread_barrier_t barrier;
};

volatile sig_atomic_t sigusr1_received = 0;
volatile sig_atomic_t handler_error = 0;

void count_and_fork(int) {
  sigusr1_received = 1;
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  if (pid < 0 || wait_status(pid) != 0) handler_error = 1;
}

// A sender outlives no sandbox: it dies with its parent (a sandbox killed
// at its deadline cannot reap it).
[[noreturn]] void send_forever(shared_barrier* shared, pid_t target) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != target) ::_exit(0); // the parent died before prctl
  for (;;) {
    ::pthread_barrier_wait(&shared->barrier);
    ::kill(target, SIGUSR1);
    ::pthread_barrier_wait(&shared->barrier);
  }
}

} // namespace

// glibc: 5 sender processes, 1009 objects of up to 70,000 bytes, 10,000
// iterations. Here: 2 senders, 101 objects, 200 iterations (a fork every
// 7th, as in glibc): the same mix, bounded by counts for a loaded machine.
TEST_CASE("glibc tst-mallocfork2: signals from other processes landing in fork, free and malloc, each handler forking: "
          "no deadlock") {
  const auto s = run_scenario([](const notes& out) {
    if (__libc_single_threaded == 0) {
      // glibc's own fork takes malloc's locks in a process that ever had a
      // second thread (a sanitizer's runtime may start one): a handler's
      // fork during malloc would deadlock in libc, whatever forksafe does.
      out.add("skipped: this process has had a second thread, so glibc's fork is not async-signal-safe here\n");
      return 0;
    }
    constexpr int senders = 2, objects = 101, max_size = 70000, iterations = 200;
    auto* shared = static_cast<shared_barrier*>(
        ::mmap(nullptr, sizeof(shared_barrier), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
    if (shared == MAP_FAILED) return 2;
    pthread_barrierattr_t attr;
    ::pthread_barrierattr_init(&attr);
    ::pthread_barrierattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    ::pthread_barrier_init(&shared->barrier, &attr, senders + 1);
    forksafe::fork_safe_mutex m; // a live quiesce lock: its registry entry takes part
    auto counter = atfork_registry::instance().add([] { ++prepares; }, [] { ++parents; }, [] { ++childs; });
    install(SIGUSR1, count_and_fork);
    pid_t sender_pids[senders];
    const pid_t self = ::getpid();
    for (pid_t& pid : sender_pids) {
      pid = ::fork();
      if (pid == 0) send_forever(shared, self);
    }
    void* slots[objects] = {};
    unsigned seed = 1;
    int fork_signals = 0, free_signals = 0, malloc_signals = 0, failures = 0;
    for (int i = 0; i < iterations && failures == 0; ++i) {
      const int slot = ::rand_r(&seed) % objects;
      const auto size = static_cast<std::size_t>(::rand_r(&seed) % max_size);
      const bool do_fork = ::rand_r(&seed) % 7 == 0;
      ::pthread_barrier_wait(&shared->barrier);
      if (do_fork) {
        sigusr1_received = 0;
        const pid_t pid = ::fork();
        if (sigusr1_received != 0) ++fork_signals;
        if (pid == 0) ::_exit(0);
        if (pid < 0 || wait_status(pid) != 0) out.add("iteration %d: the fork's child failed\n", i), ++failures;
      }
      sigusr1_received = 0;
      std::free(slots[slot]);
      if (sigusr1_received != 0) ++free_signals;
      sigusr1_received = 0;
      slots[slot] = std::malloc(size);
      if (sigusr1_received != 0) ++malloc_signals;
      ::pthread_barrier_wait(&shared->barrier);
      if (handler_error != 0) out.add("iteration %d: a handler's fork failed\n", i), ++failures;
    }
    ::signal(SIGUSR1, SIG_IGN);
    for (pid_t pid : sender_pids) {
      ::kill(pid, SIGKILL);
      (void)wait_status(pid);
    }
    for (void* p : slots) std::free(p);
    out.add("signals taken during fork: %d, free: %d, malloc: %d\n", fork_signals, free_signals, malloc_signals);
    return failures;
  });
  CHECK_SCENARIO_OK(s);
  MESSAGE(s.notes);
}

// ---- malloc/tst-mallocfork3 ----------------------------------------------------

namespace {

// glibc: 5 signal-sending threads and a barrier, 10,000 iterations; here 5
// threads and 200 iterations. The handler calls `fork_fn`: _Fork (the
// test), or fork (the negative control).
pid_t (*handler_fork)() = nullptr;
volatile sig_atomic_t mt_error = 0;
std::uint64_t generation_at_start = 0;

pid_t call_fork() { return ::fork(); }
pid_t call_underscore_fork() { return ::_Fork(); }

// A child of _Fork: fork_generation() did not move (no forksafe handler ran).
[[noreturn]] void leave_child() { raw_exit(forksafe::fork_generation() == generation_at_start ? 0 : 1); }

void fork_in_thread_handler(int) {
  const pid_t pid = handler_fork();
  if (pid == 0) leave_child();
  if (pid < 0 || wait_status(pid) != 0) mt_error = 1;
}

// Returns what the sandbox exits with. A thread holds a quiesce lock for the
// whole run: any fork() would wait for it; _Fork does not.
int fork_from_signalled_threads(pid_t (*fork_fn)(), const notes& out) {
  handler_fork = fork_fn;
  generation_at_start = forksafe::fork_generation();
  constexpr int senders = 5, objects = 101, max_size = 70000, iterations = 200;
  std::atomic<int> prepares_seen{0};
  auto counter = atfork_registry::instance().add([&] { prepares_seen.fetch_add(1); }, nullptr, nullptr);
  forksafe::fork_safe_mutex busy;
  std::atomic<bool> held{false}, done{false};
  std::thread holder([&] {
    std::lock_guard g(busy);
    held = true;
    while (!done) std::this_thread::sleep_for(1ms);
  });
  while (!held) std::this_thread::yield();
  install(SIGUSR1, fork_in_thread_handler);
  pthread_barrier_t barrier;
  ::pthread_barrier_init(&barrier, nullptr, senders + 1);
  const pthread_t self = ::pthread_self();
  std::vector<std::thread> threads;
  for (int t = 0; t < senders; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < iterations; ++i) {
        ::pthread_barrier_wait(&barrier);
        ::pthread_kill(self, SIGUSR1);
        ::pthread_barrier_wait(&barrier);
      }
    });
  }
  void* slots[objects] = {};
  unsigned seed = 1;
  int failures = 0;
  for (int i = 0; i < iterations; ++i) {
    const int slot = ::rand_r(&seed) % objects;
    const auto size = static_cast<std::size_t>(::rand_r(&seed) % max_size);
    const bool do_fork = ::rand_r(&seed) % 7 == 0;
    ::pthread_barrier_wait(&barrier);
    if (do_fork) {
      const pid_t pid = ::_Fork();
      if (pid == 0) leave_child();
      if (pid < 0 || wait_status(pid) != 0) ++failures;
    }
    std::free(slots[slot]);
    slots[slot] = std::malloc(size);
    ::pthread_barrier_wait(&barrier);
  }
  for (auto& t : threads) t.join();
  ::signal(SIGUSR1, SIG_IGN);
  done = true;
  holder.join();
  for (void* p : slots) std::free(p);
  if (failures != 0 || mt_error != 0)
    out.add("a _Fork child failed: main loop %d, handlers %d\n", failures, static_cast<int>(mt_error));
  if (prepares_seen != 0)
    out.add("forksafe's prepare ran %d times (0: _Fork runs no handlers)\n", prepares_seen.load());
  return failures != 0 || mt_error != 0 || prepares_seen != 0 ? 1 : 0;
}

} // namespace

TEST_CASE("glibc tst-mallocfork3: _Fork in signal handlers of a multithreaded process runs no forksafe handler and "
          "never waits for a quiesce lock") {
  const auto s =
      run_scenario([](const notes& out) { return fork_from_signalled_threads(call_underscore_fork, out); }, 30s);
  CHECK_SCENARIO_OK(s);
}

TEST_CASE("glibc tst-mallocfork3, negative control: fork() in place of _Fork waits for the quiesce lock a thread "
          "holds, for ever") {
  const auto s =
      run_hanging_scenario([](const notes& out) { return fork_from_signalled_threads(call_fork, out); }, 1500ms);
  INFO("sandbox ", s.outcome.describe(), "; it noted: ", s.notes);
  CHECK(hang_caught(s.outcome));
}
