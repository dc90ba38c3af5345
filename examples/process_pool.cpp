// SPDX-License-Identifier: MIT
//
// process_pool: tasks run in worker processes forked once, when the pool
// starts; submit() returns the same process_result as fork_call. A task that
// throws fails alone, as a child_error carrying its message; its worker lives
// on and every other task returns its value. (nested_pool.cpp is a pool of
// thread pools: each task runs an inner thread pool and returns plain values.)
// Exits 0 when every value came back and the throwing task was reported.

#include <forksafe/child_error.hpp>    // child_error: how a task ended without a value
#include <forksafe/process_pool.hpp>   // process_pool, pool_options
#include <forksafe/process_result.hpp> // process_result: the handle submit() returns

#include <chrono>    // the task timeout
#include <cstdio>    // std::printf
#include <stdexcept> // std::domain_error: what the failing task throws
#include <vector>    // the tasks' handles

namespace {

// Runs in a worker: a plain argument in, a plain value out.
long square(int x) {
  if (x == 5) throw std::domain_error("5 is not welcome here");
  return long{x} * x;
}

} // namespace

int main() {
  using namespace std::chrono_literals;
  forksafe::process_pool pool(2, {.task_timeout = 10s}); // a task past 10 s: its worker is killed, replaced
  std::vector<forksafe::process_result<long>> tasks;
  for (int x = 1; x <= 8; ++x) tasks.push_back(pool.submit(square, x));

  long sum = 0;
  int x = 0, values = 0, threw = 0;
  for (auto& task : tasks) {
    ++x;
    try {
      const long v = task.get();
      std::printf("square(%d) = %ld\n", x, v);
      sum += v;
      ++values;
    } catch (const forksafe::child_error& e) {
      std::printf("square(%d) threw: %s\n", x, e.exception_what().c_str());
      threw += e.threw() ? 1 : 0;
    }
  }
  std::printf("%zu workers ran 8 tasks: %d values (sum %ld), %d threw\n", pool.size(), values, sum, threw);
  return values == 7 && sum == 204 - 25 && threw == 1 ? 0 : 1;
}
