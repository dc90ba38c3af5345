// SPDX-License-Identifier: MIT
//
// The demo (the README's first command): the seed's deadlock shown and
// caught, then each forksafe component preventing it.

#include <forksafe/forksafe.hpp>

#include "seed_program.hpp"

#include <array>  // plain results
#include <atomic> // stop flag
#include <future> // the seed's inner thread pool
#include <cstdio> // std::printf
#include <mutex>  // std::mutex: the seed's bug
#include <vector> // pool handles
#include <thread> // the lock-order thread

namespace {

constexpr int forks = 40;

void show(const char* label, const forksafe_test::seed_report& r, const char* note = "") {
  std::printf("  %-34s %3d forks: %3d finished, %3d stuck%s\n", label, r.forks, r.exited(0), r.stuck, note);
}

// Two libraries each protect their own lock with fork handlers, registered A
// then B (so prepare runs B's first), while a thread takes A then B. With
// blocking handlers (pthread_atfork's way) the fork deadlocks; with try-lock
// handlers the registry backs out and retries. Runs in a child with a
// deadline so a deadlock is reported, not suffered.
forksafe::detail::child_status two_libraries(bool try_lock, int forks_to_do) {
  using forksafe::detail::child_process;
  auto sandbox = child_process::spawn([try_lock, forks_to_do] {
    std::mutex a, b;
    auto& registry = forksafe::atfork_registry::instance();
    auto unlock_a = [&] { a.unlock(); };
    auto unlock_b = [&] { b.unlock(); };
    forksafe::atfork_handle ha, hb;
    if (try_lock) {
      ha = registry.add([&] { return a.try_lock(); }, unlock_a, unlock_a);
      hb = registry.add([&] { return b.try_lock(); }, unlock_b, unlock_b);
    } else {
      ha = registry.add([&] { a.lock(); }, unlock_a, unlock_a);
      hb = registry.add([&] { b.lock(); std::this_thread::sleep_for(std::chrono::microseconds(50)); },
                        unlock_b, unlock_b);
    }
    std::atomic<bool> stop{false};
    std::thread t([&] {
      while (!stop) {
        {
          std::lock_guard la(a);
          std::this_thread::sleep_for(std::chrono::microseconds(20));
          std::lock_guard lb(b); // holds A, wants B
        }
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
    });
    int ok = 0;
    for (int i = 0; i < forks_to_do; ++i) {
      auto c = child_process::spawn([&] { return a.try_lock() && b.try_lock() ? 0 : 1; });
      ok += c.wait().exited_with(0) ? 1 : 0;
    }
    stop = true;
    t.join();
    return ok == forks_to_do ? 0 : 1;
  });
  const auto& s = sandbox.wait_until(std::chrono::steady_clock::now() + std::chrono::seconds(3));
  return s.ended() ? s : sandbox.kill_and_reap();
}

template <class Mutex>
void run_policy(const char* label) {
  Mutex m;
  show(label, forksafe_test::run_seed_program(m, forks));
}

} // namespace

int main() {
  std::printf("forksafe demo\n\n");
  std::printf("1. The seed's deadlock. A thread loops: lock; sleep 2 ms; unlock. The main thread\n"
              "   forks; each child locks, unlocks and exits. Children get 1 s, then are killed.\n\n");
  std::mutex plain;
  const auto r = forksafe_test::run_seed_program(plain, forks);
  show("std::mutex", r, " (killed at the deadline)");
  std::printf("\n   %s\n\n",
              r.stuck > 0 ? "Caught: a child forked while the thread held the mutex inherits it locked, and the\n"
                            "   only thread that could unlock it does not exist in the child. It waits forever."
                          : "No child was caught this time (the fork never hit the held window); run again.");

  std::printf("2. The same program with forksafe's mutexes; the policy decides what a child sees.\n\n");
  run_policy<forksafe::fork_safe_mutex>("fork_safe_mutex (quiesce)");
  run_policy<forksafe::basic_fork_safe_mutex<forksafe::fork_policy::reset>>("fork_safe_mutex (reset)");
  {
    forksafe::basic_fork_safe_mutex<forksafe::fork_policy::poison> m;
    const auto p = forksafe_test::run_seed_program(m, forks, forksafe_test::lock_or_report_poison(m));
    char note[96];
    std::snprintf(note, sizeof note, "; %d saw fork_poisoned", p.exited(3));
    show("fork_safe_mutex (poison)", p, note);
  }
  run_policy<forksafe::fork_safe_shared_mutex>("fork_safe_shared_mutex (quiesce)");
  std::printf("\n   quiesce: fork() waits until no critical section runs; the child finds the lock free\n"
              "   and the data whole. reset: the child finds it free, the data possibly mid-update.\n"
              "   poison: the child's lock() throws fork_poisoned until it calls clear_poison().\n\n");

  std::printf("3. atfork_registry: two libraries each guard their own lock with fork handlers, while a\n"
              "   thread takes A then B. 200 forks; the whole program gets 3 s.\n\n");
  std::printf("  %-34s %s\n", "blocking prepare (pthread_atfork)", two_libraries(false, 200).describe().c_str());
  std::printf("  %-34s %s\n", "try_lock prepare (atfork_registry)", two_libraries(true, 200).describe().c_str());
  std::printf("\n   pthread_atfork runs prepare handlers in a fixed order: B, then A, against a thread\n"
              "   holding A and wanting B. The registry lets a prepare say \"not now\": it undoes the\n"
              "   pass, backs off and retries, so handlers written apart cannot deadlock.\n\n");
  std::printf("4. fork_call: run a callable in a forked child and get its value back. The seed's second\n"
              "   program returned futures from a process task and failed at run time in Python\n"
              "   (\"can't pickle _thread.RLock objects\"). In forksafe that is a compile error:\n\n"
              "     fork_call([] { std::vector<std::future<int>> f; ...; return f; });\n"
              "     error: ... 'std::vector<std::future<int>>' does not satisfy 'trivially_serializable'\n"
              "     (tests/compile_fail/fork_call_returns_futures.cpp)\n\n"
              "   The fix is the seed's own, return the plain values:\n\n");
  auto values = forksafe::fork_call([] {
    std::array<std::future<int>, 3> inner;
    for (int i = 0; i < 3; ++i) inner[static_cast<std::size_t>(i)] = std::async(std::launch::async, [i] { return i * i; });
    std::array<int, 3> plain{};
    for (int i = 0; i < 3; ++i) plain[static_cast<std::size_t>(i)] = inner[static_cast<std::size_t>(i)].get();
    return plain;
  });
  for (int v : values.get()) std::printf("     result = %d\n", v);
  try {
    (void)forksafe::fork_call([] { return forksafe_test::load_through_null(); }).get();
  } catch (const forksafe::child_error& e) {
    std::printf("\n   A child that crashes is an exception naming the cause: %s\n\n", e.what());
  }

  std::printf("5. process_pool: pre-forked workers. 40 tasks, one of which crashes its worker:\n\n");
  {
    forksafe::process_pool pool(2);
    std::vector<forksafe::process_result<int>> tasks;
    for (int i = 0; i < 40; ++i) {
      tasks.push_back(i == 17 ? pool.submit([] { return forksafe_test::load_through_null(); })
                              : pool.submit([](int x) { return x * x; }, i));
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
