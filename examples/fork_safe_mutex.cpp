// SPDX-License-Identifier: MIT
//
// fork_safe_mutex: a forked child never hangs on a lock another thread held.
//
// quiesce (the default): a thread updates two counters under the mutex, with
// no pause, while this thread forks; fork() waits until no critical section
// runs, so every child locks the mutex and finds the counters equal.
// poison, and fork_safe_condition_variable: a thread holds a poison-policy
// mutex and waits on a condition variable while this thread forks. The
// child's lock() throws fork_poisoned until the child calls clear_poison();
// the child notifies the condition variable and waits on it (timing out)
// without hanging on the waiter that vanished; in the parent the waiter
// wakes and the mutex locks as usual. Exits 0 when all of that happened.

#include <forksafe/fork_call.hpp>                    // fork_call: fork, run in the child, report
#include <forksafe/fork_safe_condition_variable.hpp> // fork_safe_condition_variable
#include <forksafe/fork_safe_mutex.hpp>              // fork_safe_mutex, basic_fork_safe_mutex, fork_poisoned

#include <atomic> // flags between the threads
#include <chrono> // timeouts
#include <cstdio> // std::printf
#include <mutex>  // std::lock_guard, std::unique_lock
#include <thread> // the other thread

#include <unistd.h> // alarm: the watchdog

using namespace std::chrono_literals;

namespace {

// Returns how many of `forks` children found the counters equal.
int quiesce(int forks) {
  forksafe::fork_safe_mutex m;
  long a = 0, b = 0; // guarded by m; equal whenever nobody holds m
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    while (!stop) {
      std::lock_guard g(m);
      ++a;
      std::this_thread::yield(); // a fork here, with std::mutex: the child hangs on m, or sees a != b
      ++b;
    }
  });
  int equal = 0;
  for (int i = 0; i < forks; ++i) {
    equal += forksafe::fork_call({.timeout = 10s}, [&] {
               std::lock_guard g(m);
               return a == b;
             }).get();
  }
  stop = true;
  writer.join();
  return equal;
}

// Returns whether the child saw the poison, repaired it, locked, and came back from its wait.
bool poison_and_condition() {
  forksafe::basic_fork_safe_mutex<forksafe::fork_policy::poison> p;
  forksafe::fork_safe_mutex m;
  forksafe::fork_safe_condition_variable cv;
  bool go = false; // guarded by m
  std::atomic<bool> waiting{false};
  std::thread holder([&] {
    std::lock_guard held(p); // held across the fork
    std::unique_lock lock(m);
    waiting = true;
    cv.wait(lock, [&] { return go; }); // waits across the fork
  });
  while (!waiting) std::this_thread::sleep_for(1ms);
  const bool child_ok =
      forksafe::fork_call({.timeout = 10s}, [&] {
        try {
          std::lock_guard g(p);
          return false; // not reached: the holder did not survive the fork
        } catch (const forksafe::fork_poisoned& e) {
          std::printf("poison:    the child's lock() threw fork_poisoned (%s)\n", e.code().message().c_str());
        }
        p.clear_poison(); // the child declares the guarded data repaired
        std::lock_guard g(p);
        std::unique_lock lock(m);
        cv.notify_all();                                     // its waiter vanished with the fork: nobody to wake
        return !cv.wait_for(lock, 10ms, [&] { return go; }); // nobody sets go here: times out
      }).get();
  {
    std::lock_guard g(m);
    go = true;
  }
  cv.notify_all();
  holder.join();
  std::lock_guard g(p); // the parent never saw a poisoned lock
  std::printf("poison:    after clear_poison() the child locked it; the parent locks it as usual\n"
              "condition: the child notified it and waited 10 ms on it; the parent's waiter woke\n");
  return child_ok;
}

} // namespace

int main() {
  alarm(60); // watchdog: a fork or a lock that hung would end the program (SIGALRM), not hang it
  constexpr int forks = 50;
  const int equal = quiesce(forks);
  std::printf("quiesce:   %d forks while a thread updates two counters under the mutex: "
              "%d children locked it and found them equal\n",
              forks, equal);
  return equal == forks && poison_and_condition() ? 0 : 1;
}
