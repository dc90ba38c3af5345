// SPDX-License-Identifier: MIT
//
// The demo (the README's first command): the fork-while-locked deadlock
// shown and caught, then each forksafe component preventing it. It uses
// forksafe's public API only: every child below is a fork_call with a
// timeout, so a child that deadlocks is killed and reported, not waited for.

#include <forksafe/forksafe.hpp>

#include <array>  // plain results
#include <atomic> // stop flags
#include <chrono> // holds, pauses, timeouts
#include <cstdio> // std::printf
#include <future> // a child's inner thread pool
#include <mutex>  // std::mutex: the lock held at fork
#include <random> // the fork's phase against the holder
#include <string> // reports
#include <thread> // the lock-holding threads
#include <vector> // children in flight

namespace {

using namespace std::chrono_literals;

constexpr int forks = 40;

/// What became of the children of one run of the fork-while-locked program.
struct tally {
  int finished = 0; ///< returned 0: locked, unlocked, exited
  int stuck = 0;    ///< still running at their timeout: killed
  int poisoned = 0; ///< saw fork_poisoned (the poison policy)
  int other = 0;    ///< anything else
};

/// The fork-while-locked program over any mutex: a thread loops lock; sleep
/// 2 ms; unlock; the main thread forks `forks` children a random pause
/// apart. Each child runs `child` (lock, unlock, return 0) with 1 s to do it.
template <class Mutex, class Child>
tally fork_while_locked(Mutex& m, Child child) {
  std::atomic<bool> stop{false};
  std::thread holder([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      m.lock();
      std::this_thread::sleep_for(2ms);
      m.unlock();
      std::this_thread::sleep_for(50us);
    }
  });
  std::vector<forksafe::process_result<int>> children;
  std::minstd_rand rng(12345);
  std::uniform_int_distribution<int> pause_us(0, 500);
  for (int i = 0; i < forks; ++i) {
    std::this_thread::sleep_for(std::chrono::microseconds(pause_us(rng)));
    children.push_back(forksafe::fork_call({.timeout = 1s}, child));
  }
  stop = true;
  holder.join();
  tally t;
  for (auto& c : children) {
    try {
      const int code = c.get();
      (code == 0 ? t.finished : code == 3 ? t.poisoned : t.other) += 1;
    } catch (const forksafe::child_error& e) {
      (e.timed_out() ? t.stuck : t.other) += 1;
    }
  }
  return t;
}

template <class Mutex>
tally fork_while_locked(Mutex& m) {
  return fork_while_locked(m, [&m] {
    m.lock();
    m.unlock();
    return 0;
  });
}

void show(const char* label, const tally& t, const std::string& note = "") {
  std::printf("  %-34s %3d forks: %3d finished, %3d stuck%s\n", label, forks, t.finished, t.stuck, note.c_str());
}

template <class Mutex>
void run_policy(const char* label) {
  Mutex m;
  show(label, fork_while_locked(m));
}

// Two libraries each protect their own lock with fork handlers, registered A
// then B (so prepare runs B's first), while a thread takes A, pauses, then
// takes B. With blocking handlers (pthread_atfork's way) the fork deadlocks;
// guard() takes the locks with std::lock's algorithm. The whole program runs
// in a child with 3 s to finish, so a deadlock is reported, not suffered.
std::string two_libraries(bool guarded, int forks_to_do) {
  auto sandbox = forksafe::fork_call({.timeout = 3s}, [guarded, forks_to_do] {
    std::mutex a, b;
    auto& registry = forksafe::atfork_registry::instance();
    forksafe::atfork_handle ha, hb;
    if (guarded) {
      ha = registry.guard(a, "library A");
      hb = registry.guard(b, "library B");
    } else {
      auto unlock_a = [&] { a.unlock(); };
      auto unlock_b = [&] { b.unlock(); };
      ha = registry.add([&] { a.lock(); }, unlock_a, unlock_a);
      hb = registry.add(
          [&] {
            b.lock();
            std::this_thread::sleep_for(50us);
          },
          unlock_b, unlock_b);
    }
    std::atomic<bool> stop{false};
    std::thread t([&] {
      while (!stop) {
        {
          std::lock_guard la(a);
          std::this_thread::sleep_for(20us);
          std::lock_guard lb(b); // holds A, wants B
        }
        std::this_thread::sleep_for(20us);
      }
    });
    int both_free = 0;
    for (int i = 0; i < forks_to_do; ++i) {
      both_free += forksafe::fork_call([&] { return a.try_lock() && b.try_lock() ? 1 : 0; }).get();
    }
    stop = true;
    t.join();
    return both_free;
  });
  try {
    return std::to_string(sandbox.get()) + " of " + std::to_string(forks_to_do) + " children found both locks free";
  } catch (const forksafe::child_error& e) {
    return e.timed_out() ? std::string("deadlocked: killed at its 3 s timeout") : e.what();
  }
}

/// Crashes with SIGSEGV (a null load, exempt from UBSan, which would report it first).
#if defined(__clang__) || defined(__GNUC__)
__attribute__((no_sanitize("undefined")))
#endif
int crash() {
  volatile int* volatile p = nullptr;
  return *p;
}

} // namespace

int main() {
  std::printf("forksafe demo\n\n");
  std::printf("1. The fork-while-locked deadlock. A thread loops: lock; sleep 2 ms; unlock. The main thread\n"
              "   forks; each child locks, unlocks and exits. Children get 1 s, then are killed.\n\n");
  std::mutex plain;
  const tally r = fork_while_locked(plain);
  show("std::mutex", r, " (killed at the timeout)");
  std::printf("\n   %s\n\n",
              r.stuck > 0 ? "Caught: a child forked while the thread held the mutex inherits it locked, and the\n"
                            "   only thread that could unlock it does not exist in the child. It waits forever."
                          : "No child was caught this time (the fork never hit the held window); run again.");

  std::printf("2. The same program with forksafe's mutexes; the policy decides what a child sees.\n\n");
  run_policy<forksafe::fork_safe_mutex>("fork_safe_mutex (quiesce)");
  run_policy<forksafe::basic_fork_safe_mutex<forksafe::fork_policy::reset>>("fork_safe_mutex (reset)");
  {
    forksafe::basic_fork_safe_mutex<forksafe::fork_policy::poison> m;
    const tally p = fork_while_locked(m, [&m] {
      try {
        m.lock();
      } catch (const forksafe::fork_poisoned&) {
        return 3;
      }
      m.unlock();
      return 0;
    });
    show("fork_safe_mutex (poison)", p, "; " + std::to_string(p.poisoned) + " saw fork_poisoned");
  }
  run_policy<forksafe::fork_safe_shared_mutex>("fork_safe_shared_mutex (quiesce)");
  std::printf("\n   quiesce: fork() waits until no critical section runs; the child finds the lock free\n"
              "   and the data whole. reset: the child finds it free, the data possibly mid-update.\n"
              "   poison: the child's lock() throws fork_poisoned until it calls clear_poison().\n\n");

  std::printf("3. atfork_registry: two libraries each guard their own lock with fork handlers, while a\n"
              "   thread takes A then B. 200 forks; the whole program gets 3 s.\n\n");
  std::printf("  %-34s %s\n", "blocking prepare (pthread_atfork)", two_libraries(false, 200).c_str());
  std::printf("  %-34s %s\n", "guard() (atfork_registry)", two_libraries(true, 200).c_str());
  std::printf("\n   pthread_atfork runs prepare handlers in a fixed order: B, then A, against a thread\n"
              "   holding A and wanting B. guard() takes the locks as std::lock does: on a refusal it\n"
              "   gives back what it holds, waits for the refuser alone, then tries the rest, so\n"
              "   handlers written apart cannot deadlock.\n\n");

  std::printf("4. fork_call: run a callable in a forked child and get its value back. A Python program\n"
              "   that returned futures from a process task failed at run time\n"
              "   (\"can't pickle _thread.RLock objects\"). In forksafe that is a compile error:\n\n"
              "     fork_call([] { std::vector<std::future<int>> f; ...; return f; });\n"
              "     error: ... 'std::vector<std::future<int>>' does not satisfy 'trivially_serializable'\n"
              "     (tests/compile_fail/fork_call_returns_futures.cpp)\n\n"
              "   The fix: return the plain values.\n\n");
  auto values = forksafe::fork_call([] {
    std::array<std::future<int>, 3> inner;
    for (int i = 0; i < 3; ++i)
      inner[static_cast<std::size_t>(i)] = std::async(std::launch::async, [i] { return i * i; });
    std::array<int, 3> squares{};
    for (int i = 0; i < 3; ++i) squares[static_cast<std::size_t>(i)] = inner[static_cast<std::size_t>(i)].get();
    return squares;
  });
  for (int v : values.get()) std::printf("     result = %d\n", v);
  try {
    (void)forksafe::fork_call(crash).get();
  } catch (const forksafe::child_error& e) {
    std::printf("\n   A child that crashes is an exception naming the cause: %s\n\n", e.what());
  }

  std::printf("5. process_pool: pre-forked workers. 40 tasks, one of which crashes its worker:\n\n");
  {
    forksafe::process_pool pool(2);
    std::vector<forksafe::process_result<int>> tasks;
    for (int i = 0; i < 40; ++i) {
      tasks.push_back(i == 17 ? pool.submit(crash) : pool.submit([](int x) { return x * x; }, i));
    }
    int ok = 0;
    for (auto& t : tasks) {
      try {
        ok += t.get() >= 0 ? 1 : 0;
      } catch (const forksafe::child_error& e) {
        std::printf("   task 17: %s\n", e.what());
      }
    }
    std::printf("   the other %d tasks returned their values; the worker was replaced.\n"
                "   (Python's ProcessPoolExecutor fails every pending task with BrokenProcessPool.)\n\n",
                ok);
  }
  return 0;
}
