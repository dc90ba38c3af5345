// SPDX-License-Identifier: MIT
// A process_pool task that returns its inner futures, which Python reports
// at run time as "can't pickle _thread.RLock objects". Must be rejected
// with a diagnostic naming the concept.
#include <forksafe/process_pool.hpp>

#include <future>
#include <vector>

int main() {
  forksafe::process_pool pool(1);
  auto r = pool.submit([] {
    std::vector<std::future<int>> inner;
    inner.push_back(std::async([] { return 1; }));
    return inner;
  });
  (void)r;
}
