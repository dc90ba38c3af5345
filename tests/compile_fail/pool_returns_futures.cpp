// SPDX-License-Identifier: MIT
// The seed's mistake with process_pool: a process task that returns its
// inner futures. Must be rejected with a diagnostic naming the concept.
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
