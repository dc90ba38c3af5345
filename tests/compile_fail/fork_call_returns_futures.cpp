// SPDX-License-Identifier: MIT
// A process task that returns futures, in C++. Python's
// ProcessPoolExecutor accepts it and fails at run time ("can't pickle
// _thread.RLock objects"); fork_call rejects it at compile time, and the
// compile-fail check requires the diagnostic to name the concept a user
// must satisfy: forksafe::trivially_serializable.
#include <forksafe/process_result.hpp>

#include <future> // std::future, std::async: what the task returns
#include <vector> // std::vector

int main() {
  auto result = forksafe::fork_call([] {
    std::vector<std::future<int>> futures;
    futures.push_back(std::async(std::launch::deferred, [] { return 1; }));
    return futures;
  });
  return static_cast<int>(result.get().size());
}
