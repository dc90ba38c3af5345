// SPDX-License-Identifier: MIT
// A program for test_fork_liveness: a thread holds a guarded lock named
// "probe lock" until the main thread is seen waiting in fork() for it, then
// 100 ms more, while the main thread forks once. FORKSAFE_SLOW_FORK_MS and
// FORKSAFE_PREPARE_TIMEOUT_MS are read when the registry is made, at start,
// so the test sets them in this program's environment.
#include <forksafe/atfork_registry.hpp>

#include <atomic>  // holding
#include <chrono>  // the extra hold
#include <cstdio>  // std::fclose
#include <cstdlib> // std::atoi
#include <mutex>   // the guarded lock
#include <thread>  // the holder

#include <sys/syscall.h> // SYS_gettid
#include <sys/wait.h>    // waitpid
#include <unistd.h>      // fork

namespace {
bool asleep(pid_t tid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%d/stat", static_cast<int>(tid));
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return false;
  char buf[512] = {};
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  const char* close = nullptr;
  for (std::size_t i = 0; i < n; ++i) {
    if (buf[i] == ')') close = buf + i;
  }
  return close != nullptr && (close[2] == 'S' || close[2] == 'D');
}
} // namespace

int main() {
  std::mutex m;
  auto g = forksafe::atfork_registry::instance().guard(m, "probe lock");
  const auto forker = static_cast<pid_t>(::syscall(SYS_gettid));
  std::atomic<bool> holding{false};
  std::thread holder([&] {
    std::lock_guard l(m);
    holding = true;
    while (!asleep(forker)) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  });
  while (!holding) std::this_thread::yield();
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  holder.join();
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
